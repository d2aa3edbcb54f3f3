"""The ``weights_only`` allow-list for mmengine training checkpoints.

This is the one global effect of ``import mmgcvit`` besides registering the
backbone (every config's ``custom_imports`` runs it, so upstream
``tools/test.py``, ``--resume`` and ``load_from`` can read the checkpoints
mmengine writes under torch >= 2.6, which loads with ``weights_only=True``).

Threat model: a checkpoint is untrusted input (downloaded, shared, or
crafted). Loading one may fail, but must never run code, corrupt memory or
change the state of the process. torch's ``weights_only`` unpickler gives
that for tensors and containers; everything this module admits must keep
it. mmengine checkpoints also pickle, besides tensors:

* ``HistoryBuffer`` objects (the ``MessageHub`` logs) with their numpy
  arrays and, as ``getattr(HistoryBuffer, name)``, their statistics
  methods;
* numpy arrays and scalars (generator states, metric values).

The real classes cannot be admitted: ``HistoryBuffer.__setstate__`` writes
the class-level ``_statistics_methods`` (a pickle could add names to it,
reach ``__class__`` or ``__subclasses__`` through ``getattr``, or remap
``mean`` for the rest of the process), and numpy's dtype ``__setstate__``
and ``scalar`` trust their input (an object dtype plus raw bytes is a
pointer dereference). So each pickled name maps to a stand-in that checks
its input and builds the real object:

* ``HistoryBuffer`` -> a stand-in whose ``__setstate__`` accepts only the
  buffer's own fields (lengths, numeric 1-D arrays, the statistics methods
  mmengine defines or a program registered), never writes class state,
  then turns the object into a plain ``HistoryBuffer``;
* ``getattr`` -> only ``getattr(HistoryBuffer, <statistics method>)``;
* ``numpy.dtype`` -> a description of a numeric dtype (bool, ints,
  floats, complex; no object, string, void or structured dtypes), checked
  again when numpy builds an array or scalar from it;
* ``numpy.core.multiarray._reconstruct`` / ``scalar`` (and their
  ``numpy._core`` spellings) -> builders of numeric arrays / scalars whose
  byte length must match their shape and dtype. Arrays come back as a
  private ``ndarray`` subclass that pickles as a plain ``ndarray``.

Nothing else is admitted; torch refuses every other global with its usual
message.
"""
import math
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

_NUMERIC_KINDS = 'biufc'
_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')
_HISTORY_FIELDS = {'max_length', '_log_history', '_count_history'}


def _refuse(message):
    return pickle.UnpicklingError(
        f'weights_only load refused: {message} (mmgcvit admits only what '
        'mmengine training checkpoints contain; see '
        'mmgcvit/checkpoint/allow_list.py)')


class _NumericDtype:
    """What a pickled ``numpy.dtype(spec, align, copy)`` stands for, if the
    spec names a plain numeric type; its ``__setstate__`` accepts only the
    standard state of such a dtype (a byte order, nothing else)."""

    __slots__ = ('spec', 'byteorder')

    def __new__(cls, *args, **kwargs):
        raise _refuse('numpy dtypes are built only from their pickled spec')

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 8
                and state[0] == 3 and state[1] in ('<', '>', '|', '=')
                and state[2:] == (None, None, None, -1, -1, 0)):
            raise _refuse(f'a numpy dtype state {state!r} that is not a plain '
                          'numeric type')
        self.byteorder = state[1]

    def resolve(self):
        """The real ``numpy.dtype``."""
        dtype = np.dtype(self.spec)
        byteorder = getattr(self, 'byteorder', '=')
        return dtype if byteorder in ('|', '=') else dtype.newbyteorder(
            byteorder)


def _numpy_dtype(spec, align=False, copy=True):
    if not isinstance(spec, str):
        raise _refuse(f'numpy dtype spec {spec!r}')
    try:
        dtype = np.dtype(spec)
    except TypeError as err:
        raise _refuse(f'numpy dtype spec {spec!r}') from err
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None \
            or dtype.subdtype is not None or dtype.hasobject:
        raise _refuse(f'numpy dtype {dtype} (only numeric dtypes)')
    desc = object.__new__(_NumericDtype)
    desc.spec = spec
    return desc


def _resolve_dtype(desc):
    if type(desc) is not _NumericDtype:
        raise _refuse(f'{type(desc).__name__} where a numpy dtype belongs')
    return desc.resolve()


def _check_bytes(data, count, dtype):
    if not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
        size = len(data) if isinstance(data, (bytes, str)) else '?'
        raise _refuse(f'{type(data).__name__} of {size} bytes where '
                      f'{count} {dtype} values belong')


def _numpy_scalar(desc, data):
    dtype = _resolve_dtype(desc)
    _check_bytes(data, 1, dtype)
    return np.frombuffer(data, dtype=dtype)[0]


class _CheckpointArray(np.ndarray):
    """A numeric array read from a checkpoint; pickles as ``np.ndarray``."""

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raise _refuse('numpy arrays are built only from their pickled data')

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5
                and state[0] == 1 and isinstance(state[1], tuple)
                and all(type(n) is int and n >= 0 for n in state[1])
                and type(state[3]) is bool):
            raise _refuse('a numpy array state that is not (1, shape, dtype, '
                          'fortran_order, bytes)')
        _, shape, desc, fortran, data = state
        dtype = _resolve_dtype(desc)
        _check_bytes(data, math.prod(shape), dtype)
        np.ndarray.__setstate__(self, (1, shape, dtype, fortran, data))

    def __reduce_ex__(self, protocol):
        return np.asarray(self).__reduce_ex__(protocol)

    def __reduce__(self):
        return np.asarray(self).__reduce__()


class _NdarrayName:
    """What the pickled name ``numpy.ndarray`` stands for: only an argument
    of ``_reconstruct``, never called."""

    def __new__(cls, *args, **kwargs):
        raise _refuse('numpy.ndarray may only be rebuilt from its state')


def _numpy_reconstruct(cls, shape, typecode):
    if cls is not _NdarrayName or shape != (0, ) or typecode != b'b':
        raise _refuse(f'numpy _reconstruct({cls!r}, {shape!r}, '
                      f'{typecode!r}) (only plain arrays)')
    return np.empty(0, np.uint8).view(_CheckpointArray)


def _as_plain_array(value, name):
    if not isinstance(value, np.ndarray) or value.ndim != 1 \
            or value.dtype.kind not in _NUMERIC_KINDS:
        raise _refuse(f'HistoryBuffer.{name} must be a 1-D numeric array')
    return np.asarray(value)


def _statistics_method(name):
    """``HistoryBuffer``'s own statistics methods, or one a program
    registered (``HistoryBuffer.register_statistics``), by name."""
    registered = HistoryBuffer._statistics_methods
    if name in _BUILTIN_STATISTICS:
        return getattr(HistoryBuffer, name)
    if isinstance(name, str) and name in registered:
        return registered[name]
    raise _refuse(f'HistoryBuffer statistics method {name!r}: neither '
                  f'mmengine\'s {_BUILTIN_STATISTICS} nor registered in '
                  'this process with HistoryBuffer.register_statistics')


class _CheckpointHistoryBuffer(HistoryBuffer):
    """Rebuilds a pickled ``HistoryBuffer`` from its checked fields, then
    becomes a plain one (so a second ``BUILD`` on it is refused by torch)."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        raise _refuse('HistoryBuffer may only be rebuilt from its state')

    def __setstate__(self, state):
        if not isinstance(state, dict) or not (
                _HISTORY_FIELDS <= set(state) <=
                _HISTORY_FIELDS | {'statistics_methods'}):
            fields = (sorted(state) if isinstance(state, dict) else
                      type(state).__name__)
            raise _refuse(f'a HistoryBuffer state with fields {fields}')
        methods = state.get('statistics_methods', {})
        if not isinstance(methods, dict) or any(
                _statistics_method(name) is not method
                for name, method in methods.items()):
            raise _refuse('HistoryBuffer statistics methods that are not '
                          "HistoryBuffer's own")
        max_length = state['max_length']
        if type(max_length) is not int or max_length <= 0:
            raise _refuse(f'HistoryBuffer.max_length={max_length!r}')
        logs = _as_plain_array(state['_log_history'], '_log_history')
        counts = _as_plain_array(state['_count_history'], '_count_history')
        if len(logs) != len(counts):
            raise _refuse('HistoryBuffer histories of different lengths')
        object.__setattr__(self, '__class__', HistoryBuffer)
        self.max_length = max_length
        self._log_history = logs
        self._count_history = counts


def _history_buffer_getattr(obj, name):
    if obj is not _CheckpointHistoryBuffer:
        raise _refuse(f'getattr({obj!r}, {name!r}): only HistoryBuffer '
                      'statistics methods')
    return _statistics_method(name)


def _entries():
    entries = [
        (_CheckpointHistoryBuffer,
         'mmengine.logging.history_buffer.HistoryBuffer'),
        (_history_buffer_getattr, 'builtins.getattr'),
        (_history_buffer_getattr, '__builtin__.getattr'),
        (_numpy_dtype, 'numpy.dtype'),
        (_NdarrayName, 'numpy.ndarray'),
        # Classes torch must let `BUILD` (it checks the instance's type).
        (_NumericDtype, 'mmgcvit.checkpoint.allow_list._NumericDtype'),
        (_CheckpointArray, 'mmgcvit.checkpoint.allow_list._CheckpointArray'),
    ]
    # numpy 2 renamed numpy.core to numpy._core; a checkpoint keeps the name
    # it was written with.
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((_numpy_reconstruct, f'{module}._reconstruct'))
        entries.append((_numpy_scalar, f'{module}.scalar'))
    return entries


ENTRIES = _entries()


def allow_mmengine_checkpoints():
    """Admit the checked stand-ins above to ``torch.load(weights_only=True)``
    (torch >= 2.4; idempotent)."""
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(ENTRIES)
