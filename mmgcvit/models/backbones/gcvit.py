"""GC ViT backbone (Hatamizadeh et al., Global Context Vision Transformers,
arXiv 2206.09959) for MMDetection 3.x and MMSegmentation 1.x.

Module and parameter names follow the official NVlabs implementation, so its
ImageNet checkpoints (and the backbone part of its mmdet-2 detection
checkpoints) map onto this model key for key.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, trunc_normal_init
from torch.nn.init import trunc_normal_

from mmgcvit.registry import register_model
from mmgcvit.utils.torch_compat import selective_checkpoint_kwargs
from .biased_attention import (CPU_FLASH, biased_flash_attention,
                               use_biased_flash)
from .gcvit_checkpoint import load_pretrained

# Kept by `with_cp` on the CPU instead of recomputed: the CPU flash
# kernel's (output, log-sum-exp), a fraction of a block's activations that
# costs a third to a half of its forward to recompute (plain checkpointing
# before torch 2.2, which has no such kernel). GPUs recompute whole blocks:
# there a block's kernels are short, and the dispatch of every op through
# selective checkpointing's Python mode cost more than the recomputation it
# saves (H200, fwd+bwd at 2x3x512x512: 244 ms plain, 426 ms selective).
_CHECKPOINT_KWARGS = selective_checkpoint_kwargs(
    [CPU_FLASH]) if CPU_FLASH is not None else {}

# (embed_dims, depths, num_heads, mlp_ratio, layer_scale), official variants.
_VARIANTS = {
    'xxtiny': (64, (2, 2, 6, 2), (2, 4, 8, 16), 3., None),
    'xtiny': (64, (3, 4, 6, 5), (2, 4, 8, 16), 3., None),
    'tiny': (64, (3, 4, 19, 5), (2, 4, 8, 16), 3., None),
    'tiny2': (64, (3, 4, 29, 5), (2, 4, 8, 16), 3., None),
    'small': (96, (3, 4, 19, 5), (3, 6, 12, 24), 2., 1e-5),
    'small2': (96, (3, 4, 23, 5), (3, 6, 12, 24), 3., 1e-5),
    'base': (128, (3, 4, 19, 5), (4, 8, 16, 32), 2., 1e-5),
    'large': (192, (3, 4, 19, 5), (6, 12, 24, 48), 2., 1e-5),
}
_IMAGENET_WINDOWS = (7, 7, 14, 7)


def _preset(name, pretrain_img_size=224, windows=_IMAGENET_WINDOWS):
    dims, depths, heads, mlp_ratio, layer_scale = _VARIANTS[name]
    return dict(embed_dims=dims, depths=depths, num_heads=heads,
                mlp_ratio=mlp_ratio, layer_scale=layer_scale,
                pretrain_img_size=pretrain_img_size,
                pretrained_window_size=windows)


ARCH_SETTINGS = {name: _preset(name) for name in _VARIANTS}
# ImageNet-21K pre-trained Large checkpoints, fine-tuned at 384 and 512.
ARCH_SETTINGS['large-384'] = _preset('large', 384, (12, 12, 24, 12))
ARCH_SETTINGS['large-512'] = _preset('large', 512, (16, 16, 32, 16))

ARCH_ALIASES = {
    'xxt': 'xxtiny', 'xx-tiny': 'xxtiny', 'xt': 'xtiny', 'x-tiny': 'xtiny',
    't': 'tiny', 't2': 'tiny2', 'tiny-2': 'tiny2',
    's': 'small', 's2': 'small2', 'small-2': 'small2',
    'b': 'base', 'l': 'large',
    'l-384': 'large-384', 'large384': 'large-384', 'l-512': 'large-512',
    'large512': 'large-512',
}


def resolve_arch(arch):
    """Settings dict of a preset name (any alias, any case) or a custom dict.

    A custom dict needs ``embed_dims``, ``depths`` and ``num_heads``;
    ``mlp_ratio`` (3), ``layer_scale`` (None), ``pretrain_img_size`` (224)
    and ``pretrained_window_size`` (7, 7, 14, 7) are optional.
    """
    if isinstance(arch, str):
        key = arch.lower().replace('_', '-')
        key = ARCH_ALIASES.get(key, key)
        if key not in ARCH_SETTINGS:
            raise ValueError(
                f'Unknown GCViT arch {arch!r}: use one of '
                f'{sorted(ARCH_SETTINGS)} (aliases {sorted(ARCH_ALIASES)}) '
                'or a dict with embed_dims, depths and num_heads.')
        return dict(ARCH_SETTINGS[key])
    if not isinstance(arch, dict):
        raise TypeError(f'GCViT arch must be a str or a dict, got {arch!r}')
    missing = {'embed_dims', 'depths', 'num_heads'} - set(arch)
    unknown = set(arch) - set(ARCH_SETTINGS['tiny'])
    if missing or unknown:
        raise ValueError(
            f'Custom GCViT arch {arch}: missing keys {sorted(missing)}, '
            f'unknown keys {sorted(unknown)}; allowed keys are '
            f'{sorted(ARCH_SETTINGS["tiny"])}.')
    settings = dict(mlp_ratio=3., layer_scale=None, pretrain_img_size=224,
                    pretrained_window_size=_IMAGENET_WINDOWS)
    settings.update(arch)
    return settings


def _per_stage(value, num_stages, name):
    """An int for every stage, or a sequence with one entry per stage."""
    if isinstance(value, int):
        return (value, ) * num_stages
    value = tuple(value)
    if len(value) != num_stages:
        raise ValueError(f'GCViT {name}={value} has {len(value)} entries but '
                         f'the arch has {num_stages} stages.')
    return value


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
        x = self.norm1(x).permute(0, 3, 1, 2)
        x = self.reduction(x + self.conv(x))
        return self.norm2(x.permute(0, 2, 3, 1))


class PatchEmbed(nn.Module):
    """Stem: 3x3 stride-2 conv then a channel-keeping ReduceSize (stride 4);
    returns channels-last features."""

    def __init__(self, in_channels, dim, norm_cfg):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, 2, 1)
        self.conv_down = ReduceSize(dim, norm_cfg, keep_dim=True)

    def forward(self, x):
        return self.conv_down(self.proj(x).permute(0, 2, 3, 1))


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
        if x.shape[-2:] != (w, w):
            x = F.interpolate(x, size=(w, w), mode='bicubic')
        B, C = x.shape[:2]
        x = x.permute(0, 2, 3, 1).reshape(B, 1, w * w, self.num_heads,
                                           C // self.num_heads)
        return x.permute(0, 1, 3, 2, 4)


def relative_position_index(window_size):
    """Swin-style ``(w*w, w*w)`` index into a ``(2w-1)**2`` bias table."""
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(window_size), torch.arange(window_size),
            indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel = rel + (window_size - 1)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


class _WindowAttention(nn.Module):
    """Multi-head attention inside the windows of a ``(B, H, W, C)`` map,
    with a learned relative-position bias; returns the ``(B, H, W, C)`` map.

    Any H x W: as in the official detection code, the (normalised) map is
    zero-padded bottom/right to whole windows and attended without a mask,
    so padded tokens are keys and values too; outputs at padded positions
    are cropped. ``fused_attn`` picks ``F.scaled_dot_product_attention``
    over that; False runs the explicit softmax(q k^T + bias) v over the
    padded windows, the reference. On the CPU, which is compute-bound, the
    fused path skips the padding's FLOPs (:meth:`_fused_valid`); on GPUs,
    where a GC ViT block's many small kernels are bound by their launches,
    it attends all the padded windows in one call (:meth:`_fused_padded`).
    """

    num_projections = 3

    def __init__(self, dim, num_heads, window_size, qkv_bias=True,
                 attn_drop=0., proj_drop=0., fused_attn=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.window_size = window_size
        self.fused_attn = fused_attn
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * window_size - 1)**2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=.02)
        # Derived from the window size: not part of checkpoints.
        self.register_buffer(
            'relative_position_index',
            relative_position_index(window_size).flatten(),
            persistent=False)
        self.qkv = nn.Linear(dim, dim * self.num_projections, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._bias_cache = None

    def train(self, mode=True):
        self._bias_cache = None
        return super().train(mode)

    def relative_position_bias(self):
        """``(heads, N, N)`` bias; cached for inference, keyed on the table's
        version so ``load_state_dict`` or in-place edits refresh it."""
        table = self.relative_position_bias_table
        cacheable = not self.training and not (torch.is_grad_enabled()
                                               and table.requires_grad)
        key = (table._version, table.data_ptr(), table.device, table.dtype)
        if cacheable and self._bias_cache is not None \
                and self._bias_cache[0] == key:
            return self._bias_cache[1]
        n = self.window_size**2
        # index_select along a head-major copy of the table: its backward
        # (index_add_) is 5-9x faster on CPU than advanced indexing's
        # accumulating index_put_, and no permuted copy of the bias is made.
        bias = table.t().contiguous().index_select(
            1, self.relative_position_index).view(-1, n, n)
        self._bias_cache = (key, bias) if cacheable else None
        return bias

    def _qkv(self, windows, q_global, rows, cols):
        """q ``(B, 1 or n, heads, Q, d)``, k and v ``(B, n, heads, Q, d)`` of
        ``(B, n, Q, C)`` windows holding the top-left ``rows x cols`` tokens
        of each window (Q = rows * cols)."""
        raise NotImplementedError

    def forward(self, x, q_global=None):
        """Args:
            x: ``(B, H, W, C)`` map.
            q_global: the stage's global query (global attention only).
        """
        if not self.fused_attn:
            out = self._explicit(x, q_global)
        elif x.device.type == 'cpu':
            out = self._fused_valid(x, q_global)
        else:
            out = self._fused_padded(x, q_global)
        return self.proj_drop(self.proj(out))

    def _padded_qkv(self, x, q_global):
        """q, k, v of the map zero-padded to whole windows, and its grid of
        windows."""
        H, W = x.shape[1:3]
        w = self.window_size
        grid = (math.ceil(H / w), math.ceil(W / w))
        x = F.pad(x, (0, 0, 0, grid[1] * w - W, 0, grid[0] * w - H))
        return (*self._qkv(_to_windows(x, grid, w, w), q_global, w, w), grid)

    def _merge_windows(self, out, grid, H, W):
        """The ``(B, H, W, C)`` map of ``(B, n, heads, N, d)`` window
        outputs, cropped to ``H x W``."""
        B, w = out.shape[0], self.window_size
        out = out.transpose(2, 3).reshape(B, *grid, w, w, -1)
        return out.transpose(2, 3).reshape(B, grid[0] * w, grid[1] * w,
                                           -1)[:, :H, :W]

    def _explicit(self, x, q_global):
        q, k, v, grid = self._padded_qkv(x, q_global)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        # Softmax in fp32 so fp16/bf16 autocast cannot overflow it.
        attn = (attn.float() + self.relative_position_bias().float()).softmax(
            dim=-1)
        out = self.attn_drop(attn).to(v.dtype) @ v
        return self._merge_windows(out, grid, *x.shape[1:3])

    def _fused_padded(self, x, q_global):
        """SDPA over all the padded windows in one call."""
        q, k, v, grid = self._padded_qkv(x, q_global)
        B, n = k.shape[:2]
        q, k, v = (t.expand(B, n, -1, -1, -1).flatten(0, 1)
                   for t in (q, k, v))
        bias = self.relative_position_bias().unsqueeze(0).to(q.dtype)
        out = self._sdpa(q, k, v, bias)
        return self._merge_windows(out.view(B, n, *out.shape[1:]), grid,
                                   *x.shape[1:3])

    def _fused_valid(self, x, q_global):
        """SDPA over the windows a rectangle at a time (those sharing their
        valid rows and columns: at most 4), on the valid tokens only.

        Queries at padded positions are skipped (their outputs would be
        cropped). A zero-padded token's key and value are the qkv bias
        whatever its position, so the padded keys of a window differ only in
        their relative-position bias b_j, and the softmax weighs their
        common value by sum_j exp(q k + b_j): one key with bias
        logsumexp_j b_j counts them all. Under attention dropout, which
        drops each key on its own, every padded key is kept instead.
        """
        B, H, W, C = x.shape
        w, heads, d = self.window_size, self.num_heads, self.head_dim
        bias = self.relative_position_bias().view(heads, w, w, w * w)
        out = None
        for rows, n_rows, valid_rows in _window_spans(H, w):
            for cols, n_cols, valid_cols in _window_spans(W, w):
                n, queries = n_rows * n_cols, valid_rows * valid_cols
                q, k, v = self._qkv(
                    _to_windows(x[:, rows, cols], (n_rows, n_cols),
                                valid_rows, valid_cols),
                    q_global, valid_rows, valid_cols)
                # 4-D operands: 5-D ones (a query broadcast over windows)
                # send CPU SDPA to its 4x slower math path, so the global
                # query is materialised per window.
                q = q.expand(B, n, -1, -1, -1).reshape(B * n, heads, queries,
                                                       d)
                k, v = (t.reshape(B * n, heads, queries, d) for t in (k, v))
                b = bias[:, :valid_rows, :valid_cols].reshape(heads, queries,
                                                             w * w)
                if queries < w * w:
                    k, v, b = self._add_padding_keys(
                        k, v, b, valid_rows, valid_cols,
                        collapse=self._dropout_p == 0.)
                o = self._sdpa(q, k, v, b.unsqueeze(0).to(q.dtype))
                if out is None:
                    # SDPA's dtype: the projections' under autocast.
                    out = o.new_empty(B, H, W, C)
                out[:, rows, cols].view(
                    B, n_rows, valid_rows, n_cols, valid_cols, heads,
                    d).copy_(
                        o.view(B, n_rows, n_cols, heads, valid_rows,
                               valid_cols, d).permute(0, 1, 4, 2, 5, 3, 6))
        return out

    def _add_padding_keys(self, k, v, bias, rows, cols, collapse):
        """Keys and values of the valid ``rows x cols`` tokens followed by
        the padded tokens' (one collapsed key, or each), with their bias."""
        w = self.window_size
        bias = bias.view(*bias.shape[:-1], w, w)
        padded_bias = torch.cat([
            bias[..., :rows, cols:].flatten(-2), bias[..., rows:, :].flatten(-2)
        ], -1)
        if collapse:
            padded_bias = padded_bias.logsumexp(-1, keepdim=True)
        bias = torch.cat([bias[..., :rows, :cols].flatten(-2), padded_bias],
                         -1)
        # The projections of a zero token: k and v are the last two.
        zero_token = (
            self.qkv.bias if self.qkv.bias is not None else
            self.qkv.weight.new_zeros(self.qkv.out_features))
        pad_k, pad_v = zero_token.to(k.dtype).view(
            self.num_projections, self.num_heads, 1, self.head_dim)[-2:]
        num_padded = padded_bias.shape[-1]
        k, v = (torch.cat([t, p.expand(t.shape[0], -1, num_padded, -1)], 2)
                for t, p in ((k, pad_k), (v, pad_v)))
        return k, v, bias

    @property
    def _dropout_p(self):
        """The fused paths' attention dropout: ``attn_drop``'s while
        training, none in eval (SDPA applies it whatever the mode)."""
        return self.attn_drop.p if self.training else 0.

    def _sdpa(self, q, k, v, bias):
        if use_biased_flash(q, bias, self._dropout_p):
            return biased_flash_attention(q, k, v, bias, self.scale)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self._dropout_p,
            scale=self.scale)


def _to_windows(x, grid, rows, cols):
    """``(B, n, rows * cols, C)`` windows, row-major, of a ``(B, grid[0] *
    rows, grid[1] * cols, C)`` map."""
    B, C = x.shape[0], x.shape[-1]
    x = x.reshape(B, grid[0], rows, grid[1], cols, C).transpose(2, 3)
    return x.reshape(B, grid[0] * grid[1], rows * cols, C)


def _window_spans(length, window_size):
    """``(token slice, windows, valid tokens in each)`` along one axis of a
    map of ``length`` tokens padded to whole windows: the full windows, then
    the partial last one."""
    full, rest = divmod(length, window_size)
    spans = [(slice(0, full * window_size), full, window_size)] if full else []
    if rest:
        spans.append((slice(full * window_size, length), 1, rest))
    return spans


class LocalWindowAttention(_WindowAttention):
    """Queries, keys and values all from the window (qkv: C -> 3C)."""

    def _qkv(self, windows, q_global, rows, cols):
        B, n, Q, _ = windows.shape
        qkv = self.qkv(windows).view(B, n, Q, 3, self.num_heads,
                                     self.head_dim)
        return qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)


class GlobalWindowAttention(_WindowAttention):
    """Keys and values from the window (qkv: C -> 2C), queries from the
    stage's global query tokens, the same for every window of an image."""

    num_projections = 2

    def _qkv(self, windows, q_global, rows, cols):
        B, n, Q, _ = windows.shape
        kv = self.qkv(windows).view(B, n, Q, 2, self.num_heads,
                                    self.head_dim)
        k, v = kv.permute(3, 0, 1, 4, 2, 5).unbind(0)
        w = self.window_size
        q = q_global.view(B, 1, self.num_heads, w, w, self.head_dim)
        q = q[:, :, :, :rows, :cols].reshape(B, 1, self.num_heads, Q,
                                             self.head_dim)
        return q.to(k.dtype), k, v


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
        q_global = self.q_global_gen(x.permute(0, 3, 1, 2))
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
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            loads NVlabs, timm or mmgcvit weights (``prefix='backbone.'`` to
            take the backbone of a detector / segmentor checkpoint).
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
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        settings = resolve_arch(arch)
        depths = tuple(settings['depths'])
        num_stages = len(depths)
        if num_stages != 4:
            raise ValueError(f'GCViT needs 4 stages, got depths={depths}.')
        num_heads = _per_stage(settings['num_heads'], num_stages, 'num_heads')
        self.embed_dims = settings['embed_dims']
        self.num_features = [self.embed_dims * 2**i for i in range(4)]
        for dim, heads in zip(self.num_features, num_heads):
            if dim % heads:
                raise ValueError(
                    f'GCViT stage width {dim} (embed_dims='
                    f'{self.embed_dims} * 2**i) is not divisible by '
                    f'num_heads={heads}: choose num_heads dividing it.')
        self.pretrain_img_size = pretrain_img_size or settings[
            'pretrain_img_size']
        self.pretrained_window_size = _per_stage(
            pretrained_window_size or settings['pretrained_window_size'],
            num_stages, 'pretrained_window_size')
        self.window_size = _per_stage(window_size or
                                      self.pretrained_window_size,
                                      num_stages, 'window_size')
        mlp_ratio = settings['mlp_ratio'] if mlp_ratio is None else mlp_ratio
        if layer_scale is None:
            layer_scale = settings['layer_scale']
        layer_scale = layer_scale or None
        self.arch_settings = dict(
            embed_dims=self.embed_dims, depths=depths, num_heads=num_heads,
            mlp_ratio=mlp_ratio, layer_scale=layer_scale)
        self.out_indices = tuple(out_indices)
        if not set(self.out_indices) <= set(range(num_stages)):
            raise ValueError(f'GCViT out_indices={out_indices} must be in '
                             f'0..{num_stages - 1}.')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'GCViT frozen_stages={frozen_stages} must be '
                             f'in -1..{num_stages}.')
        self.frozen_stages = frozen_stages
        self.in_channels = in_channels

        plan = query_pooling_plan(self.pretrain_img_size,
                                  self.pretrained_window_size,
                                  self.window_size)
        self.patch_embed = PatchEmbed(in_channels, self.embed_dims, norm_cfg)
        drop_paths = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.levels = nn.ModuleList()
        for i in range(num_stages):
            first = sum(depths[:i])
            self.levels.append(
                GCViTStage(
                    self.num_features[i], depths[i], num_heads[i],
                    self.window_size[i], plan[i],
                    downsample=i < num_stages - 1,
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
        (official scheme), or the checkpoint of ``init_cfg``."""
        if self.init_cfg is None:
            print_log(f'No pre-trained weights for {type(self).__name__}, '
                      'training from scratch', logger='current')
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_init(m, std=.02, bias=0.)
                elif isinstance(m, nn.LayerNorm):
                    constant_init(m, val=1., bias=0.)
                elif isinstance(m, _WindowAttention):
                    trunc_normal_(m.relative_position_bias_table, std=.02)
            return
        if self.init_cfg.get('type') != 'Pretrained':
            super().init_weights()
            return
        if 'checkpoint' not in self.init_cfg:
            raise ValueError(
                f'GCViT init_cfg={self.init_cfg} has no `checkpoint`: use '
                "init_cfg=dict(type='Pretrained', checkpoint=PATH).")
        load_pretrained(self, self.init_cfg['checkpoint'],
                        prefix=self.init_cfg.get('prefix'))

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
