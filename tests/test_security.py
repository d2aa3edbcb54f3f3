"""Hostile and careless checkpoints: nothing a file holds may run code,
corrupt memory or change the process; bad weights are refused by name, and
tools/test.py scores only a model that is the file.

Every hostile file is loaded in a fresh process, where a crash shows; the
use-after-free is first shown to read freed memory when loaded unchecked."""
import ast
import json
import os
import pickle
import pickletools
import re
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
from helpers import (MMDET_TEST, REPO, TOOLS, assert_one_line_error,
                     mmengine_log, run_tool, saved_test_metrics,
                     small_detection_config)
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.registry import init_default_scope
from mmengine.runner import CheckpointLoader
from safetensors.torch import save_file

from mmgcvit.checkpoint import CheckpointError, load_checkpoint
from mmgcvit.checkpoint.download import cached_path
from mmgcvit.models import GCViT

# --- crafted files ---------------------------------------------------------


class Reduce:
    """Pickles as ``fn(*args)``, then ``BUILD(state)`` if a state is given."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) + (() if self.state is None else
                                       (self.state, ))


def save_pickle(path, data):
    """A torch checkpoint file whose pickle is ``data``."""
    torch.save(None, path)
    with zipfile.ZipFile(path) as archive:
        entries = {i.filename: archive.read(i) for i in archive.infolist()}
    entries[next(n for n in entries if n.endswith('/data.pkl'))] = data
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)


def then_build(data, memo, state):
    """``data``'s pickle, then a BUILD of its memo entry ``memo``."""
    return (data[:-1] + pickle.BINGET + bytes([memo]) +
            pickle.dumps(state, protocol=2)[2:-1] + pickle.BUILD +
            pickle.POP + pickle.STOP)


def memo_of_nth_reduce(data, n):
    ops = list(pickletools.genops(data))
    at = [i for i, (op, _, _) in enumerate(ops) if op.name == 'REDUCE'][n]
    return ops[at + 1][1]


def use_after_free(path):
    """A tensor over a numpy array's buffer, then a second BUILD of the
    array: numpy frees the buffer the tensor still reads."""
    array = np.arange(1 << 16, dtype=np.float32)
    data = pickle.dumps([array, Reduce(
        torch._utils._rebuild_device_tensor_from_numpy,
        (array, torch.float32, 'cpu', False))], protocol=2)
    # REDUCEs: _codecs.encode(b'b'), then numpy's _reconstruct (the array)
    save_pickle(path, then_build(data, memo_of_nth_reduce(data, 1),
                                 np.zeros(1, np.float32).__reduce__()[2]))


def history_buffer(**extra_state):
    buffer = HistoryBuffer([1.], [1])
    state = dict(vars(buffer), **extra_state)
    buffer.__getstate__ = lambda: state  # what pickle saves
    return buffer


def planted_setstate(path):
    """A buffer whose state plants ``__setstate__``, BUILT again."""
    import codecs
    data = pickle.dumps(history_buffer(__setstate__=codecs.encode), 2)
    save_pickle(path, then_build(data, 0, 'argument of our choice'))


def namespace_class_swap(path):
    """An ``argparse.Namespace`` whose BUILD slot state sets ``__class__``
    to HistoryBuffer with fields of the attacker's choosing."""
    state = ({'max_length': -1, '_log_history': [0]},
             {'__class__': HistoryBuffer})
    save_pickle(path, pickle.PROTO + b'\x02' + pickle.GLOBAL +
                b'argparse\nNamespace\n' + pickle.EMPTY_TUPLE +
                pickle.NEWOBJ + pickle.dumps(state, 2)[2:-1] + pickle.BUILD +
                pickle.STOP)


def newobj_only(path):
    """A HistoryBuffer made by NEWOBJ and never BUILT (no state to check)."""
    data = pickle.dumps(history_buffer(), 2)
    ops = list(pickletools.genops(data))
    newobj = next(pos for op, _, pos in ops if op.name == 'NEWOBJ')
    save_pickle(path, data[:newobj + 1] + pickle.STOP)


def object_dtype_scalar(path):
    """``numpy scalar(object dtype, raw bytes)``: dereferences 0x4141..."""
    dtype = Reduce(np.dtype, ('O', False, True),
                   (3, '|', None, None, None, -1, -1, 0))
    torch.save(Reduce(np._core.multiarray.scalar, (dtype, b'\x41' * 8)),
               path)


def shell(path):
    """Runs ``touch marker`` next to ``path`` when unpickled."""
    torch.save(Reduce(os.system, (f'touch {path.parent / "marker"}', )),
               path)


def zero_stride_bomb(path):
    """1.7 KB on disk, 10^9 floats once anything reads it."""
    torch.save({'w': torch.zeros(1).expand(10**9)}, path)


# --- loading in a fresh process --------------------------------------------

# Loads PATH with torch's unchecked unpickler (the harm), then through every
# path the import serves, and reports what each did as JSON.
LOAD = '''
import json, sys, torch, numpy as np
import mmdet.models, mmseg.models  # what the import of mmgcvit pulls in
path, how = sys.argv[1:3]
if how == 'unchecked':
    value = torch.load(path, weights_only=False)
    # Fresh arrays the size of the use-after-free buffer: the freed memory
    # goes to one of them while the tensor still reads it.
    others = [np.full(1 << 16, 7, np.float32) for _ in range(4)]
    print(json.dumps(value[1][:5].tolist() if isinstance(value, list)
                     else repr(value)[:200]))
    sys.exit()
import mmgcvit
from mmengine.runner import CheckpointLoader
from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.models import GCViT
loaders = {
    'torch.load': lambda: torch.load(path, weights_only=True),
    'mmgcvit': lambda: load_checkpoint(path),
    'mmengine': lambda: CheckpointLoader.load_checkpoint(path),
    'init_cfg': lambda: GCViT(arch='xxtiny', init_cfg=dict(
        type='Pretrained', checkpoint=path)).init_weights()}
outcome = {}
for name, load in loaders.items():
    try:
        value = load()
        outcome[name] = 'loaded ' + repr(value)[:200]
    except Exception as err:
        outcome[name] = f'{type(err).__name__}: {err}'
print(json.dumps(outcome))
'''


def python(script, *args, timeout=300):
    return subprocess.run([sys.executable, '-c', script, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def load_everywhere(path):
    result = python(LOAD, path, 'checked')
    assert result.returncode == 0, f'loading crashed the process:\n' \
        f'{result.stdout}{result.stderr[-3000:]}'
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('build,refusal', [
    (use_after_free, 'torch._utils._rebuild_device_tensor_from_numpy'),
    (planted_setstate, 'HistoryBuffer state with other fields'),
    (namespace_class_swap, 'argparse.Namespace state that is not a dict'),
    (newobj_only, 'HistoryBuffer that was never given its state'),
    (object_dtype_scalar, 'numpy dtype object'),
    (zero_stride_bomb, 'zero or overlapping strides'),
    (shell, 'posix.system'),
])
def test_crafted_files_refused_everywhere(tmp_path, build, refusal):
    path = tmp_path / 'hostile.pth'
    build(path)
    # The use-after-free file: 3 fresh processes of 3 survive.
    for _ in range(3 if build is use_after_free else 1):
        outcome = load_everywhere(path)
        assert not (tmp_path / 'marker').exists()
        # torch's own weights_only refuses numpy and these classes: the
        # import must not have taught it otherwise (the zero-stride bomb is
        # a valid tensor to torch: it loads lazily and costs nothing until
        # read).
        if build is not zero_stride_bomb:
            assert outcome['torch.load'].startswith('UnpicklingError'), \
                outcome
        for path_name in ('mmgcvit', 'mmengine', 'init_cfg'):
            assert refusal in outcome[path_name], outcome
            assert outcome[path_name].startswith('CheckpointError'), outcome
            assert '\n' not in outcome[path_name]
            assert 'MMGCVIT_TRUST_CHECKPOINT=' in outcome[path_name]


def test_use_after_free_file_reads_freed_memory_unchecked(tmp_path):
    """The harm the table's first file does without the reader."""
    use_after_free(tmp_path / 'uaf.pth')
    unchecked = python(LOAD, tmp_path / 'uaf.pth', 'unchecked', timeout=60)
    assert unchecked.returncode != 0 or json.loads(
        unchecked.stdout) != [0, 1, 2, 3, 4], unchecked.stdout


VERDICTS = '''
import argparse, json, sys, threading, torch, numpy as np
import mmdet.models, mmseg.models
from mmengine.logging import HistoryBuffer
path = sys.argv[1]
probes = {'array': np.arange(3.), 'scalar': np.float64(2.),
          'buffer': HistoryBuffer([1.], [1]),
          'namespace': argparse.Namespace(lr=0.1)}
def verdicts():
    out = {}
    for name, value in probes.items():
        torch.save(value, f'{path}.{name}')
        try:
            torch.load(f'{path}.{name}', weights_only=True)
            out[name] = 'loaded'
        except Exception as err:
            out[name] = type(err).__name__
    return out
before = (verdicts(), sorted(map(str, torch.serialization.get_safe_globals())))
import mmgcvit
from mmgcvit.checkpoint import load_checkpoint
after_import = (verdicts(),
                sorted(map(str, torch.serialization.get_safe_globals())))
# Another thread loads while mmgcvit loads a file with a Namespace.
torch.save({'state_dict': {}, 'args': probes['namespace']}, path)
seen, stop = set(), threading.Event()
def other_thread():
    while not stop.is_set():
        try:
            torch.load(f'{path}.namespace', weights_only=True)
            seen.add('loaded')
        except Exception:
            seen.add('refused')
thread = threading.Thread(target=other_thread)
thread.start()
for _ in range(200):
    loaded = load_checkpoint(path)
stop.set()
thread.join()
torch.serialization.add_safe_globals([argparse.Namespace])  # the user's own
load_checkpoint(path)
print(json.dumps(dict(
    before=before, after_import=after_import, other_thread=sorted(seen),
    args=vars(loaded['args']),
    user_entry=argparse.Namespace in torch.serialization.get_safe_globals())))
'''


def test_import_and_loading_leave_torch_allow_list_as_they_found_it(
        tmp_path):
    result = python(VERDICTS, tmp_path / 'probe.pth')
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome['before'] == outcome['after_import']
    assert set(outcome['before'][0].values()) == {'UnpicklingError'}
    assert outcome['other_thread'] == ['refused']
    assert outcome['args'] == {'lr': 0.1}
    assert outcome['user_entry'] is True


def test_mmengine_checkpoint_values_read_as_written(tmp_path):
    """A stock mmengine checkpoint (numpy, HistoryBuffer, Counter) reads
    with the same values as torch's unchecked unpickler gives."""
    hub = {'log_scalars': {'loss': HistoryBuffer([1.5, 2.5], [1, 2])},
           'runtime_info': {'metric': np.float32(0.25),
                            'key': np.arange(6, dtype='>i4').reshape(2, 3)}}
    import collections
    checkpoint = dict(state_dict=collections.OrderedDict(w=torch.ones(2)),
                      message_hub=hub,
                      scheduler={'milestones': collections.Counter([8, 11])})
    checkpoint['state_dict']._metadata = {'': {'version': 2}}
    torch.save(checkpoint, tmp_path / 'ckpt.pth')
    loaded = load_checkpoint(tmp_path / 'ckpt.pth')
    buffer = loaded['message_hub']['log_scalars']['loss']
    assert type(buffer) is HistoryBuffer and buffer.mean() == 4 / 3
    assert [a.tolist() for a in buffer.data] == [[1.5, 2.5], [1, 2]]
    info = loaded['message_hub']['runtime_info']
    assert type(info['metric']) is np.float32 and info['metric'] == 0.25
    assert info['key'].dtype == np.dtype('>i4') and info['key'].flags.owndata
    assert info['key'].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert loaded['scheduler']['milestones'] == collections.Counter([8, 11])
    assert loaded['state_dict']._metadata == {'': {'version': 2}}
    assert HistoryBuffer._statistics_methods.keys() == {
        'min', 'max', 'current', 'mean'}


def test_trusted_file_is_the_one_opt_in(tmp_path, monkeypatch):
    path = tmp_path / 'custom.pth'
    torch.save({'state_dict': {}, 'extra': slice(1, 2)}, path)
    with pytest.raises(CheckpointError, match='builtins.slice'):
        load_checkpoint(path)
    monkeypatch.setenv('MMGCVIT_TRUST_CHECKPOINT', str(tmp_path / 'other'))
    with pytest.raises(CheckpointError, match='builtins.slice'):
        load_checkpoint(path)
    monkeypatch.setenv('MMGCVIT_TRUST_CHECKPOINT', str(path))
    assert load_checkpoint(path)['extra'] == slice(1, 2)


# --- downloads -------------------------------------------------------------


def reply(status, headers, chunk=b'', times=0, pause=0.):
    """A server behaviour: ``status`` and ``headers``, then ``chunk``
    ``times`` over, ``pause`` seconds apart."""
    def behaviour(handler):
        handler.send_response(status)
        for header in headers.items():
            handler.send_header(*header)
        handler.end_headers()
        try:
            for _ in range(times):
                handler.wfile.write(chunk)
                handler.wfile.flush()
                time.sleep(pause)
        except OSError:
            pass  # the client gave up
    return behaviour


trickle = reply(200, {'Content-Length': '1000'}, b'x', 20, 0.5)


@pytest.mark.parametrize('behaviour,setting,message', [
    (trickle, ('MMGCVIT_DOWNLOAD_TIMEOUT', '2'),
     'took longer than MMGCVIT_DOWNLOAD_TIMEOUT=2 s'),
    (reply(200, {}, b'\0' * 65536, 10**6),
     ('MMGCVIT_DOWNLOAD_MAX_BYTES', '1000000'),
     'larger than MMGCVIT_DOWNLOAD_MAX_BYTES=1e+06'),
    (reply(302, {'Location': 'ftp://127.0.0.1/model.pth'}), None,
     'redirects to a ftp URL'),
    (reply(200, {'Content-Length': 'abc'}), None, "Content-Length 'abc'"),
])
def test_misbehaving_servers_refused_in_one_line(
        serve, download_cache, monkeypatch, behaviour, setting, message):
    if setting:
        monkeypatch.setenv(*setting)
    server = serve()
    server.custom['model.pth'] = behaviour
    url = server.url('model.pth') + '?token=SECRET'
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=re.escape(message)) as info:
        load_checkpoint(url)
    assert time.monotonic() - start < 30
    assert 'SECRET' not in str(info.value) and '\n' not in str(info.value)
    assert not [p for p in download_cache.rglob('*') if p.is_file()]


def serving_shell(serve, tmp_path, name):
    """A loopback server with the ``shell`` file at ``name``; its URL."""
    shell(tmp_path / 'hostile.pth')
    server = serve()
    server.files[name] = (tmp_path / 'hostile.pth').read_bytes()
    return server, server.url(name)


def test_symlinked_cache_folder_deletes_nothing(tmp_path, serve,
                                                download_cache):
    server, url = serving_shell(serve, tmp_path, 'model.pth')
    victim = tmp_path / 'elsewhere' / 'model.pth'
    victim.parent.mkdir()
    victim.write_bytes(b'precious')
    folder = cached_path(url).rsplit('/', 1)[0]
    os.makedirs(os.path.dirname(folder))
    os.symlink(victim.parent, folder)
    with pytest.raises(CheckpointError, match='is a symlink'):
        load_checkpoint(url)
    assert victim.read_bytes() == b'precious' and not server.requests


def test_refused_download_is_not_cached_and_names_stay_in_cache(
        tmp_path, serve, download_cache):
    server, url = serving_shell(serve, tmp_path, 'a/..')
    assert cached_path(url).startswith(str(download_cache))
    for _ in range(2):
        with pytest.raises(CheckpointError, match='posix.system'):
            load_checkpoint(url)
    assert len(server.requests) == 2 and not (tmp_path / 'marker').exists()
    assert not [p for p in download_cache.rglob('*') if p.is_file()]


@pytest.mark.parametrize('name', ['model-ABCDEF12.pth', 'model-abc1234.pth'])
def test_hash_like_names_are_checked(tmp_path, serve, download_cache, name):
    server = serve()
    torch.save({'w': torch.ones(1)}, tmp_path / 'm.pth')
    server.files[name] = (tmp_path / 'm.pth').read_bytes()
    with pytest.raises(CheckpointError, match='not the .* its file name'):
        load_checkpoint(server.url(name))


def test_partial_download_removed_when_killed(tmp_path, serve,
                                              download_cache):
    server = serve()
    server.custom['model.pth'] = trickle
    script = ('import sys; from mmgcvit.checkpoint import load_checkpoint; '
              'load_checkpoint(sys.argv[1])')
    process = subprocess.Popen([sys.executable, '-c', script,
                                server.url('model.pth')],
                               env=dict(os.environ))
    deadline = time.monotonic() + 60
    while not list(download_cache.rglob('*.tmp')):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    process.terminate()
    process.wait(30)
    assert not [p for p in download_cache.rglob('*') if p.is_file()]


# --- the tools ---------------------------------------------------------------


def test_mmdet_test_tool_runs_no_code_from_a_url(tmp_path, coco_root, serve,
                                                 download_cache):
    """mmdet's own tools/test.py, given a checkpoint URL (mmengine alone
    unpickles URLs with weights_only=False)."""
    server, url = serving_shell(serve, tmp_path, 'det.pth')
    config = small_detection_config(tmp_path / 'det.py', coco_root,
                                    arch='xxtiny', images=2)
    rc, output = run_tool([MMDET_TEST, config, url,
                           '--work-dir', tmp_path / 'work'], cwd=tmp_path)
    assert server.requests == ['/det.pth']
    assert rc != 0 and 'posix.system' in output, output[-3000:]
    assert not (tmp_path / 'marker').exists()


@pytest.fixture(scope='module')
def detectors(tmp_path_factory, coco_root):
    """A small GC ViT-XXT detector config, and the weights of its model and
    of the GC ViT-T one."""
    from mmdet.registry import MODELS
    folder = tmp_path_factory.mktemp('detectors')
    init_default_scope('mmdet')
    configs, weights = {}, {}
    for arch in ('xxtiny', 'tiny'):
        configs[arch] = small_detection_config(folder / f'{arch}.py',
                                               coco_root, arch=arch, images=2)
        weights[arch] = MODELS.build(
            Config.fromfile(configs[arch]).model).state_dict()
    return configs['xxtiny'], weights['xxtiny'], weights['tiny']


def evaluate(config, content, tmp_path, *args):
    """tools/test.py on a checkpoint of ``content`` (weights, or a bare
    tensor)."""
    torch.save(content if isinstance(content, torch.Tensor) else
               {'state_dict': content}, tmp_path / 'model.pth')
    return run_tool([TOOLS / 'test.py', config, tmp_path / 'model.pth',
                     '--work-dir', tmp_path / 'work', *args], cwd=tmp_path)


@pytest.mark.parametrize('edit,message', [
    (lambda state, other: {k: v.numpy() for k, v in state.items()},
     'holds values that are not tensors'),
    (lambda state, other: dict(state, **{
        'backbone.patch_embed.proj.weight':
        state['backbone.patch_embed.proj.weight'].tolist()}),
     'backbone.patch_embed.proj.weight (list)'),
    (lambda state, other: dict(state, **{
        'backbone.patch_embed.proj.weight':
        state['backbone.patch_embed.proj.weight'].long()}),
     'of a kind the model cannot take: backbone.patch_embed.proj.weight'),
    (lambda state, other: other, 'unused by the model'),
    (lambda state, other: state['backbone.patch_embed.proj.weight'],
     'holds a Tensor, not a dict of weights'),
])
def test_test_tool_refuses_checkpoints_that_are_not_the_model(
        tmp_path, detectors, edit, message):
    """numpy weights, a weight as a list or as integers, GC ViT-T weights
    into an XXT config, a bare tensor: tools/test.py would score a model
    that is not the file (or end in a traceback)."""
    config, state, other = detectors
    rc, output = evaluate(config, edit(state, other), tmp_path)
    assert_one_line_error(rc, output, message)
    assert saved_test_metrics(tmp_path / 'work') is None


def test_partial_checkpoint_is_an_error_unless_allowed(detectors, tmp_path):
    """The detector's backbone alone (``mmgcvit.LoadReportHook``)."""
    config, whole, _ = detectors
    backbone = {k: v for k, v in whole.items() if k.startswith('backbone.')}
    rc, output = evaluate(config, backbone, tmp_path)
    assert_one_line_error(rc, output, 'model weights absent from it keep '
                          'their initialisation', 'neck.',
                          '--allow-partial-checkpoint')
    rc, output = evaluate(config, backbone, tmp_path,
                          '--allow-partial-checkpoint')
    assert rc == 0, output[-3000:]
    assert 'model weights absent from it keep their initialisation' in output


def test_evaluation_without_metrics_is_an_error(detectors, tmp_path):
    """No detection scores above the threshold: CocoMetric returns {}
    (``mmgcvit.CheckedTestLoop``)."""
    config, whole, _ = detectors
    rc, output = evaluate(config, whole, tmp_path, '--cfg-options',
                          'model.test_cfg.rcnn.score_thr=1.01')
    assert_one_line_error(rc, output, 'produced no metrics')


def test_one_loading_path():
    """No module of the package or the tools but the loader calls torch's
    unpickling entry points."""
    callers = []
    for path in sorted([*(REPO / 'mmgcvit').rglob('*.py'),
                        *(REPO / 'tools').rglob('*.py')]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(
                    '.')[-1] in ('load', 'load_state_dict_from_url',
                                 'load_url') and 'torch' in ast.unparse(
                                     node.func):
                callers.append((str(path.relative_to(REPO)),
                                ast.unparse(node.func)))
    assert callers == [('mmgcvit/checkpoint/loading.py', 'torch.load')] * 2


# --- careless weights ---------------------------------------------------------


def test_non_finite_weights_refused_by_name(tmp_path):
    """Through GCViT's init_cfg and mmengine's loader (``load_from``, the
    test checkpoint)."""
    state = GCViT(arch='xxtiny').state_dict()
    state['levels.0.blocks.0.attn.qkv.weight'][0, 0] = float('nan')
    state['levels.2.blocks.1.mlp.fc2.bias'][3] = float('inf')
    path = str(tmp_path / 'nan.pth')
    torch.save(dict(state_dict=state), path)
    model = GCViT(arch='xxtiny', init_cfg=dict(type='Pretrained',
                                               checkpoint=path))
    for load in (model.init_weights,
                 lambda: CheckpointLoader.load_checkpoint(path)):
        with pytest.raises(CheckpointError) as info:
            load()
        message = str(info.value)
        assert 'NaN or Inf values in 2 weights' in message
        assert 'levels.0.blocks.0.attn.qkv.weight' in message
        assert 'levels.2.blocks.1.mlp.fc2.bias' in message


def test_missing_backbone_weights_warn_or_fail(tmp_path):
    state = GCViT(arch='xxtiny').state_dict()
    qkv = [k for k in state if k.endswith('attn.qkv.weight')]
    for key in qkv:
        del state[key]
    path = tmp_path / 'partial.pth'
    torch.save(dict(state_dict=state), path)
    model = GCViT(arch='xxtiny', init_cfg=dict(type='Pretrained',
                                               checkpoint=str(path)))
    with mmengine_log() as messages:
        model.init_weights()
    warnings = [message for level, message in messages if level == 'WARNING']
    assert any(f'{len(qkv)} backbone weights missing' in w for w in warnings)
    strict = GCViT(arch='xxtiny', init_cfg=dict(
        type='Pretrained', checkpoint=str(path), strict=True))
    with pytest.raises(CheckpointError, match=f'{len(qkv)} backbone weights '
                       'missing.*drop init_cfg'):
        strict.init_weights()


def half_of(save):
    """The first half of the bytes ``save(path)`` writes."""
    def content(path):
        save(path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    return content


WEIGHTS = {'w': torch.arange(4096.)}


@pytest.mark.parametrize('name,content,expected', [
    ('model.pth', b'', 'empty file'),
    ('model.pth', b'epoch 12 loss 0.3\n', 'not a torch zip archive'),
    ('model.pth', b'PK\x03\x04 truncated zip', 'not a torch zip archive'),
    ('model.pth', half_of(lambda p: torch.save(WEIGHTS, p)),
     'truncated or corrupt'),
    ('model.safetensors', half_of(lambda p: save_file(WEIGHTS, str(p))),
     'truncated or corrupt'),
    ('model.pth', None, 'does not exist: fix the path'),
])
def test_unreadable_files_named(tmp_path, name, content, expected):
    path = tmp_path / name
    if callable(content):
        content(path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(path)
    assert '\n' not in str(info.value)
