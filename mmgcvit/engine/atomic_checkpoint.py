"""Atomic checkpoint writes for mmengine's ``Runner``.

mmengine writes a checkpoint by opening the target path and writing into it
(``LocalBackend.put``), and ``CheckpointHook`` rewrites ``last_checkpoint``
the same way. A job killed during either write (preemption, OOM killer,
walltime) leaves a truncated ``.pth`` under the final name, or an empty
``last_checkpoint``, and ``--resume`` then fails or loads garbage.

``install_atomic_checkpoints`` makes both writes atomic: the bytes go to a
hidden temporary file in the same directory, which is flushed, fsynced and
renamed over the target (``os.replace`` is atomic within one filesystem), so
the target name only ever holds a complete file. The patch is narrow:
``LocalBackend.put`` / ``put_text`` and the ``open`` that
``mmengine.hooks.checkpoint_hook`` sees for writing; reads are untouched.
"""
import builtins
import os
import os.path as osp
import uuid
from contextlib import contextmanager

import mmengine.hooks.checkpoint_hook as checkpoint_hook_module
from mmengine.fileio.backends import LocalBackend

TMP_SUFFIX = '.tmp'


def temporary_path(path):
    """A fresh hidden name next to ``path``; not ``*.pth``, so no checkpoint
    glob or ``last_checkpoint`` lookup ever picks a partial file."""
    directory, name = osp.split(osp.abspath(path))
    return osp.join(directory,
                    f'.{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}'
                    f'{TMP_SUFFIX}')


@contextmanager
def atomic_open(path, mode='wb', *args, **kwargs):
    """``open(path, mode)`` for writing that publishes the file only when the
    ``with`` block completes; on an exception the target is left as it was.
    """
    if mode not in ('w', 'wb', 'wt'):
        raise ValueError(f'atomic_open writes whole files: mode {mode!r} '
                         "must be 'w' or 'wb'")
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = temporary_path(path)
    # 'x' creates the file with the umask's permissions (mkstemp would make
    # it 0600, unreadable for the group that shares a work dir).
    try:
        with builtins.open(tmp, mode.replace('w', 'x'), *args,
                           **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_put(self, obj, filepath):
    with atomic_open(filepath, 'wb') as f:
        f.write(obj)


def _atomic_put_text(self, obj, filepath, encoding='utf-8'):
    with atomic_open(filepath, 'w', encoding=encoding) as f:
        f.write(obj)


def _checkpoint_hook_open(file, mode='r', *args, **kwargs):
    """``open`` as seen by ``CheckpointHook`` (it writes ``last_checkpoint``
    with ``open(path, 'w')``): atomic for writes, plain for reads."""
    if mode in ('w', 'wb', 'wt'):
        return atomic_open(file, mode, *args, **kwargs)
    return builtins.open(file, mode, *args, **kwargs)


def install_atomic_checkpoints():
    """Make mmengine's local checkpoint and ``last_checkpoint`` writes
    atomic; idempotent."""
    LocalBackend.put = _atomic_put
    LocalBackend.put_text = _atomic_put_text
    checkpoint_hook_module.open = _checkpoint_hook_open
