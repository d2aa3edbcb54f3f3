"""Runner add-ons (OpenMMLab's ``engine``): an optim wrapper, hooks and
loops, registered under the ``mmgcvit`` scope (``type='mmgcvit.<Name>'``),
and the reversible patch that makes mmengine's checkpoint writes atomic.
Our tools apply them (``mmgcvit.cli``); nothing here runs at
``import mmgcvit``."""
from .amp import CPUAmpOptimWrapper, mmcv_ops_in_fp32
from .atomic_checkpoint import atomic_checkpoint_writes
from .load_report import LoadReportHook
from .optim_constructor import PlainDictOptimWrapperConstructor
from .resume import (ResumableEpochBasedTrainLoop,
                     ResumableIterBasedTrainLoop, RNGStateHook)

__all__ = [
    'CPUAmpOptimWrapper', 'mmcv_ops_in_fp32', 'atomic_checkpoint_writes',
    'LoadReportHook', 'PlainDictOptimWrapperConstructor',
    'ResumableEpochBasedTrainLoop',
    'ResumableIterBasedTrainLoop', 'RNGStateHook'
]
