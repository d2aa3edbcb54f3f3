"""Registration of mmgcvit modules into the downstream OpenMMLab registries.

One class serves both MMDetection and MMSegmentation: it is registered into
each library's ``MODELS`` registry (whichever is installed), so a config with
``default_scope='mmdet'`` or ``'mmseg'`` finds it under the same type name.
"""
import importlib

_REGISTRY_MODULES = ('mmdet.registry', 'mmseg.registry')


def downstream_model_registries():
    """The ``MODELS`` registries of the installed downstream libraries."""
    registries = []
    for name in _REGISTRY_MODULES:
        try:
            registries.append(importlib.import_module(name).MODELS)
        except ImportError:
            continue
    if not registries:
        raise ImportError('mmgcvit needs MMDetection 3.x or MMSegmentation '
                          '1.x: run `bash tools/install.sh`.')
    return registries


def register_model(cls):
    """Class decorator: register ``cls`` into every downstream ``MODELS``."""
    for registry in downstream_model_registries():
        registry.register_module(module=cls)
    return cls
