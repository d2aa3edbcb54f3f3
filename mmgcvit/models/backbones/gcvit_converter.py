"""GC ViT weights in the NVlabs, timm and mmgcvit formats -> mmgcvit's.

A pure conversion, as mmdet's ``swin_converter``: :func:`gcvit_converter`
takes a loaded checkpoint (read with :func:`mmgcvit.checkpoint.
load_checkpoint`) and returns the mmgcvit layout (the NVlabs key names minus
the classifier, the final norm and the index buffers). The model checks the
variant and resizes the relative-position tables when it loads them
(``GCViT.init_weights``); ``tools/model_converters/gcvit_to_mmgcvit.py``
writes converted files.
"""
import re

import torch
import torch.nn.functional as F

from mmgcvit.checkpoint import CheckpointError, state_dict_of
from .gcvit_arch import describe_arch

# timm's MbConvBlock layers -> positions in the NVlabs `conv` Sequential.
_TIMM_MBCONV = {'conv_dw': 'conv.0', 'se.fc1': 'conv.2.fc.0',
                'se.fc2': 'conv.2.fc.2', 'conv_pw': 'conv.3'}


class CheckpointFormatError(CheckpointError):
    """A checkpoint that cannot be used as GC ViT backbone weights."""


def _unwrap(obj):
    """The flat tensor dict inside a checkpoint object."""
    inner = state_dict_of(obj)
    if inner is not obj:
        return _unwrap(inner)
    if not isinstance(obj, dict) or not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointFormatError(
            'GC ViT checkpoint holds no state dict (expected tensors, maybe '
            "under 'state_dict' or 'model'); got keys "
            f'{sorted(obj)[:8] if isinstance(obj, dict) else type(obj)}.')
    if obj and all(k.startswith('module.') for k in obj):
        obj = {k[len('module.'):]: v for k, v in obj.items()}
    return obj


def _from_timm(state_dict):
    """timm ``GlobalContextVit`` keys -> mmgcvit (NVlabs) keys."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('head.') or re.match(r'stages\.\d+\.norm\.', key):
            continue  # classifier and the final norm
        new = key.replace('stem.conv1.', 'patch_embed.proj.')
        new = new.replace('stem.down.', 'patch_embed.conv_down.')
        match = re.match(r'stages\.(\d+)\.downsample\.(.*)', new)
        if match:  # timm keeps stage i's down-sampler in stage i + 1
            new = f'levels.{int(match[1]) - 1}.downsample.{match[2]}'
        new = re.sub(r'stages\.(\d+)\.global_block\.blocks\.conv(\d+)\.',
                     lambda m: f'levels.{m[1]}.q_global_gen.to_q_global.'
                     f'{int(m[2]) - 1}.', new)
        new = re.sub(r'^stages\.', 'levels.', new)
        new = new.replace('attn.rel_pos.', 'attn.')
        new = new.replace('ls1.gamma', 'gamma1').replace('ls2.gamma', 'gamma2')
        new = new.replace('.conv_block.', '.')  # down-samplers' MbConv
        for timm_name, name in _TIMM_MBCONV.items():
            new = new.replace(f'.{timm_name}.', f'.{name}.')
        if '.conv.2.fc.' in new:  # timm's SE uses 1x1 convs, NVlabs Linear
            value = value.flatten(1)
        out[new] = value
    return out


def _from_nvlabs(state_dict):
    """NVlabs (or mmgcvit) keys minus the classifier, final norm, buffers."""
    return {
        k: v
        for k, v in state_dict.items()
        if not (k.startswith(('head.', 'norm.'))
                or k.endswith('relative_position_index'))
    }


def gcvit_converter(obj, prefix=None):
    """Convert a loaded checkpoint object to an mmgcvit state dict.

    Returns ``(state_dict, source_format)``. ``prefix`` (e.g.
    ``'backbone.'``) selects and strips the backbone part of a whole
    detector / segmentor; without it such a checkpoint is refused.
    """
    state_dict = _unwrap(obj)
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state_dict = {
            k[len(prefix):]: v
            for k, v in state_dict.items() if k.startswith(prefix)
        }
        if not state_dict:
            raise CheckpointFormatError(
                f'GC ViT checkpoint has no key starting with prefix '
                f'{prefix!r}: remove `prefix` from init_cfg or fix it.')
    elif any(k.startswith('backbone.') for k in state_dict):
        raise CheckpointFormatError(
            'GC ViT checkpoint holds a detector/segmentor (backbone.* keys): '
            'use load_from=PATH for the whole model, or add '
            "prefix='backbone.' to the backbone's init_cfg.")
    if any(k.startswith(('stem.', 'stages.')) for k in state_dict):
        return _from_timm(state_dict), 'timm'
    if any(k.startswith(('patch_embed.', 'levels.')) for k in state_dict):
        return _from_nvlabs(state_dict), 'nvlabs'
    raise CheckpointFormatError(
        'Unknown GC ViT checkpoint format (keys such as '
        f'{sorted(state_dict)[:4]}): expected NVlabs (patch_embed.*, '
        'levels.*), timm (stem.*, stages.*) or mmgcvit weights of GC ViT; '
        'check that the file holds GC ViT weights.')


def infer_arch(state_dict):
    """embed_dims, depths, num_heads, mlp_ratio, layer_scale and windows of
    mmgcvit-layout weights."""
    depths, heads, windows = {}, {}, {}
    for key, value in state_dict.items():
        match = re.match(r'levels\.(\d+)\.blocks\.(\d+)\.', key)
        if match:
            stage, block = int(match[1]), int(match[2])
            depths[stage] = max(depths.get(stage, 0), block + 1)
            if key.endswith('relative_position_bias_table'):
                heads[stage] = value.shape[1]
                windows[stage] = (round(value.shape[0]**0.5) + 1) // 2
    try:
        dims = state_dict['patch_embed.proj.weight'].shape[0]
        fc1 = state_dict['levels.0.blocks.0.mlp.fc1.weight']
    except KeyError as err:
        raise CheckpointFormatError(
            f'GC ViT checkpoint lacks {err.args[0]}: it is not a complete '
            'GC ViT backbone.') from None
    stages = sorted(depths)
    return dict(
        embed_dims=dims,
        depths=tuple(depths[s] for s in stages),
        num_heads=tuple(heads.get(s) for s in stages),
        mlp_ratio=fc1.shape[0] / fc1.shape[1],
        layer_scale='levels.0.blocks.0.gamma1' in state_dict,
        window_size=tuple(windows.get(s) for s in stages))


def check_variant(state_dict, expected):
    """Refuse weights of another variant than ``expected`` (a model's
    ``arch_settings``), naming both."""
    found = infer_arch(state_dict)
    same = (found['embed_dims'] == expected['embed_dims']
            and found['depths'] == tuple(expected['depths'])
            and found['num_heads'] == tuple(expected['num_heads'])
            and found['mlp_ratio'] == expected['mlp_ratio'])
    if not same:
        raise CheckpointFormatError(
            f'GC ViT checkpoint is variant {describe_arch(found)} but the '
            f'model is {describe_arch(expected)}: set the backbone arch to '
            'match the checkpoint or load the right checkpoint.')


def resize_table(table, window_size):
    """Bicubic resize of a ``((2w-1)**2, heads)`` bias table to window
    ``window_size``."""
    length, heads = table.shape
    side, new_side = round(length**0.5), 2 * window_size - 1
    if side == new_side:
        return table
    grid = table.T.reshape(1, heads, side, side).float()
    grid = F.interpolate(grid, size=(new_side, new_side), mode='bicubic')
    return grid.reshape(heads, new_side**2).T.to(table.dtype)
