"""Reading checkpoints safely: the one loading path
(:func:`load_checkpoint`, local files and URLs, ``weights_only``) and the
allow-list that lets torch read mmengine training checkpoints."""
from .allow_list import allow_mmengine_checkpoints
from .loading import (CheckpointError, check_finite, load_checkpoint,
                      safe_checkpoint_loading, state_dict_of)

__all__ = [
    'allow_mmengine_checkpoints', 'CheckpointError', 'check_finite',
    'load_checkpoint', 'safe_checkpoint_loading', 'state_dict_of'
]
