"""Checkpoints that hold only tensors and plain Python values.

mmengine pickles its ``MessageHub`` into every checkpoint: ``HistoryBuffer``
objects with numpy arrays, and numpy scalars. torch's stock
``torch.load(weights_only=True)`` refuses both; ``PlainCheckpointHook``
writes them as plain values and turns them back into ``HistoryBuffer``
objects before mmengine's ``resume`` reads the message hub.
"""
import copy

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer

from mmgcvit.registry import HOOKS

# Marks a HistoryBuffer written as a dict.
_TAG = '__history_buffer__'


def to_plain(value):
    """``value`` with numpy arrays as lists, numpy scalars as Python
    numbers and ``HistoryBuffer`` objects as tagged dicts."""
    if isinstance(value, HistoryBuffer):
        logs, counts = value.data
        return {_TAG: True, 'log_history': logs.tolist(),
                'count_history': counts.tolist(),
                'max_length': value.max_length}
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, dict):
        plain = copy.copy(value)  # keeps OrderedDict, Counter, `_metadata`
        for key, item in value.items():
            plain[key] = to_plain(item)
        return plain
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if type(value) is tuple:
        return tuple(to_plain(v) for v in value)
    return value


def _history_buffers(log_scalars):
    return {
        key: HistoryBuffer(np.asarray(v['log_history']),
                           np.asarray(v['count_history']), v['max_length'])
        if isinstance(v, dict) and v.get(_TAG) else v
        for key, v in log_scalars.items()
    }


@HOOKS.register_module()
class PlainCheckpointHook(Hook):
    """Save the checkpoint's contents as tensors and plain values; restore
    the message hub's ``HistoryBuffer`` objects on loading."""

    # Last on saving: after every hook that adds to the checkpoint.
    priority = 'LOWEST'

    def before_save_checkpoint(self, runner, checkpoint):
        for key, value in checkpoint.items():
            checkpoint[key] = to_plain(value)

    def after_load_checkpoint(self, runner, checkpoint):
        hub = checkpoint.get('message_hub')
        if isinstance(hub, dict) and isinstance(hub.get('log_scalars'), dict):
            hub['log_scalars'] = _history_buffers(hub['log_scalars'])
