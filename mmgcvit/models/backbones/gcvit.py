"""GC ViT backbone (Hatamizadeh et al., Global Context Vision Transformers,
arXiv 2206.09959) for MMDetection 3.x and MMSegmentation 1.x.

Module and parameter names follow the official NVlabs implementation, so its
ImageNet checkpoints (and the backbone part of its mmdet-2 detection
checkpoints) map onto this model key for key.
"""
import logging
import math
import os
import re
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import (PretrainedInit, constant_init,
                                        initialize, trunc_normal_init)
from torch.nn.init import trunc_normal_

from mmgcvit.checkpoint import CheckpointError, check_finite, load_checkpoint
from mmgcvit.registry import register_model
from .biased_attention import CPU_FLASH
from .gcvit_arch import resolve_arch
from .gcvit_converter import check_variant, gcvit_converter, resize_table
from .torch_compat import selective_checkpoint_kwargs
from .window_attention import (GlobalWindowAttention, LocalWindowAttention,
                               _is_static, _WindowAttention)

# Kept by `with_cp` on the CPU instead of recomputed: the CPU flash
# kernel's (output, log-sum-exp), a small part of a block's activations
# that is a large part of its forward to recompute (plain checkpointing
# before torch 2.2, which has no such kernel). GPUs recompute whole blocks:
# their kernels are short, and sending every op through selective
# checkpointing's Python dispatch mode costs more there (docs/speed.md).
_CHECKPOINT_KWARGS = selective_checkpoint_kwargs(
    [CPU_FLASH]) if CPU_FLASH is not None else {}


NUM_STAGES = 4


def _positive_int(value, name, example):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'GCViT {name}={value!r} must be a positive '
                         f'integer, e.g. {name}={example}.')
    return value


def _per_stage(value, name, example):
    """A positive int for every stage, or a sequence of one per stage."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (_positive_int(value, name, example), ) * NUM_STAGES
    if not isinstance(value, (list, tuple)) or len(value) != NUM_STAGES:
        raise ValueError(
            f'GCViT {name}={value!r} must be one positive integer or '
            f'{NUM_STAGES} of them (one per stage), e.g. {name}={example}.')
    return tuple(_positive_int(v, name, example) for v in value)


def _rate(value, name, high=1.):
    """A probability in [0, high)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value < high:
        raise ValueError(f'GCViT {name}={value!r} must be a number in '
                         f'[0, {high:g}), e.g. {name}=0.1.')
    return float(value)


# Norms that normalise the channels of channels-last tokens, as the
# blocks need (BN/GN normalise NCHW maps and belong in necks and heads).
_LAYER_NORMS = ('LN', 'LayerNorm', nn.LayerNorm)


def _check_norm_cfg(norm_cfg):
    if not isinstance(norm_cfg, dict) or norm_cfg.get('type') not in \
            _LAYER_NORMS:
        raise ValueError(
            f'GCViT norm_cfg={norm_cfg!r}: GC ViT normalises channels-last '
            "tokens with LayerNorm; use norm_cfg=dict(type='LN') (batch or "
            'group norms belong in the neck and heads).')


_PRETRAINED_KEYS = {'type', 'checkpoint', 'prefix', 'map_location', 'strict'}
_PRETRAINED_EXAMPLE = \
    "init_cfg=dict(type='Pretrained', checkpoint=PATH_OR_URL)"


def _is_pretrained(cfg):
    return cfg.get('type') in ('Pretrained', PretrainedInit)


def _init_cfgs(init_cfg, pretrained):
    """``init_cfg`` as BaseModule takes it (None, a dict or a list of
    dicts), Pretrained entries checked. The deprecated ``pretrained=PATH``
    (mmseg's EncoderDecoder hands its ``model.pretrained`` to the backbone)
    becomes the Pretrained entry, replacing the config's (our configs all
    name ImageNet weights there, so refusing both, as Swin does, would
    refuse every ``model.pretrained``)."""
    cfgs = [] if init_cfg is None else list(init_cfg) if isinstance(
        init_cfg, (list, tuple)) else [init_cfg]
    for cfg in cfgs:
        if not isinstance(cfg, dict) or 'type' not in cfg:
            raise TypeError(
                f'GCViT init_cfg={init_cfg!r} must be None, a dict with a '
                f'type, or a list of them, e.g. {_PRETRAINED_EXAMPLE}.')
    if pretrained is not None:
        if not isinstance(pretrained, (str, os.PathLike)):
            raise TypeError(f'GCViT pretrained={pretrained!r} must be a path '
                            f'or URL; better, use {_PRETRAINED_EXAMPLE}.')
        warnings.warn(
            f'GCViT pretrained={pretrained!r} is deprecated: use '
            f'{_PRETRAINED_EXAMPLE} (it replaces the Pretrained entry of the '
            "backbone's init_cfg).", FutureWarning, stacklevel=3)
        cfgs = [cfg for cfg in cfgs if not _is_pretrained(cfg)] + [
            dict(type='Pretrained', checkpoint=pretrained)]
    for cfg in filter(_is_pretrained, cfgs):
        unknown = set(cfg) - _PRETRAINED_KEYS
        if unknown or not isinstance(cfg.get('checkpoint'),
                                     (str, os.PathLike)):
            raise ValueError(
                f'GCViT init_cfg entry {cfg!r}: use {_PRETRAINED_EXAMPLE}, '
                "optionally with prefix='backbone.', map_location and "
                'strict=True'
                + (f' (unknown keys {sorted(unknown)})' if unknown else '')
                + '.')
    return init_cfg if pretrained is None else cfgs


def query_pooling_plan(pretrain_img_size, pretrained_window_size,
                       window_size):
    """Number of FeatExtract blocks of each stage's global query generator
    and whether they pool, as ``[(num_blocks, pooled), ...]``.

    The chain is fixed by the pre-training geometry (so pre-trained weights
    fit whatever the input size): stages 1-2 halve their resolution
    ``r_i = pretrain_img_size / 2**(i+2)`` down to the pre-training window,
    stage 3 pools once unless the model's window equals ``r_3`` and stage 4
    never pools, as in the official classification and detection code.
    """
    if pretrain_img_size % 32:
        raise ValueError(
            f'GCViT pretrain_img_size={pretrain_img_size} must be a multiple '
            'of 32 (the total stride), e.g. 224, 384 or 512.')
    plan = []
    for i, (w_pre, w) in enumerate(zip(pretrained_window_size, window_size)):
        res = pretrain_img_size // 2**(i + 2)
        if i < 2:
            ratio = res / w_pre
            levels = math.log2(ratio) if ratio >= 1 else -1
            if levels != int(levels):
                raise ValueError(
                    f'GCViT stage {i + 1}: pre-training resolution {res} / '
                    f'pretrained window {w_pre} = {ratio:g} is not a power '
                    'of two; choose pretrained_window_size so that '
                    f'{res} / window is 1, 2, 4, ...')
            plan.append((max(int(levels), 1), levels > 0))
        else:
            plan.append((1, i == 2 and w != res))
    return plan


def _permute(x, *dims):
    """``x.permute(*dims)``, copied to contiguous memory in graphs compiled
    for dynamic shapes: there inductor (torch 2.14) cannot order the
    symbolic strides of a permuted view that backward keeps ("cannot
    determine truth value of Relational"). Eager keeps the view."""
    x = x.permute(*dims)
    if all(_is_static(size) for size in x.shape):
        return x
    # clone, not contiguous(): no contiguity test (a guard on the sizes).
    return x.clone(memory_format=torch.contiguous_format)


def _bicubic_matrix(n, size, x):
    """``(size, n)`` matrix of ``F.interpolate(mode='bicubic')`` along one
    axis (``align_corners=False``, A = -0.75, borders replicated)."""
    A = -0.75
    src = (torch.arange(size, device=x.device, dtype=x.dtype) + 0.5) * (
        n / size) - 0.5
    start = src.floor()
    t = src - start

    def near(d):
        return ((A + 2) * d - (A + 3)) * d * d + 1

    def far(d):
        return ((A * d - 5 * A) * d + 8 * A) * d - 4 * A

    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], -1)
    taps = (start.long()[:, None] +
            torch.arange(-1, 3, device=x.device)).clamp(0, n - 1)
    hits = taps[..., None] == torch.arange(n, device=x.device)
    return (weights[..., None] * hits).sum(1)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation gate on NCHW maps, bias-free (as official)."""

    def __init__(self, channels, ratio=0.25):
        super().__init__()
        hidden = int(channels * ratio)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), nn.GELU(),
            nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class FusedMBConv(nn.Sequential):
    """Residual branch of the paper's fused-MBConv: 3x3 depthwise conv, GELU,
    squeeze-excitation, 1x1 conv (NCHW; the caller adds the shortcut)."""

    def __init__(self, dim):
        super().__init__(
            nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False), nn.GELU(),
            SqueezeExcitation(dim), nn.Conv2d(dim, dim, 1, bias=False))


class ReduceSize(nn.Module):
    """Down-sampler: LN, fused-MBConv, 3x3 stride-2 conv, LN (channels-last
    in and out); ``keep_dim`` keeps the channels (stem), else doubles them."""

    def __init__(self, dim, norm_cfg, keep_dim=False):
        super().__init__()
        dim_out = dim if keep_dim else 2 * dim
        self.norm1 = build_norm_layer(norm_cfg, dim)[1]
        self.conv = FusedMBConv(dim)
        self.reduction = nn.Conv2d(dim, dim_out, 3, 2, 1, bias=False)
        self.norm2 = build_norm_layer(norm_cfg, dim_out)[1]

    def forward(self, x):
        x = _permute(self.norm1(x), 0, 3, 1, 2)
        x = self.reduction(x + self.conv(x))
        return self.norm2(_permute(x, 0, 2, 3, 1))


class PatchEmbed(nn.Module):
    """Stem: 3x3 stride-2 conv then a channel-keeping ReduceSize (stride 4);
    returns channels-last features."""

    def __init__(self, in_channels, dim, norm_cfg):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, 2, 1)
        self.conv_down = ReduceSize(dim, norm_cfg, keep_dim=True)

    def forward(self, x):
        return self.conv_down(_permute(self.proj(x), 0, 2, 3, 1))


class FeatExtract(nn.Module):
    """Fused-MBConv residual block, then 3x3 stride-2 max-pool unless
    ``keep_dim`` (NCHW)."""

    def __init__(self, dim, keep_dim=False):
        super().__init__()
        self.conv = FusedMBConv(dim)
        self.pool = (
            nn.Identity() if keep_dim else nn.MaxPool2d(3, stride=2,
                                                        padding=1))

    def forward(self, x):
        return self.pool(x + self.conv(x))


class GlobalQueryGenerator(nn.Module):
    """Global query tokens of a stage, shared by all windows of an image.

    Returns ``(B, 1, num_heads, window**2, head_dim)``; the singleton axis
    broadcasts over the windows of each image.
    """

    def __init__(self, dim, num_heads, window_size, num_blocks, pooled):
        super().__init__()
        self.to_q_global = nn.Sequential(*[
            FeatExtract(dim, keep_dim=not pooled) for _ in range(num_blocks)
        ])
        self.num_heads = num_heads
        self.window_size = window_size

    def forward(self, x):
        x = self.to_q_global(x)
        w = self.window_size
        if not all(_is_static(size) for size in x.shape[-2:]):
            # Symbolic sizes: the same resize as matmuls, the identity at w x
            # w, so the graph neither branches on the size nor meets
            # inductor's size-specialised bicubic backward (a recompile).
            rows, cols = (_bicubic_matrix(n, w, x) for n in x.shape[-2:])
            x = rows @ x @ cols.t()
        elif x.shape[-2:] != (w, w):
            x = F.interpolate(x, size=(w, w), mode='bicubic')
        B, C = x.shape[:2]
        x = x.permute(0, 2, 3, 1).reshape(B, 1, w * w, self.num_heads,
                                          C // self.num_heads)
        return x.permute(0, 1, 3, 2, 4)


class Mlp(nn.Module):

    def __init__(self, dim, hidden, drop=0.):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class GCViTBlock(nn.Module):
    """Pre-norm window attention (local or global) and MLP, with optional
    layer scale and stochastic depth; channels-last ``(B, H, W, C)``."""

    def __init__(self, dim, num_heads, window_size, use_global, mlp_ratio,
                 qkv_bias, layer_scale, drop, attn_drop, drop_path, norm_cfg,
                 fused_attn):
        super().__init__()
        self.window_size = window_size
        self.norm1 = build_norm_layer(norm_cfg, dim)[1]
        attn = GlobalWindowAttention if use_global else LocalWindowAttention
        self.attn = attn(dim, num_heads, window_size, qkv_bias, attn_drop,
                         drop, fused_attn)
        self.drop_path = DropPath(drop_path)
        self.norm2 = build_norm_layer(norm_cfg, dim)[1]
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        if layer_scale is not None:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = 1.

    def forward(self, x, q_global):
        x = x + self.drop_path(
            self.gamma1 * self.attn(self.norm1(x), q_global))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class GCViTStage(nn.Module):
    """One resolution level: global query generator, alternating local /
    global blocks, then the optional down-sampler to the next level.

    Returns ``(features for the next stage, this stage's output)``.
    """

    def __init__(self, dim, depth, num_heads, window_size, query_plan,
                 downsample, drop_paths, with_cp, norm_cfg, **block_kwargs):
        super().__init__()
        self.with_cp = with_cp
        self.q_global_gen = GlobalQueryGenerator(dim, num_heads, window_size,
                                                 *query_plan)
        self.blocks = nn.ModuleList([
            GCViTBlock(
                dim, num_heads, window_size, use_global=i % 2 == 1,
                drop_path=drop_paths[i], norm_cfg=norm_cfg, **block_kwargs)
            for i in range(depth)
        ])
        self.downsample = ReduceSize(dim, norm_cfg) if downsample else None

    def forward(self, x):
        q_global = self.q_global_gen(_permute(x, 0, 3, 1, 2))
        for block in self.blocks:
            if self.with_cp and self.training and torch.is_grad_enabled() \
                    and any(p.requires_grad for p in block.parameters()):
                x = cp.checkpoint(
                    block, x, q_global, use_reentrant=False,
                    **(_CHECKPOINT_KWARGS if x.device.type == 'cpu' else {}))
            else:
                x = block(x, q_global)
        if self.downsample is None:
            return x, x
        return self.downsample(x), x


@register_model
class GCViT(BaseModule):
    """GC ViT backbone: four stages of alternating local and global window
    attention; returns NCHW features at strides 4, 8, 16, 32.

    Args:
        arch (str | dict): preset name ('xxtiny', 'xtiny', 'tiny', 'tiny2',
            'small', 'small2', 'base', 'large', 'large-384', 'large-512' and
            short aliases such as 'xxt', 't', 's', 'b', any case) or a dict
            with ``embed_dims``, ``depths``, ``num_heads`` and optionally
            ``mlp_ratio``, ``layer_scale``, ``pretrain_img_size``,
            ``pretrained_window_size``.
        in_channels (int): input channels.
        window_size (int | Sequence[int] | None): attention window per stage;
            None uses the arch's pre-training windows (7, 7, 14, 7 on
            ImageNet-1K). The official detection models use 24.
        pretrain_img_size (int | None): image size of the pre-training,
            fixing the global query generators (None: the arch's, 224).
        pretrained_window_size (int | Sequence[int] | None): the pre-training
            windows (None: the arch's).
        mlp_ratio (float | None), layer_scale (float | None): None keeps the
            arch's value; pass ``layer_scale=0`` to disable it.
        qkv_bias (bool): bias of the qkv projections.
        drop_rate, attn_drop_rate, drop_path_rate (float): dropout after
            projections / MLP, on attention weights, stochastic depth (rising
            linearly to ``drop_path_rate`` over all blocks).
        out_indices (Sequence[int]): stages to output (each gets a LN).
        frozen_stages (int): -1 trains all; 0 freezes the stem; k >= 1 also
            freezes stages 1..k (their blocks, global query generator,
            down-sampler and output norm). Frozen parts stay in eval mode.
        with_cp (bool): gradient checkpointing per block while training;
            on the CPU the fused attention's outputs are kept and the rest
            recomputed, on GPUs the whole block is recomputed.
        fused_attn (bool): ``F.scaled_dot_product_attention`` (True: on the
            CPU over the tokens inside the image, on GPUs over the padded
            windows in one call) or the explicit softmax(q k^T + bias) v
            (False), the reference.
        norm_cfg (dict): norm layer config (channels-last LayerNorm).
        pretrained (str | None): deprecated, as in mmdet's Swin: becomes
            ``init_cfg``'s Pretrained entry.
        init_cfg (dict | list[dict] | None): what BaseModule takes.
            ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` loads
            NVlabs, timm or mmgcvit weights through mmgcvit's loader
            (``prefix='backbone.'`` takes the backbone of a detector /
            segmentor checkpoint, ``map_location`` as mmengine's,
            ``strict=True`` refuses partial weights); other entries go to
            mmengine's initializers, applied before the checkpoints.

    Attributes:
        feature_info (list[dict]): per output, as timm's: ``num_chs``
            (channels), ``reduction`` (stride) and ``module``.
    """

    def __init__(self,
                 arch='tiny',
                 in_channels=3,
                 window_size=None,
                 pretrain_img_size=None,
                 pretrained_window_size=None,
                 mlp_ratio=None,
                 layer_scale=None,
                 qkv_bias=True,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 drop_path_rate=0.2,
                 out_indices=(0, 1, 2, 3),
                 frozen_stages=-1,
                 with_cp=False,
                 fused_attn=True,
                 norm_cfg=dict(type='LN'),
                 pretrained=None,
                 init_cfg=None):
        super().__init__(init_cfg=_init_cfgs(init_cfg, pretrained))
        settings = resolve_arch(arch)
        depths = _per_stage(settings['depths'], 'depths', (3, 4, 19, 5))
        num_heads = _per_stage(settings['num_heads'], 'num_heads',
                               (2, 4, 8, 16))
        self.embed_dims = _positive_int(settings['embed_dims'], 'embed_dims',
                                        64)
        self.num_features = [
            self.embed_dims * 2**i for i in range(NUM_STAGES)]
        for dim, heads in zip(self.num_features, num_heads):
            if dim % heads:
                raise ValueError(
                    f'GCViT stage width {dim} (embed_dims='
                    f'{self.embed_dims} * 2**i) is not divisible by '
                    f'num_heads={heads}: choose num_heads dividing it.')
        self.in_channels = _positive_int(in_channels, 'in_channels', 3)
        self.pretrain_img_size = _positive_int(
            settings['pretrain_img_size']
            if pretrain_img_size is None else pretrain_img_size,
            'pretrain_img_size', 224)
        self.pretrained_window_size = _per_stage(
            settings['pretrained_window_size']
            if pretrained_window_size is None else pretrained_window_size,
            'pretrained_window_size', (7, 7, 14, 7))
        self.window_size = _per_stage(
            self.pretrained_window_size if window_size is None else
            window_size, 'window_size', 24)
        mlp_ratio = settings['mlp_ratio'] if mlp_ratio is None else mlp_ratio
        if isinstance(mlp_ratio, bool) or not isinstance(
                mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise ValueError(f'GCViT mlp_ratio={mlp_ratio!r} must be a '
                             'positive number, e.g. mlp_ratio=3.')
        if layer_scale is None:
            layer_scale = settings['layer_scale']
        if layer_scale is not None and (isinstance(layer_scale, bool) or
                                        not isinstance(layer_scale,
                                                       (int, float))
                                        or layer_scale < 0):
            raise ValueError(
                f'GCViT layer_scale={layer_scale!r} must be a positive '
                'number (e.g. 1e-5), 0 to disable it, or None for the '
                "arch's.")
        layer_scale = layer_scale or None
        drop_rate = _rate(drop_rate, 'drop_rate')
        attn_drop_rate = _rate(attn_drop_rate, 'attn_drop_rate')
        drop_path_rate = _rate(drop_path_rate, 'drop_path_rate')
        _check_norm_cfg(norm_cfg)
        self.arch_settings = dict(
            embed_dims=self.embed_dims, depths=depths, num_heads=num_heads,
            mlp_ratio=mlp_ratio, layer_scale=layer_scale)
        if not isinstance(out_indices, (list, tuple)) or not out_indices \
                or not set(out_indices) <= set(range(NUM_STAGES)):
            raise ValueError(
                f'GCViT out_indices={out_indices!r} must be a non-empty '
                'sequence of stage indices in 0..3, e.g. out_indices=(1, 2, '
                '3) (a single stage: (2,)).')
        self.out_indices = tuple(out_indices)
        # What each output is, as timm's ``feature_info`` says it.
        self.feature_info = [
            dict(num_chs=self.num_features[i], reduction=2**(i + 2),
                 module=f'norm{i}') for i in self.out_indices]
        if isinstance(frozen_stages, bool) or not isinstance(
                frozen_stages, int) or not -1 <= frozen_stages <= 4:
            raise ValueError(f'GCViT frozen_stages={frozen_stages!r} must be '
                             'an integer in -1..4 (-1 freezes nothing).')
        self.frozen_stages = frozen_stages

        plan = query_pooling_plan(self.pretrain_img_size,
                                  self.pretrained_window_size,
                                  self.window_size)
        self.patch_embed = PatchEmbed(in_channels, self.embed_dims, norm_cfg)
        drop_paths = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.levels = nn.ModuleList()
        for i in range(NUM_STAGES):
            first = sum(depths[:i])
            self.levels.append(
                GCViTStage(
                    self.num_features[i], depths[i], num_heads[i],
                    self.window_size[i], plan[i],
                    downsample=i < NUM_STAGES - 1,
                    drop_paths=drop_paths[first:first + depths[i]],
                    with_cp=with_cp, norm_cfg=norm_cfg, mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias, layer_scale=layer_scale,
                    drop=drop_rate, attn_drop=attn_drop_rate,
                    fused_attn=fused_attn))
        for i in self.out_indices:
            norm = build_norm_layer(norm_cfg, self.num_features[i])[1]
            self.add_module(f'norm{i}', norm)
        self._freeze_stages()

    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.patch_embed
        for i in range(max(self.frozen_stages, 0)):
            yield self.levels[i]
            if i in self.out_indices:
                yield getattr(self, f'norm{i}')

    def _freeze_stages(self):
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        return self

    def init_weights(self):
        """Truncated-normal Linear weights, zero biases, unit LayerNorms
        (official scheme) or, if ``init_cfg`` has them, mmengine's
        initializers; then the checkpoints of its Pretrained entries, last
        as BaseModule does. Pretrained is ours: it reads NVlabs and timm
        files and resizes the bias tables, which mmengine's cannot."""
        cfgs = [] if self.init_cfg is None else (
            self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else
            [self.init_cfg])
        pretrained = [cfg for cfg in cfgs if _is_pretrained(cfg)]
        others = [cfg for cfg in cfgs if not _is_pretrained(cfg)]
        if others:
            initialize(self, others)
        else:
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_init(m, std=.02, bias=0.)
                elif isinstance(m, nn.LayerNorm):
                    constant_init(m, val=1., bias=0.)
                elif isinstance(m, _WindowAttention):
                    trunc_normal_(m.relative_position_bias_table, std=.02)
        if not pretrained:
            print_log(f'No pre-trained weights for {type(self).__name__}, '
                      'training from scratch', logger='current')
        for cfg in pretrained:
            self.load_pretrained(
                cfg['checkpoint'], prefix=cfg.get('prefix'),
                strict=cfg.get('strict', False),
                map_location=cfg.get('map_location', 'cpu'))

    def load_pretrained(self, source, prefix=None, strict=False,
                        map_location='cpu'):
        """Load NVlabs, timm or mmgcvit weights from a file or URL.

        The variant must match; relative-position tables are resized to the
        model's windows. Backbone weights the checkpoint lacks (the output
        norms excepted, which ImageNet weights do not have) or holds beyond
        the model are a warning in the run's log, an error with ``strict``.
        """
        checkpoint = load_checkpoint(source, map_location=map_location)
        state_dict, source_format = gcvit_converter(checkpoint, prefix)
        check_finite(state_dict, source)
        check_variant(state_dict, self.arch_settings)
        own = self.state_dict()
        for key, value in list(state_dict.items()):
            if key.endswith('relative_position_bias_table') and key in own \
                    and value.shape != own[key].shape:
                window = (round(own[key].shape[0]**0.5) + 1) // 2
                state_dict[key] = resize_table(value, window)
        result = self.load_state_dict(state_dict, strict=False)
        fresh_norms = [
            k for k in result.missing_keys if re.match(r'norm\d\.', k)]
        missing = [k for k in result.missing_keys if k not in fresh_norms]
        problems = []
        if missing:
            problems.append(f'{len(missing)} backbone weights missing from '
                            f'the checkpoint keep their initialisation: '
                            f'{", ".join(missing[:8])}')
        if result.unexpected_keys:
            problems.append(f'{len(result.unexpected_keys)} checkpoint '
                            'weights unused by the backbone: '
                            f'{", ".join(result.unexpected_keys[:8])}')
        if problems and strict:
            raise CheckpointError(
                f'GC ViT checkpoint {source} does not fit the backbone: '
                + '; '.join(problems) + '. Use the complete checkpoint of '
                "this variant, or drop init_cfg's strict=True.")
        print_log(
            f'Loaded {source_format} GC ViT weights from {source}'
            + (f'; output norms initialised fresh: {fresh_norms}'
               if fresh_norms else ''), logger='current')
        if problems:
            print_log(f'GC ViT checkpoint {source}: ' + '; '.join(problems),
                      logger='current', level=logging.WARNING)
        return result

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels \
                or min(x.shape[-2:]) < 32:
            raise ValueError(
                f'GCViT expects input of shape (N, {self.in_channels}, '
                f'H>=32, W>=32), got {tuple(x.shape)}: pass a batch of '
                f'{self.in_channels}-channel images of at least 32x32.')
        x = self.patch_embed(x)
        outs = []
        for i, level in enumerate(self.levels):
            x, out = level(x)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)
