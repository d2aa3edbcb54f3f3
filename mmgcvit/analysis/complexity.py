"""Configs, models and FLOPs for the analysis tools. FLOPs are mmengine's
count, in multiply-adds, the unit of the GC ViT, Swin and OpenMMLab tables."""
import importlib
import os.path as osp

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import BaseDataElement


def parse_shape(values):
    """``(H, W)`` from ``[S]`` or ``[H, W]``, as mmdet's ``--shape``."""
    shape = tuple(int(v) for v in values)
    shape = shape * 2 if len(shape) == 1 else shape
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(
            f'--shape {" ".join(map(str, values))}: give the input size as '
            'H W (e.g. --shape 800 1216) or one side S for S x S.')
    return shape


def load_config(path, cfg_options=None):
    """A config file, or a package's config (``mmdet::swin/...py``)."""
    if '::' not in path and not osp.isfile(path):
        raise FileNotFoundError(f'config {path!r} not found: run from the '
                                'repository root or fix the path.')
    cfg = get_config(path) if '::' in path else Config.fromfile(path)
    cfg.merge_from_dict(cfg_options or {})
    return cfg


def build_model(cfg, model_cfg=None):
    """``model_cfg`` (default: ``cfg.model``), randomly initialised, from
    the ``default_scope``'s registry; SyncBN as BatchNorm (one process)."""
    scope = cfg.get('default_scope')
    if not scope:
        raise ValueError(
            'The config has no default_scope: add default_scope = '
            "'mmdet' (or 'mmseg') to it, as OpenMMLab configs have.")
    init_default_scope(scope)
    models = importlib.import_module(f'{scope}.registry').MODELS
    return revert_sync_batchnorm(models.build(model_cfg or cfg.model))


def count_flops(model, *inputs):
    """``(multiply-adds, parameters)`` of ``model(*inputs)`` in eval mode.
    The counter has no handle for ``scaled_dot_product_attention`` (it
    would count 0): modules with an explicit softmax(q k^T) v path (a
    ``fused_attn`` flag, as GCViT's and timm's) take it meanwhile."""
    flags = {m: m.fused_attn for m in model.modules()
             if isinstance(getattr(m, 'fused_attn', None), bool)}
    training = model.training
    model.eval()
    try:
        for module in flags:
            module.fused_attn = False
        with torch.no_grad():
            flops = FlopAnalyzer(model, inputs).unsupported_ops_warnings(
                False).uncalled_modules_warnings(False).total()
    finally:
        model.train(training)
        for module, flag in flags.items():
            module.fused_attn = flag
    return flops, parameter_count(model)['']


class _TensorForward(torch.nn.Module):
    """The counter calls ``module(*tensors)``: data samples are not."""

    def __init__(self, model, data_samples):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs):
        return self.model(inputs, self.data_samples, mode='tensor')


def model_complexity(cfg, shape):
    """``(flops, params, padded (H, W))`` of ``cfg.model``'s ``'tensor'``
    forward (no post-processing) on a random image of ``shape`` after the
    data preprocessor; RoI heads see the untrained RPN's proposals."""
    height, width = parse_shape(shape)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    meta = dict(ori_shape=(height, width), img_shape=(height, width),
                scale_factor=(1., 1.))
    batch = dict(inputs=[torch.rand(3, height, width) * 255],
                 data_samples=[BaseDataElement(metainfo=meta)])
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
    flops, params = count_flops(_TensorForward(model, data['data_samples']),
                                data['inputs'])
    return flops, params, tuple(data['inputs'].shape[-2:])
