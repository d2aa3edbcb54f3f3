from .amp import CPUAmpOptimWrapper
from .atomic_checkpoint import atomic_open, install_atomic_checkpoints
from .checkpoint_compat import allow_mmengine_checkpoints
from .cpu import setup_cpu_fallbacks
from .load_report import LoadReportHook, enable_load_report
from .preflight import PreflightError, PreflightRunner
from .resume import (ResumableEpochBasedTrainLoop,
                     ResumableIterBasedTrainLoop, RNGStateHook,
                     enable_exact_resume)

__all__ = [
    'allow_mmengine_checkpoints', 'setup_cpu_fallbacks',
    'CPUAmpOptimWrapper', 'atomic_open', 'install_atomic_checkpoints',
    'PreflightError', 'PreflightRunner', 'ResumableEpochBasedTrainLoop',
    'ResumableIterBasedTrainLoop', 'RNGStateHook', 'enable_exact_resume',
    'LoadReportHook', 'enable_load_report'
]
