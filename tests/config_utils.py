"""Shared by the config tests: take a config through its ``custom_imports``
as the Runner does, and build its model without pretrained weights."""
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings


def with_custom_imports(cfg, registry):
    """``cfg`` after its ``custom_imports`` and default scope; checks that
    they registered GCViT into ``registry`` (mmdet's or mmseg's MODELS)."""
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    assert registry.get('GCViT') is not None, (
        f'importing {cfg.custom_imports["imports"]} did not register GCViT '
        f'into {registry.scope}::MODELS')
    return cfg


def build_without_pretrained(cfg, registry):
    model_cfg = cfg.model.copy()
    model_cfg.backbone = dict(model_cfg.backbone, init_cfg=None)
    return registry.build(model_cfg)


def n_params(module):
    return sum(p.numel() for p in module.parameters())
