from .checkpoint_compat import allow_mmengine_checkpoints
from .cpu import setup_cpu_fallbacks

__all__ = ['allow_mmengine_checkpoints', 'setup_cpu_fallbacks']
