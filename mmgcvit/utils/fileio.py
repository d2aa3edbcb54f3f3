"""The project's one atomic file writer: a job killed mid-write must never
leave a truncated file under the final name, so ``atomic_open`` writes a
hidden temporary file in the same folder, fsyncs it and renames it over the
target (``os.replace`` is atomic within a filesystem).
"""
import builtins
import os
import os.path as osp
import re
import socket
import uuid
from contextlib import contextmanager

# `.<name>.<host>-<pid>-<hex>.tmp`: never `*.pth`, so no checkpoint glob or
# `last_checkpoint` lookup picks a partial file; host and pid tell whether
# its writer can still be alive.
_TMP_PATTERN = re.compile(
    r'^\.(?P<name>.+)\.(?P<host>[^/]+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$')


@contextmanager
def atomic_open(path, mode='wb', *args, **kwargs):
    """``open(path, mode)`` for writing that publishes the file only when the
    ``with`` block completes; on an exception the target is left as it was.
    """
    if mode not in ('w', 'wb', 'wt'):
        raise ValueError(f'atomic_open writes whole files: mode {mode!r} '
                         "must be 'w' or 'wb'")
    directory, name = osp.split(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = osp.join(directory, f'.{name}.{socket.gethostname()}-'
                   f'{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp')
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


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_temporaries(folder):
    """Delete the partial files ``atomic_open`` left in ``folder`` when its
    writer was killed (on this host, with no process of that pid alive);
    returns their paths. Other hosts' files are left alone: their writers
    may still run on a shared filesystem."""
    if not osp.isdir(folder):
        return []
    host, removed = socket.gethostname(), []
    for name in sorted(os.listdir(folder)):
        match = _TMP_PATTERN.match(name)
        if match and match['host'] == host and not _alive(int(match['pid'])):
            path = osp.join(folder, name)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed

