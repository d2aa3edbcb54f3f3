"""Where mmgcvit's modules are registered.

``GCViT`` is registered into the ``MODELS`` registry of MMDetection and of
MMSegmentation (whichever are installed), so configs with
``default_scope='mmdet'`` or ``'mmseg'`` find it as ``type='GCViT'``.

The runner components of :mod:`mmgcvit.engine` live in registries of their
own scope, children of mmengine's: configs name them ``'mmgcvit.<Name>'``
(e.g. ``custom_hooks=[dict(type='mmgcvit.RNGStateHook')]``), which says
whose they are, and mmengine imports :mod:`mmgcvit.engine` the first time
such a name is looked up (our configs import it already, for its file
backend); ``import mmgcvit`` adds nothing to mmengine's own registries.
"""
import importlib

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry

SCOPE = 'mmgcvit'
_DOWNSTREAM = ('mmdet.registry', 'mmseg.registry')
_ENGINE = ['mmgcvit.engine']

HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope=SCOPE,
                 locations=_ENGINE)
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope=SCOPE,
                 locations=_ENGINE)
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope=SCOPE,
    locations=_ENGINE)


def downstream_model_registries():
    """The ``MODELS`` registries of the installed downstream libraries."""
    registries = []
    for name in _DOWNSTREAM:
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
