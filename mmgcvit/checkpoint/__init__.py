"""Reading checkpoints safely: the one loading path (:func:`load_checkpoint`,
local files and URLs), the restricted reader behind it, the download cache,
and its registration with mmengine's ``CheckpointLoader``."""
from .download import CheckpointError
from .loading import (check_finite, load_checkpoint, register_loader,
                      state_dict_of)

__all__ = [
    'CheckpointError', 'check_finite', 'load_checkpoint', 'register_loader',
    'state_dict_of'
]
