"""Hostile and careless checkpoints: nothing a file holds may run code,
corrupt memory or change the process; bad weights are refused by name.

Every hostile file is loaded in a fresh process, where a crash shows, and
is first shown to do its harm when loaded without checks (so each test can
fail)."""
import ast
import json
import subprocess
import sys

import pytest
import torch
from helpers import (REPO, TINY, mmengine_log, payload_history_getattr,
                     payload_history_rebuild, payload_history_remap,
                     payload_history_setstate, payload_object_array,
                     payload_object_scalar, payload_shell, run_tool,
                     small_detection_config)

from mmgcvit.checkpoint import CheckpointError, load_checkpoint
from mmgcvit.models import GCViT

# Loads PATH as upstream tools do (torch.load's default) and through
# mmgcvit's loader, then reports what happened as JSON.
LOAD = '''
import json, os, sys, torch
import mmgcvit
from mmengine.logging import HistoryBuffer
from mmgcvit.checkpoint import load_checkpoint
path, marker = sys.argv[1:3]
outcome = {}
for name, load in (('torch.load', torch.load), ('mmgcvit', load_checkpoint)):
    try:
        load(path)
        outcome[name] = 'loaded'
    except Exception as err:
        outcome[name] = f'{type(err).__name__}: {err}'
outcome['statistics'] = {k: v.__qualname__
                         for k, v in HistoryBuffer._statistics_methods.items()}
outcome['marker'] = os.path.exists(marker)
print(json.dumps(outcome))
'''

UNCHECKED = '''
import sys, torch
from mmengine.logging import HistoryBuffer
print(repr(torch.load(sys.argv[1], weights_only=False))[:80])
print(sorted(HistoryBuffer._statistics_methods.items()))
'''

BUILTIN_STATISTICS = {name: f'HistoryBuffer.{name}'
                      for name in ('min', 'max', 'current', 'mean')}


def python(script, *args):
    return subprocess.run([sys.executable, '-c', script, *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def load_in_fresh_process(path, marker):
    result = python(LOAD, path, marker)
    assert result.returncode == 0, f'loading crashed the process:\n' \
        f'{result.stdout}{result.stderr[-3000:]}'
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('build,harm,refusal', [
    (payload_object_scalar, 'crash', 'numpy dtype object'),
    (payload_object_array, 'crash', 'numpy dtype object'),
    (payload_history_remap, 'mean -> max', 'not HistoryBuffer'),
    (payload_history_getattr, '__subclasses__', '__subclasses__'),
    (payload_history_setstate, None, "fields ['__setstate__'"),
    (payload_history_rebuild, None, 'Can only build'),
])
def test_hostile_pickle_refused(tmp_path, build, harm, refusal):
    path = tmp_path / 'hostile.pth'
    build(path)
    unchecked = python(UNCHECKED, path)
    if harm == 'crash':
        assert unchecked.returncode < 0, 'the payload should crash unchecked'
    elif harm == 'mean -> max':
        assert "('mean', <function HistoryBuffer.max" in unchecked.stdout
    elif harm:
        assert f"('{harm}'," in unchecked.stdout, unchecked.stdout
    outcome = load_in_fresh_process(path, tmp_path / 'marker')
    for loader in ('torch.load', 'mmgcvit'):
        assert refusal in outcome[loader], outcome
    assert 'refuses to load' in outcome['mmgcvit'], outcome
    # mmengine fills the class's table when a buffer is created; nothing
    # else may be in it.
    assert outcome['statistics'].items() <= BUILTIN_STATISTICS.items()


# torch's unpickling entry points, by full name and (torch.hub's URL
# loaders, however imported) by last name; mmgcvit.checkpoint.loading alone
# may call them, with weights_only=True.
UNPICKLERS = {'torch.load', 'torch.hub.load'}
URL_UNPICKLERS = {'load_state_dict_from_url', 'load_url'}


def test_one_loading_path():
    """No module of the package or the tools but the loader calls torch's
    unpickling entry points."""
    callers = []
    for path in sorted([*(REPO / 'mmgcvit').rglob('*.py'),
                        *(REPO / 'tools').rglob('*.py')]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in UNPICKLERS or name.split('.')[-1] in URL_UNPICKLERS:
                weights_only = any(
                    k.arg == 'weights_only' and ast.unparse(k.value) == 'True'
                    for k in node.keywords)
                callers.append((str(path.relative_to(REPO)), name,
                                weights_only))
    assert callers == [('mmgcvit/checkpoint/loading.py', 'torch.load', True)]


def test_shell_command_not_run_from_a_file(tmp_path):
    path, marker = tmp_path / 'hostile.pth', tmp_path / 'marker'
    payload_shell(path, marker)
    assert python(UNCHECKED, path).returncode == 0 and marker.exists()
    marker.unlink()
    outcome = load_in_fresh_process(path, marker)
    assert 'posix.system' in outcome['mmgcvit'] and not marker.exists()


BACKBONE_FROM_URL = '''
import sys
from mmgcvit.models import GCViT
from mmgcvit.checkpoint import CheckpointError
model = GCViT(arch='xxtiny', init_cfg=dict(type='Pretrained',
                                           checkpoint=sys.argv[1]))
try:
    model.init_weights()
except CheckpointError as err:
    print('REFUSED', err)
'''


def test_shell_command_not_run_from_a_url(tmp_path, coco_root, serve,
                                          download_cache):
    """The URL paths: a backbone's init_cfg and tools/train.py's
    load_from (mmengine alone loads URLs with weights_only=False)."""
    marker = tmp_path / 'marker'
    payload_shell(tmp_path / 'gcvit.pth', marker)
    server = serve()
    server.files['gcvit.pth'] = (tmp_path / 'gcvit.pth').read_bytes()
    url = server.url('gcvit.pth')
    result = python(BACKBONE_FROM_URL, url)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'REFUSED' in result.stdout and 'refuses to load' in \
        result.stdout, result.stdout
    config = small_detection_config(tmp_path / 'det.py', coco_root,
                                    arch='xxtiny', images=2)
    rc, output = run_tool(
        [REPO / 'tools' / 'train.py', config, '--work-dir',
         tmp_path / 'work', '--cfg-options', f'load_from={url}'],
        cwd=tmp_path)
    # Refused hostile downloads are not kept: each load fetched it anew.
    assert server.requests == ['/gcvit.pth'] * 2
    assert not list(download_cache.rglob('*.pth'))
    assert rc != 0 and 'refuses to load' in output, output[-3000:]
    assert 'Traceback' not in output, output[-3000:]
    assert not marker.exists()


def nan_checkpoint(path, arch='xxtiny'):
    model = GCViT(arch=arch)
    state = model.state_dict()
    state['levels.0.blocks.0.attn.qkv.weight'][0, 0] = float('nan')
    state['levels.2.blocks.1.mlp.fc2.bias'][3] = float('inf')
    torch.save(dict(state_dict=state), path)


def test_non_finite_backbone_weights_refused_by_name(tmp_path):
    nan_checkpoint(tmp_path / 'nan.pth')
    model = GCViT(arch='xxtiny', init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'nan.pth')))
    with pytest.raises(CheckpointError) as info:
        model.init_weights()
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


@pytest.mark.parametrize('content,expected', [
    (b'', 'empty file'),
    (b'not a checkpoint at all\n', 'not a torch checkpoint'),
    (b'PK\x03\x04 truncated zip', 'truncated or corrupt'),
])
def test_unreadable_files_named(tmp_path, content, expected):
    path = tmp_path / 'model.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(path)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('kwargs,fix', [
    (dict(window_size=0), 'window_size=24'),
    (dict(window_size=7.5), 'window_size=24'),
    (dict(window_size=(7, 7)), 'one per stage'),
    (dict(pretrain_img_size=0), 'pretrain_img_size=224'),
    (dict(pretrain_img_size=100), 'multiple of 32'),
    (dict(drop_path_rate=1.5), r'\[0, 1\)'),
    (dict(attn_drop_rate=-0.1), r'\[0, 1\)'),
    (dict(mlp_ratio=0), 'mlp_ratio=3'),
    (dict(out_indices=2), r'\(2,\)'),
    (dict(out_indices=(0, 4)), 'in 0..3'),
    (dict(frozen_stages=5), '-1..4'),
    (dict(norm_cfg=dict(type='BN')), "dict\\(type='LN'\\)"),
    (dict(init_cfg=[dict(type='Pretrained', checkpoint='x.pth')]),
     "dict\\(type='Pretrained'"),
    (dict(init_cfg=dict(type='Pretrained')), 'PATH_OR_URL'),
    (dict(arch=dict(TINY, embed_dims=0)), 'embed_dims=64'),
])
def test_invalid_arguments_name_the_fix(kwargs, fix):
    kwargs.setdefault('arch', 'xxtiny')
    with pytest.raises((ValueError, TypeError), match=fix):
        GCViT(**kwargs)


def test_prefix_without_dot_is_accepted(tmp_path):
    model = GCViT(arch=TINY)
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    torch.save(dict(state_dict=state), tmp_path / 'detector.pth')
    loaded = GCViT(arch=TINY, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'detector.pth'),
        prefix='backbone'))
    loaded.init_weights()
    assert all(torch.equal(v, model.state_dict()[k])
               for k, v in loaded.state_dict().items())
