"""Atomic checkpoint writes for mmengine's ``Runner``.

mmengine writes a checkpoint by opening the target path and writing into it
(``LocalBackend.put``), and ``CheckpointHook`` rewrites ``last_checkpoint``
the same way: a job killed during either write leaves a truncated ``.pth``
under the final name, or an empty ``last_checkpoint``, and ``--resume`` then
fails or loads garbage. Inside ``atomic_checkpoint_writes()`` both go
through :func:`mmgcvit.utils.fileio.atomic_open`; reads are untouched and
leaving the context restores mmengine.
"""
import builtins
from contextlib import contextmanager

import mmengine.hooks.checkpoint_hook as checkpoint_hook_module
from mmengine.fileio.backends import LocalBackend

from mmgcvit.utils.fileio import atomic_open

_WRITE_MODES = ('w', 'wb', 'wt')


def _atomic_put(self, obj, filepath):
    with atomic_open(filepath, 'wb') as f:
        f.write(obj)


def _atomic_put_text(self, obj, filepath, encoding='utf-8'):
    with atomic_open(filepath, 'w', encoding=encoding) as f:
        f.write(obj)


def _checkpoint_hook_open(file, mode='r', *args, **kwargs):
    """``open`` as seen by ``CheckpointHook`` (it writes ``last_checkpoint``
    with ``open(path, 'w')``): atomic for writes, plain for reads."""
    if mode in _WRITE_MODES:
        return atomic_open(file, mode, *args, **kwargs)
    return builtins.open(file, mode, *args, **kwargs)


@contextmanager
def atomic_checkpoint_writes():
    """Make mmengine's local checkpoint and ``last_checkpoint`` writes
    atomic inside the ``with`` block."""
    saved = (LocalBackend.put, LocalBackend.put_text,
             checkpoint_hook_module.__dict__.get('open'))
    LocalBackend.put = _atomic_put
    LocalBackend.put_text = _atomic_put_text
    checkpoint_hook_module.open = _checkpoint_hook_open
    try:
        yield
    finally:
        LocalBackend.put, LocalBackend.put_text = saved[:2]
        if saved[2] is None:
            del checkpoint_hook_module.open
        else:
            checkpoint_hook_module.open = saved[2]
