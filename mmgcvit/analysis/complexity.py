"""FLOPs and parameters of an mmdet / mmseg (any OpenMMLab 2.x) model built
from its config, with mmengine's ``get_model_complexity_info``.

The count follows mmengine's (fvcore's) convention: one FLOP is one
multiply-add, the unit of the FLOPs in the GC ViT, Swin and OpenMMLab
tables. It is taken on the model's ``mode='tensor'`` forward of one random
image after the config's data preprocessor (normalise, pad): backbone, neck
and heads without post-processing. Two-stage detectors run their RoI heads
on the RPN's proposals (at most ``test_cfg.rpn.max_per_img``), so their
count depends on the proposals of the untrained model.
"""
import importlib
import logging
from contextlib import contextmanager

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import BaseDataElement
from torch import nn


def parse_shape(shape):
    """``(H, W)`` from ``[S]`` (square) or ``[H, W]``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        shape = shape * 2
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(
            f'--shape {" ".join(map(str, shape))}: give the input size as '
            'H W (e.g. --shape 1280 800) or one side S for S x S.')
    return shape


class _TensorForward(nn.Module):
    """Calls ``model(inputs, data_samples, mode='tensor')``: the counter
    traces ``module(*inputs)``, and data samples are not tensors."""

    def __init__(self, model, data_samples):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs):
        return self.model(inputs, self.data_samples, mode='tensor')


def _use_explicit_attention(model):
    """mmengine's counter has no handle for ``scaled_dot_product_attention``
    and would count attention as 0 FLOPs; attention modules that offer an
    explicit softmax(q k^T) v path (a ``fused_attn`` flag, as GCViT's and
    timm's) take it while counting. The maths is the same."""
    for module in model.modules():
        if isinstance(getattr(module, 'fused_attn', None), bool):
            module.fused_attn = False


@contextmanager
def _quiet_mmengine_logger():
    """The counter logs a warning per op it skips (adds, activations...);
    they would bury the report."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_model(cfg):
    """Build ``cfg.model`` in the config's ``default_scope`` registry
    (``mmdet``, ``mmseg``...), without loading pretrained weights."""
    scope = cfg.get('default_scope')
    if not scope:
        raise ValueError(
            'The config has no default_scope: add default_scope = '
            "'mmdet' (or 'mmseg') to it, as OpenMMLab configs have.")
    init_default_scope(scope)
    models = importlib.import_module(f'{scope}.registry').MODELS
    return models.build(cfg.model)


def model_complexity(cfg, shape, device=None, show_table=False):
    """FLOPs (multiply-adds) and parameters of ``cfg.model`` on one
    ``shape = (H, W)`` RGB image.

    Returns a dict: ``flops``, ``params`` (numbers), ``input_shape`` (the
    (H, W) the model sees after the preprocessor's padding), ``table``
    (mmengine's per-module table, '' unless ``show_table``).
    """
    height, width = parse_shape(shape)
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    torch.manual_seed(0)
    model = revert_sync_batchnorm(build_model(cfg)).to(device).eval()
    _use_explicit_attention(model)
    meta = dict(ori_shape=(height, width), img_shape=(height, width),
                scale_factor=(1., 1.))
    batch = dict(inputs=[torch.rand(3, height, width, device=device) * 255],
                 data_samples=[BaseDataElement(metainfo=meta)])
    with torch.no_grad(), _quiet_mmengine_logger():
        data = model.data_preprocessor(batch, False)
        info = get_model_complexity_info(
            _TensorForward(model, data['data_samples']),
            inputs=(data['inputs'], ),
            show_table=show_table,
            show_arch=False)
    return dict(flops=info['flops'], params=info['params'],
                input_shape=tuple(data['inputs'].shape[-2:]),
                table=info['out_table'])


def complexity_report(config_name, result):
    """The text report of ``model_complexity``'s result."""
    height, width = result['input_shape']
    line = '=' * 60
    return '\n'.join([
        line,
        f'Config: {config_name}',
        f'Input shape: 3 x {height} x {width} (after padding)',
        f"FLOPs: {result['flops'] / 1e9:.1f} G (multiply-adds)",
        f"Params: {result['params'] / 1e6:.2f} M",
        line,
    ]) + result['table']
