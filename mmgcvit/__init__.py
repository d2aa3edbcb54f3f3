"""GC ViT backbone for MMDetection 3.x and MMSegmentation 1.x.

``import mmgcvit`` (or ``custom_imports=dict(imports=['mmgcvit'])`` in a
config) registers ``GCViT`` into mmdet's and mmseg's ``MODELS`` and has one
global effect: it admits to ``torch.load(weights_only=True)`` the checked
stand-ins that read mmengine training checkpoints
(:mod:`mmgcvit.checkpoint.allow_list`). Nothing else is changed; what our
tools add to mmengine they apply themselves, around a run.
"""
from . import models  # noqa: F401  (registers GCViT)
from .checkpoint import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['__version__']
