"""Where mmgcvit's modules are registered.

``GCViT`` goes into the ``MODELS`` registry of MMDetection and of
MMSegmentation (whichever are installed), so configs of either scope find
``type='GCViT'``. The runner components of :mod:`mmgcvit.engine` live in
children of mmengine's registries under the ``mmgcvit`` scope: configs name
them ``'mmgcvit.<Name>'``, and mmengine imports :mod:`mmgcvit.engine` the
first time such a name is looked up; ``import mmgcvit`` adds nothing to
mmengine's own registries.
"""
import importlib

from mmengine import registry

_ENGINE = dict(scope='mmgcvit', locations=['mmgcvit.engine'])
HOOKS = registry.Registry('hook', parent=registry.HOOKS, **_ENGINE)
LOOPS = registry.Registry('loop', parent=registry.LOOPS, **_ENGINE)
OPTIM_WRAPPER_CONSTRUCTORS = registry.Registry(
    'optimizer wrapper constructor',
    parent=registry.OPTIM_WRAPPER_CONSTRUCTORS, **_ENGINE)


def register_model(cls):
    """Class decorator: register ``cls`` into every downstream ``MODELS``."""
    registered = False
    for name in ('mmdet.registry', 'mmseg.registry'):
        try:
            importlib.import_module(name).MODELS.register_module(module=cls)
        except ImportError:
            continue
        registered = True
    if not registered:
        raise ImportError('mmgcvit needs MMDetection 3.x or MMSegmentation '
                          '1.x: run `bash tools/install.sh`.')
    return cls
