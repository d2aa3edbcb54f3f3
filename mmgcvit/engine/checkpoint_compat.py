"""Let torch >= 2.6 load the checkpoints mmengine writes, with ``weights_only``.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine's
``CheckpointLoader`` calls ``torch.load`` without the argument, and the
checkpoints its ``Runner`` writes pickle a few non-tensor objects (the
``MessageHub`` history buffers with their numpy arrays and statistics
methods), so ``tools/test.py``, ``--resume`` and ``load_from`` fail on them.
Instead of switching ``weights_only`` off (which would allow arbitrary code
in a downloaded checkpoint to run), allow-list exactly those objects. Any
other pickled type is still refused by torch with its usual error.
"""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer


# Filled into ``HistoryBuffer._statistics_methods`` only when a buffer is
# created, so they are named here for loading before any buffer exists.
_BUILTIN_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _history_buffer_getattr(obj, name):
    """``getattr`` restricted to what pickling a ``HistoryBuffer`` needs.

    A pickled ``HistoryBuffer`` stores its statistics methods (``min``,
    ``max``, ``current``, ``mean`` and any registered with
    ``HistoryBuffer.register_statistics``) as ``getattr(HistoryBuffer,
    name)``. Nothing else may be looked up through this entry point.
    """
    allowed = _BUILTIN_STATISTICS | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'weights_only load refused getattr({obj!r}, {name!r}): mmgcvit only '
        'allows the HistoryBuffer statistics methods that mmengine writes')


def _numpy_globals():
    """numpy objects in mmengine checkpoints, under both numpy 1 and 2 names.

    numpy 2 moved ``numpy.core`` to ``numpy._core``; a checkpoint keeps the
    name it was written with, so both spellings map to the same function.
    """
    from numpy.core.multiarray import _reconstruct, scalar  # noqa: F401
    entries = [np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((_reconstruct, f'{module}._reconstruct'))
        entries.append((scalar, f'{module}.scalar'))
    # numpy >= 1.25 pickles dtypes as instances of their own classes.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        entries.extend(
            getattr(dtypes, name) for name in dir(dtypes)
            if name.endswith('DType'))
    return entries


def allow_mmengine_checkpoints():
    """Allow-list the non-tensor objects of mmengine training checkpoints."""
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return  # torch < 2.4 has no weights_only default to satisfy
    torch.serialization.add_safe_globals([
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        (_history_buffer_getattr, '__builtin__.getattr'),
        *_numpy_globals(),
    ])
