"""GC ViT backbone for MMDetection 3.x and MMSegmentation 1.x.

``import mmgcvit`` (a config's ``custom_imports``) has two effects: it
registers ``GCViT`` into mmdet's and mmseg's ``MODELS``, and mmgcvit's safe
checkpoint loader with mmengine's ``CheckpointLoader`` for local paths and
http(s) URLs (:mod:`mmgcvit.checkpoint`); torch's state is left as it was.
"""
from . import models  # noqa: F401  (registers GCViT)
from .checkpoint import register_loader
from .version import __version__

register_loader()

__all__ = ['__version__']
