"""GC ViT backbone for MMDetection 3.x and MMSegmentation 1.x.

``import mmgcvit`` (or ``custom_imports=dict(imports=['mmgcvit'])`` in a
config) registers the backbone into mmdet's and mmseg's ``MODELS`` and lets
torch >= 2.6 load mmengine training checkpoints with ``weights_only``.
"""
from . import models  # noqa: F401  (registers GCViT)
from .engine import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['__version__']
