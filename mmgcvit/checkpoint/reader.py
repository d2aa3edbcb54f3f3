"""A restricted unpickler for torch checkpoints, used as ``torch.load``'s
``pickle_module``: torch reads the zip archive and the storages, this module
decides what the pickle may build.

mmengine and NVlabs checkpoints also hold numpy arrays and scalars,
``HistoryBuffer`` logs and ``argparse.Namespace`` arguments; admitting them
to torch's ``weights_only`` allow-list hands the file real numpy / Python
objects to rebuild (how a crafted file frees memory a tensor still points
to, or swaps an object's class), and changes what every ``torch.load`` in
the process accepts. Here names resolve through one table
(:data:`_GLOBALS`) of builders we wrote or constructors of plain values;
numpy arrays and scalars, ``HistoryBuffer`` and ``Namespace`` become inert
stand-ins whose state is checked and which are turned into fresh real
objects (copies of the checked bytes) only after the whole pickle was read,
so nothing can alias one and every object is BUILT at most once; BUILD,
REDUCE, NEWOBJ and the item opcodes act only on the types meant for them;
INST, OBJ and EXT are refused; no tensor may claim more elements than its
storage holds.
"""
import _compat_pickle
import argparse
import collections
import math
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['Unpickler', 'materialise', 'Refused']

_NUMERIC_KINDS = 'biufc'


class Refused(pickle.UnpicklingError):
    """The pickle asks for something this reader does not build."""


# -- stand-ins ---------------------------------------------------------------


class _StandIn:
    """Base of the inert objects the pickle builds; unhashable, so none can
    become a dict key or set member (they are replaced after loading)."""

    __slots__ = ('state', )
    __hash__ = None
    kind = 'object'


def _new_stand_in(cls):
    obj = object.__new__(cls)
    obj.state = None
    return obj


class _Dtype(_StandIn):
    """``numpy.dtype(spec, align, copy)`` of a plain numeric type."""

    __slots__ = ('dtype', )
    kind = 'numpy dtype'

    def build(self, state):
        if not (isinstance(state, tuple) and len(state) == 8
                and state[0] == 3 and state[1] in ('<', '>', '|', '=')
                and state[2:] == (None, None, None, -1, -1, 0)):
            raise Refused(f'a numpy dtype state {state!r} that is not a '
                          'plain numeric type')
        if state[1] in ('<', '>'):
            self.dtype = self.dtype.newbyteorder(state[1])
        self.state = True


def _numpy_dtype(spec, align=False, copy=True):
    if type(spec) is not str:
        raise Refused(f'numpy dtype spec {spec!r}')
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise Refused(f'numpy dtype spec {spec!r}') from None
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None \
            or dtype.subdtype is not None or dtype.hasobject:
        raise Refused(f'numpy dtype {dtype} (only numeric dtypes are read)')
    obj = _new_stand_in(_Dtype)
    obj.dtype = dtype
    return obj


def _dtype_of(desc):
    if type(desc) is not _Dtype:
        raise Refused(f'{type(desc).__name__} where a numpy dtype belongs')
    return desc.dtype


def _checked_bytes(data, count, dtype):
    if type(data) is not bytes or len(data) != count * dtype.itemsize:
        raise Refused(f'{type(data).__name__} where {count} {dtype} values '
                      'belong')
    return data


class _NdarrayName:
    """``numpy.ndarray``: only an argument of ``_reconstruct``."""


class _Array(_StandIn):
    """A numpy array; becomes a copy of its checked bytes."""

    __slots__ = ()
    kind = 'numpy array'

    def build(self, state):
        if not (isinstance(state, tuple) and len(state) == 5
                and state[0] == 1 and isinstance(state[1], tuple)
                and all(type(n) is int and n >= 0 for n in state[1])
                and type(state[3]) is bool):
            raise Refused('a numpy array state that is not (1, shape, '
                          'dtype, fortran_order, bytes)')
        _, shape, desc, fortran, data = state
        dtype = _dtype_of(desc)
        self.state = (shape, dtype, fortran,
                      _checked_bytes(data, math.prod(shape), dtype))

    def real(self):
        shape, dtype, fortran, data = self.state
        return np.frombuffer(data, dtype).reshape(
            shape, order='F' if fortran else 'C').copy()


def _numpy_reconstruct(cls, shape, typecode):
    if cls is not _NdarrayName or shape != (0, ) or typecode != b'b':
        raise Refused('a numpy _reconstruct that is not a plain array')
    return _new_stand_in(_Array)


def _numpy_scalar(desc, data):
    dtype = _dtype_of(desc)
    return np.frombuffer(_checked_bytes(data, 1, dtype), dtype)[0].copy()


class _Namespace(_StandIn):
    """``argparse.Namespace`` (NVlabs checkpoints pickle their training
    arguments); its state must be a dict with string keys."""

    __slots__ = ()
    kind = 'argparse.Namespace'

    def build(self, state):
        if not isinstance(state, dict) or not all(
                type(key) is str for key in state):
            raise Refused('an argparse.Namespace state that is not a dict '
                          'of names')
        self.state = state


class _StatisticsMethod:
    """``getattr(HistoryBuffer, name)`` for one of mmengine's own statistics
    methods; dropped (a new ``HistoryBuffer`` has them)."""

    __slots__ = ('name', )


_HISTORY_FIELDS = {'max_length', '_log_history', '_count_history'}


class _HistoryBuffer(_StandIn):
    """mmengine's ``HistoryBuffer``: rebuilt with its public constructor
    from checked fields."""

    __slots__ = ()
    kind = 'HistoryBuffer'

    def build(self, state):
        if not isinstance(state, dict) or not (
                _HISTORY_FIELDS <= set(state) <=
                _HISTORY_FIELDS | {'statistics_methods'}):
            raise Refused('a HistoryBuffer state with other fields than '
                          f'{sorted(_HISTORY_FIELDS)}')
        methods = state.get('statistics_methods', {})
        if not isinstance(methods, dict) or not all(
                type(m) is _StatisticsMethod and m.name == name
                for name, m in methods.items()):
            raise Refused("HistoryBuffer statistics methods that are not "
                          "mmengine's own")
        max_length = state['max_length']
        logs, counts = state['_log_history'], state['_count_history']
        if type(max_length) is not int or max_length <= 0 or not all(
                type(a) is _Array and a.state is not None
                and len(a.state[0]) == 1 for a in (logs, counts)) \
                or logs.state[0] != counts.state[0]:
            raise Refused('a HistoryBuffer whose length or histories are '
                          'not a positive int and two 1-D arrays of one '
                          'length')
        self.state = (logs, counts, max_length)


def _history_getattr(obj, name):
    # Only names are kept: a rebuilt HistoryBuffer uses the methods of
    # this process's mmengine, whatever the file says.
    if obj is not _HistoryBuffer or type(name) is not str \
            or not name.isidentifier():
        raise Refused(f'getattr(..., {name!r}): only HistoryBuffer '
                      'statistics methods are read')
    method = _StatisticsMethod()
    method.name = name
    return method


# -- tensors -----------------------------------------------------------------


def _ints(values, what):
    if not isinstance(values, tuple) or not all(
            type(v) is int and v >= 0 for v in values):
        raise Refused(f'tensor {what} {values!r}')
    return values


def _rebuild_tensor(storage, offset, size, stride, requires_grad,
                    backward_hooks, metadata=None):
    if not isinstance(storage, torch.storage.TypedStorage):
        raise Refused(f'a tensor over {type(storage).__name__}, not a '
                      'storage of the file')
    size, stride = _ints(size, 'size'), _ints(stride, 'stride')
    if type(offset) is not int or offset < 0 or len(size) != len(stride) \
            or type(requires_grad) is not bool or backward_hooks or metadata:
        raise Refused('a tensor with unusual offset, hooks or metadata')
    # torch.set_ checks that the view stays inside the storage.
    tensor = torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                                             requires_grad, backward_hooks)
    # NOTE: zero or overlapping strides would let a few stored bytes
    # stand for any number of elements (a memory bomb for any later
    # check); checkpoints hold plain tensors, so refuse both.
    if tensor.numel() * tensor.element_size() > \
            tensor.untyped_storage().nbytes() or any(
                s == 0 for n, s in zip(size, stride) if n > 1):
        raise Refused(f'a tensor of {tensor.numel()} elements over '
                      f'{tensor.untyped_storage().nbytes()} stored bytes '
                      '(zero or overlapping strides)')
    return tensor


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if type(data) is not torch.Tensor or type(requires_grad) is not bool \
            or backward_hooks:
        raise Refused('a Parameter that is not a plain tensor')
    return torch.nn.Parameter(data, requires_grad)


def _torch_size(values=()):
    return torch.Size(_ints(tuple(values), 'size'))


def _latin1_bytes(text, encoding='latin1'):
    # How protocol 2 pickles `bytes`.
    if type(text) is not str or encoding not in ('latin1', 'latin-1'):
        raise Refused('_codecs.encode of something other than latin-1 text')
    return text.encode('latin1')


def _device(spec, index=None):
    if type(spec) is not str or index is not None and type(index) is not int:
        raise Refused(f'torch.device{(spec, index)!r}')
    return torch.device(spec) if index is None else torch.device(spec, index)


def _plain(cls):
    """A builtin container type called with plain arguments only."""

    def build(*args):
        return cls(*args)

    build.__qualname__ = cls.__name__
    return build


_DTYPES = {name: value for name, value in vars(torch).items()
           if isinstance(value, torch.dtype)}

_GLOBALS = {
    ('collections', 'OrderedDict'): _plain(collections.OrderedDict),
    ('collections', 'Counter'): _plain(collections.Counter),
    ('builtins', 'set'): _plain(set),
    ('builtins', 'frozenset'): _plain(frozenset),
    ('builtins', 'complex'): _plain(complex),
    ('builtins', 'getattr'): _history_getattr,
    ('_codecs', 'encode'): _latin1_bytes,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch', 'Size'): _torch_size,
    ('torch', 'device'): _device,
    ('argparse', 'Namespace'): _Namespace,
    ('mmengine.logging.history_buffer', 'HistoryBuffer'): _HistoryBuffer,
    ('numpy', 'dtype'): _numpy_dtype,
    ('numpy', 'ndarray'): _NdarrayName,
    # numpy 2 renamed numpy.core to numpy._core; files keep their spelling.
    ('numpy.core.multiarray', '_reconstruct'): _numpy_reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _numpy_reconstruct,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
    **{('torch', name): dtype for name, dtype in _DTYPES.items()},
}
# What REDUCE may call and NEWOBJ may instantiate.
_CALLABLES = {id(f) for f in _GLOBALS.values()
              if callable(f) and not isinstance(f, (type, torch.dtype))}
_NEWOBJ_TYPES = (_Namespace, _HistoryBuffer)
_DICTS = (dict, collections.OrderedDict, collections.Counter)


class Unpickler(pickle._Unpickler):
    """``pickle``'s pure-Python unpickler with the restrictions above (the
    C unpickler's opcodes cannot be overridden)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._built = {}

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports:
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name),
                (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        try:
            return _GLOBALS[module, name]
        except (KeyError, TypeError):
            raise Refused(f'{module}.{name}') from None

    def _load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in _CALLABLES or type(args) is not tuple:
            raise Refused(f'a call of {type(func).__name__}')
        self.stack[-1] = func(*args)

    def _load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in _NEWOBJ_TYPES or args:
            raise Refused(f'instantiating {getattr(cls, "__name__", cls)}')
        self.append(_new_stand_in(cls))

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if id(inst) in self._built:
            raise Refused(f'a second BUILD of one {type(inst).__name__}')
        self._built[id(inst)] = inst  # kept alive: ids stay unique
        if isinstance(inst, _StandIn):
            inst.build(state)
        elif type(inst) is collections.OrderedDict and isinstance(
                state, dict) and all(type(k) is str and not k.startswith(
                    '__') for k in state):
            # torch's state dicts carry `_metadata` as an attribute.
            inst.__dict__.update(state)
        else:
            raise Refused(f'BUILD of a {type(inst).__name__}')

    def _load_append(self):
        value = self.stack.pop()
        self._container(list).append(value)

    def _load_appends(self):
        items = self.pop_mark()
        self._container(list).extend(items)

    def _load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._container(_DICTS)[key] = value

    def _load_setitems(self):
        items = self.pop_mark()
        target = self._container(_DICTS)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _load_additems(self):
        items = self.pop_mark()
        self._container(set).update(items)

    def _container(self, types):
        target = self.stack[-1]
        if type(target) not in (types if isinstance(types, tuple) else
                                (types, )):
            raise Refused(f'adding items to a {type(target).__name__}')
        return target

    def _refused_opcode(self):
        raise Refused('a pickle opcode that builds arbitrary objects (INST, '
                      'OBJ, EXT)')

    for _code, _method in (
            (pickle.REDUCE, _load_reduce), (pickle.NEWOBJ, _load_newobj),
            (pickle.NEWOBJ_EX, _refused_opcode), (pickle.BUILD, _load_build),
            (pickle.APPEND, _load_append), (pickle.APPENDS, _load_appends),
            (pickle.SETITEM, _load_setitem),
            (pickle.SETITEMS, _load_setitems),
            (pickle.ADDITEMS, _load_additems), (pickle.INST, _refused_opcode),
            (pickle.OBJ, _refused_opcode), (pickle.EXT1, _refused_opcode),
            (pickle.EXT2, _refused_opcode), (pickle.EXT4, _refused_opcode)):
        dispatch[_code[0]] = _method
    del _code, _method


def materialise(obj):
    """``obj`` with every stand-in replaced by the real object it stands
    for (fresh arrays, ``HistoryBuffer`` and ``Namespace`` objects);
    refuses stand-ins whose state never came."""
    memo = {}

    def real(value):
        key = id(value)
        if key in memo:
            return memo[key]
        if isinstance(value, _StandIn):
            if value.state is None and not isinstance(value, _Dtype):
                raise Refused(f'a {value.kind} that was never given its '
                              'state')
            memo[key] = out = _REAL[type(value)](value, real)
        elif type(value) in _DICTS:
            memo[key] = value
            for k, v in value.items():
                value[k] = real(v)
            out = value
        elif type(value) is list:
            memo[key] = value
            value[:] = [real(v) for v in value]
            out = value
        elif type(value) is tuple:
            out = memo[key] = tuple(real(v) for v in value)
        else:
            out = value
        return out

    return real(obj)


_REAL = {
    _Dtype: lambda v, real: v.dtype,
    _Array: lambda v, real: v.real(),
    _Namespace: lambda v, real: argparse.Namespace(
        **{k: real(x) for k, x in v.state.items()}),
    _HistoryBuffer: lambda v, real: HistoryBuffer(
        v.state[0].real(), v.state[1].real(), v.state[2]),
}
