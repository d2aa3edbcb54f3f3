"""GC ViT variants: the official presets, their aliases and custom dicts.

Used by the model (``GCViT(arch=...)``) and by the checkpoint converter
(to name the variant a checkpoint holds).
"""

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


def describe_arch(settings):
    """``'tiny' (embed_dims=64, ...)``: the preset with these shapes, or
    ``custom (...)``."""
    keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratio')

    def same(preset):
        return all(
            tuple(preset[k]) == tuple(settings[k]) if k in (
                'depths', 'num_heads') else preset[k] == settings[k]
            for k in keys)

    names = [name for name, preset in ARCH_SETTINGS.items() if same(preset)]
    shape = ', '.join(f'{k}={settings[k]}' for k in keys)
    return f'{names[0]!r} ({shape})' if names else f'custom ({shape})'
