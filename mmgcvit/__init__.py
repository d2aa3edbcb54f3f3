"""GC ViT backbone for MMDetection 3.x and MMSegmentation 1.x.

``import mmgcvit`` (or ``custom_imports=dict(imports=['mmgcvit'])`` in a
config) has two effects: it registers ``GCViT`` into mmdet's and mmseg's
``MODELS``, and it registers mmgcvit's checkpoint loader with mmengine's
``CheckpointLoader`` for local paths and http(s) URLs, so every tool's
``load_from``, ``--resume``, test checkpoint and ``init_cfg`` read
checkpoints without unpickling anything but weights and plain values
(:mod:`mmgcvit.checkpoint`). torch's own serialization state is left as it
was.
"""
from . import models  # noqa: F401  (registers GCViT)
from .checkpoint import register_loader
from .version import __version__

register_loader()

__all__ = ['__version__']
