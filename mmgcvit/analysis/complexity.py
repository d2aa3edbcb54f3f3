"""What the analysis tools share, in one place: the ``--shape H W`` format,
loading a config, building its model, quieting mmengine's logger, and
counting FLOPs with mmengine's ``get_model_complexity_info``.

FLOPs follow mmengine's (fvcore's) convention, the unit of the GC ViT, Swin
and OpenMMLab tables: one FLOP is one multiply-add.
"""
import importlib
import logging
import os.path as osp
from contextlib import contextmanager

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import BaseDataElement
from torch import nn


def parse_shape(values):
    """``(H, W)`` from ``[S]`` (square) or ``[H, W]``, as mmdet's
    ``get_flops.py --shape`` takes it."""
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
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_model(cfg, model_cfg=None):
    """``model_cfg`` (default: ``cfg.model``) from the registry of the
    config's ``default_scope``, SyncBN as BatchNorm so that it runs in one
    process. Randomly initialised: building loads no pretrained weights
    (``init_weights`` does)."""
    scope = cfg.get('default_scope')
    if not scope:
        raise ValueError(
            'The config has no default_scope: add default_scope = '
            "'mmdet' (or 'mmseg') to it, as OpenMMLab configs have.")
    init_default_scope(scope)
    models = importlib.import_module(f'{scope}.registry').MODELS
    return revert_sync_batchnorm(models.build(model_cfg or cfg.model))


@contextmanager
def quiet_logger(level=logging.ERROR):
    """Raise mmengine's logger to ``level`` for a block: the FLOP counter
    warns about every op it skips, ``init_weights`` and ``paramwise_cfg``
    log a line per parameter; they would bury the report."""
    logger = MMLogger.get_current_instance()
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextmanager
def explicit_attention(model):
    """mmengine's counter has no handle for ``scaled_dot_product_attention``
    and would count attention as 0 FLOPs: attention modules with an
    explicit softmax(q k^T) v path (a ``fused_attn`` flag, as GCViT's and
    timm's) take it for the block. The maths is the same."""
    modules = [m for m in model.modules()
               if isinstance(getattr(m, 'fused_attn', None), bool)]
    flags = [m.fused_attn for m in modules]
    for module in modules:
        module.fused_attn = False
    try:
        yield
    finally:
        for module, flag in zip(modules, flags):
            module.fused_attn = flag


def count_flops(model, *inputs, show_table=False):
    """mmengine's ``get_model_complexity_info`` of ``model(*inputs)``:
    ``dict(flops=multiply-adds, params=..., out_table=...)``."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), quiet_logger(), explicit_attention(model):
            return get_model_complexity_info(model, inputs=inputs,
                                             show_table=show_table,
                                             show_arch=False)
    finally:
        model.train(training)


class _TensorForward(nn.Module):
    """``model(inputs, data_samples, mode='tensor')``: the counter calls
    ``module(*inputs)``, and data samples are not tensors."""

    def __init__(self, model, data_samples):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs):
        return self.model(inputs, self.data_samples, mode='tensor')


def model_complexity(cfg, shape, show_table=False):
    """FLOPs and parameters of ``cfg.model`` on one random ``(H, W)`` RGB
    image after the config's data preprocessor (normalise, pad), through
    the ``mode='tensor'`` forward: backbone, neck and heads without
    post-processing. Two-stage detectors run their RoI heads on the RPN's
    proposals, so their count depends on the untrained model's proposals.

    Returns ``count_flops``'s dict plus ``input_shape``, the (H, W) the
    model sees after padding.
    """
    height, width = parse_shape(shape)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    meta = dict(ori_shape=(height, width), img_shape=(height, width),
                scale_factor=(1., 1.))
    batch = dict(inputs=[torch.rand(3, height, width) * 255],
                 data_samples=[BaseDataElement(metainfo=meta)])
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
    info = count_flops(_TensorForward(model, data['data_samples']),
                       data['inputs'], show_table=show_table)
    return dict(info, input_shape=tuple(data['inputs'].shape[-2:]))
