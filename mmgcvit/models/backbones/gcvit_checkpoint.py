"""Reading GC ViT weights in the NVlabs, timm and mmgcvit formats.

Everything is converted to the mmgcvit layout (= the NVlabs key names minus
the classifier, the final norm and the index buffers), checked against the
model's variant and, when loaded, the relative-position tables are
bicubic-resized to the model's windows.
"""
import argparse
import os
import pickle
import re
import tempfile

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from mmgcvit.utils.torch_compat import safe_globals

# NVlabs' training script (timm's) saves the weights under `state_dict` and
# the EMA copy under `state_dict_ema`; its validate.py evaluates the plain
# `state_dict` (timm's loader without --use-ema), so that one is preferred.
_WEIGHT_KEYS = ('state_dict', 'state_dict_ema', 'model', 'module')
# Keys of a whole detector / segmentor besides `backbone.`.
_MODEL_PARTS = ('neck.', 'rpn_head.', 'roi_head.', 'bbox_head.', 'mask_head.',
                'decode_head.', 'auxiliary_head.', 'data_preprocessor.')
# timm's MbConvBlock layers -> positions in the NVlabs `conv` Sequential.
_TIMM_MBCONV = {'conv_dw': 'conv.0', 'se.fc1': 'conv.2.fc.0',
                'se.fc2': 'conv.2.fc.2', 'conv_pw': 'conv.3'}


class CheckpointFormatError(ValueError):
    """A checkpoint that cannot be used as GC ViT backbone weights."""


def read_checkpoint(path):
    """The raw object stored in ``path`` (``.safetensors``, ``.pth``,
    ``.pth.tar``, or a URL / ``open-mmlab://`` name CheckpointLoader knows)."""
    path = str(path)
    if '://' not in path and not os.path.isfile(path):
        raise FileNotFoundError(
            f'GC ViT checkpoint {path!r} does not exist: fix the path '
            '(init_cfg.checkpoint or the converter argument).')
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            return load_file(path, device='cpu')
        # NVlabs checkpoints pickle the training arguments (an
        # argparse.Namespace); allow that one type and keep weights_only on.
        with safe_globals([argparse.Namespace]):
            return CheckpointLoader.load_checkpoint(path, map_location='cpu')
    except pickle.UnpicklingError as err:
        if 'weights_only' not in str(err).lower():
            raise _unreadable(path, err) from err
        raise CheckpointFormatError(
            f'GC ViT checkpoint {path!r} pickles Python objects besides '
            'tensors, which torch refuses to load safely (weights_only): if '
            'you trust its source, re-save just its weights with '
            "torch.save(torch.load(PATH, weights_only=False)['state_dict'], "
            'NEW_PATH) and load NEW_PATH.') from err
    except Exception as err:  # torch / zipfile / safetensors raise many types
        raise _unreadable(path, err) from err


def _unreadable(path, err):
    message = str(err).strip().splitlines()[0] if str(err) else ''
    return CheckpointFormatError(
        f'Cannot read GC ViT checkpoint {path!r} ({type(err).__name__}: '
        f'{message}): the file is truncated or corrupt; download or convert '
        'it again.')


def _unwrap(obj):
    """The flat tensor dict inside a checkpoint object."""
    for key in _WEIGHT_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return _unwrap(obj[key])
    if not isinstance(obj, dict) or not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointFormatError(
            'GC ViT checkpoint holds no state dict (expected tensors, maybe '
            f'under one of {_WEIGHT_KEYS}); got keys '
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


def to_mmgcvit(obj, prefix=None):
    """Convert a loaded checkpoint object to an mmgcvit state dict.

    Returns ``(state_dict, source_format)``. ``prefix`` (e.g.
    ``'backbone.'``) selects and strips the backbone part of a whole
    detector / segmentor; without it such a checkpoint is refused.
    """
    state_dict = _unwrap(obj)
    if prefix:
        state_dict = {
            k[len(prefix):]: v
            for k, v in state_dict.items() if k.startswith(prefix)
        }
        if not state_dict:
            raise CheckpointFormatError(
                f'GC ViT checkpoint has no key starting with prefix '
                f'{prefix!r}: remove `prefix` from init_cfg or fix it.')
    elif any(k.startswith('backbone.') for k in state_dict) and any(
            k.startswith(_MODEL_PARTS) for k in state_dict):
        raise CheckpointFormatError(
            'GC ViT checkpoint is a whole detector/segmentor (backbone.* + '
            "heads): use load_from=PATH for the whole model, or add "
            "prefix='backbone.' to the backbone's init_cfg.")
    if any(k.startswith(('stem.', 'stages.')) for k in state_dict):
        return _from_timm(state_dict), 'timm'
    if any(k.startswith(('patch_embed.', 'levels.')) for k in state_dict):
        return _from_nvlabs(state_dict), 'nvlabs'
    raise CheckpointFormatError(
        'Unknown GC ViT checkpoint format (keys such as '
        f'{sorted(state_dict)[:4]}): expected NVlabs (patch_embed.*, '
        'levels.*), timm (stem.*, stages.*) or mmgcvit weights; convert it '
        'with tools/model_converters/gcvit_to_mmgcvit.py.')


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


def _describe(settings):
    from .gcvit import ARCH_SETTINGS  # the presets live with the model
    keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratio')
    names = [
        name for name, preset in ARCH_SETTINGS.items()
        if all(tuple(preset[k]) == tuple(settings[k]) if k in (
            'depths', 'num_heads') else preset[k] == settings[k]
               for k in keys)
    ]
    shape = ', '.join(f'{k}={settings[k]}' for k in keys)
    return f"{names[0]!r} ({shape})" if names else f'custom ({shape})'


def check_variant(state_dict, model):
    """Refuse weights of another variant than ``model``'s, naming both."""
    found = infer_arch(state_dict)
    expected = model.arch_settings
    same = (found['embed_dims'] == expected['embed_dims']
            and found['depths'] == tuple(expected['depths'])
            and found['num_heads'] == tuple(expected['num_heads'])
            and found['mlp_ratio'] == expected['mlp_ratio'])
    if not same:
        raise CheckpointFormatError(
            f'GC ViT checkpoint is variant {_describe(found)} but the model '
            f'is {_describe(expected)}: set the backbone arch to match the '
            'checkpoint or load the right checkpoint.')


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


def load_pretrained(model, path, prefix=None):
    """Load NVlabs / timm / mmgcvit weights from ``path`` into ``model``.

    Returns the ``load_state_dict`` result; missing and unexpected keys are
    logged with mmengine's logger.
    """
    state_dict, source = to_mmgcvit(read_checkpoint(path), prefix)
    check_variant(state_dict, model)
    own = model.state_dict()
    for key, value in list(state_dict.items()):
        if key.endswith('relative_position_bias_table') and key in own \
                and value.shape != own[key].shape:
            window = (round(own[key].shape[0]**0.5) + 1) // 2
            state_dict[key] = resize_table(value, window)
    result = model.load_state_dict(state_dict, strict=False)
    new_norms = [k for k in result.missing_keys if re.match(r'norm\d\.', k)]
    missing = [k for k in result.missing_keys if k not in new_norms]
    print_log(
        f'Loaded {source} GC ViT weights from {path}; missing keys: '
        f'{missing or "none"}; unexpected keys: '
        f'{result.unexpected_keys or "none"}; output norms initialised '
        f'fresh: {new_norms or "none"}',
        logger='current')
    return result


def convert_checkpoint(path):
    """NVlabs / timm / mmgcvit checkpoint -> ``{'state_dict', 'meta'}`` in
    the mmgcvit layout (what the converter tool writes)."""
    state_dict, source = to_mmgcvit(read_checkpoint(path))
    meta = dict(infer_arch(state_dict), source_format=source,
                source=os.path.basename(path))
    return dict(state_dict=state_dict, meta=meta)


def save_converted(src, dst):
    """Convert ``src`` and write it to ``dst`` atomically (a temporary file
    in the same folder renamed over ``dst``): on failure no file is left."""
    converted = convert_checkpoint(src)
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp',
                               prefix=os.path.basename(dst) + '.')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(converted, f)
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise
    return converted['meta']
