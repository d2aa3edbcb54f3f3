"""Runner components our configs select (``type='mmgcvit.<Name>'``) and
the atomic file backend ``'mmgcvit_atomic'``, registered on import (the
configs' ``custom_imports``), so every tool gets them."""
from .checkpoint_contents import PlainCheckpointHook
from .checkpoint_writes import AtomicCheckpointHook, AtomicLocalBackend
from .errors import (ONE_LINE_ERRORS, EvaluationError, PreflightError,
                     one_line_errors)
from .load_report import LoadReportHook, check_weights_fit
from .optim_constructor import PlainDictOptimWrapperConstructor
from .preflight import CheckedTestLoop
from .resume import (ResumableEpochBasedTrainLoop,
                     ResumableIterBasedTrainLoop, RNGStateHook)

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'ONE_LINE_ERRORS',
    'EvaluationError', 'PreflightError', 'one_line_errors', 'LoadReportHook',
    'check_weights_fit', 'PlainCheckpointHook',
    'PlainDictOptimWrapperConstructor', 'CheckedTestLoop',
    'ResumableEpochBasedTrainLoop', 'ResumableIterBasedTrainLoop',
    'RNGStateHook'
]
