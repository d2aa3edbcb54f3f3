"""Atomic checkpoints (``mmgcvit.AtomicCheckpointHook`` and the
``mmgcvit_atomic`` file backend) and the pre-flight errors of the train
loops."""
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
from helpers import (TRAIN, assert_one_line_error, last_checkpoint,
                     run_tool, small_detection_config)
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.engine import AtomicCheckpointHook, PreflightError
from mmgcvit.engine.preflight import check_checkpoint_flags, check_data

# --- atomic checkpoint writes ---------------------------------------------
KILLED_SAVE = '''
import builtins, os, sys, time
import torch
import mmgcvit.engine  # noqa: F401  (a config's custom_imports)
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

work_dir, slow_name = sys.argv[1:3]


class HalfThenHang:
    """A file whose first write stops halfway, as a job killed mid-write
    (both writers only call write() inside a with block)."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        print('HALF-WRITTEN', flush=True)
        time.sleep(600)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)


real_open = builtins.open


def open_slowly(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    slow = os.path.basename(str(file)).lstrip('.').startswith(slow_name)
    return HalfThenHang(f) if mode[0] in 'wx' and slow else f


class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(512, 512)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


runner = Runner(
    model=Toy(), work_dir=work_dir,
    train_dataloader=dict(
        dataset=[dict(inputs=torch.randn(512)) for _ in range(8)],
        sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
        collate_fn=dict(type='default_collate')),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
    train_cfg=dict(by_epoch=False, max_iters=4),
    default_hooks=dict(checkpoint=dict(  # what our configs select
        type='mmgcvit.AtomicCheckpointHook', interval=1, by_epoch=False,
        backend_args=dict(backend='mmgcvit_atomic'))))


class SlowFromSecondSave(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter == 1:  # runs before CheckpointHook saves iter_2
            builtins.open = open_slowly


runner.register_hook(SlowFromSecondSave(), 'VERY_HIGH')
runner.train()
'''


def kill_during_second_save(tmp_path, slow_name):
    """Train a toy model with a checkpoint every iteration, SIGKILL it while
    the second checkpoint's ``slow_name`` file is half written (mmengine's
    own hook and backend would leave it truncated under its final name)."""
    script = tmp_path / 'killed_save.py'
    script.write_text(KILLED_SAVE)
    work_dir = tmp_path / 'work'
    proc = subprocess.Popen(
        [sys.executable, str(script), str(work_dir), slow_name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if 'HALF-WRITTEN' in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert any('HALF-WRITTEN' in line for line in lines), ''.join(lines)
    return work_dir


def test_kill_during_save_leaves_loadable_last_checkpoint(tmp_path):
    work_dir = kill_during_second_save(tmp_path, 'iter_2.pth')
    last = last_checkpoint(work_dir)
    assert last == work_dir / 'iter_1.pth'
    assert load_checkpoint(last)['meta']['iter'] == 1  # complete
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_1.pth']
    # Group-readable like a plain open() (mkstemp would make it 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert last.stat().st_mode & 0o777 == 0o666 & ~umask
    # The partial bytes are only in a hidden temporary file, which the hook
    # removes when the next run starts (its writer is dead).
    partial = [p for p in work_dir.iterdir() if p.name.endswith('.tmp')]
    assert len(partial) == 1 and partial[0].name.startswith('.iter_2.pth.')
    before = {p.name for p in work_dir.iterdir()}
    AtomicCheckpointHook().before_train(SimpleNamespace(
        work_dir=str(work_dir), logger=MMLogger.get_current_instance()))
    assert {p.name for p in work_dir.iterdir()} == before - {partial[0].name}


def test_kill_inside_mmengines_last_checkpoint_write_is_named(tmp_path):
    """The window left (docs/reliability.md): mmengine's hook writes
    ``last_checkpoint`` with a plain ``open`` before ours rewrites it
    atomically; a kill inside that write leaves a partial path, which
    ``--resume`` then refuses in one line instead of loading."""
    work_dir = kill_during_second_save(tmp_path, 'last_checkpoint')
    assert load_checkpoint(work_dir / 'iter_2.pth')['meta']['iter'] == 2
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(work_dir)))
    with pytest.raises(PreflightError, match='last_checkpoint.*delete'):
        check_checkpoint_flags(cfg)


# --- pre-flight errors -------------------------------------------------------

@pytest.fixture
def small_config(tmp_path, coco_root):
    return small_detection_config(tmp_path / 'small.py', coco_root,
                                  arch='xxtiny', images=2)


def test_unknown_config_path(tmp_path):
    rc, output = run_tool([TRAIN, tmp_path / 'nope.py'], cwd=tmp_path)
    assert_one_line_error(rc, output, 'nope.py', 'does not exist',
                          'pass the path of an mmdet/mmseg config')


def test_missing_train_data_stops_the_tool_in_one_line(small_config,
                                                      tmp_path):
    work_dir = tmp_path / 'work'
    rc, output = run_tool([TRAIN, small_config, '--work-dir', work_dir,
                           '--cfg-options',
                           'train_dataloader.dataset.data_root=/no/coco/'],
                          cwd=tmp_path)
    assert_one_line_error(rc, output, '/no/coco/ does not exist',
                          'fix train_dataloader.dataset.data_root')
    assert not list(work_dir.glob('*.pth'))


@pytest.mark.parametrize('key, value, split', [
    ('train_dataloader.dataset.ann_file', 'annotations/missing.json',
     'train'),
    ('val_dataloader.dataset.data_prefix.img', 'val2099/', 'val'),
    ('test_evaluator.ann_file', '/no/such/instances_val2017.json', 'test'),
])
def test_missing_data_named_with_its_config_key(small_config, key, value,
                                                split):
    cfg = Config.fromfile(small_config)
    check_data(cfg, split)
    cfg.merge_from_dict({key: value})
    with pytest.raises(PreflightError, match=f'{value} does not exist: fix '
                       f'{key} in the config'):
        check_data(cfg, split)


@pytest.mark.parametrize('resume,load_from,last,message', [
    (False, 'epoch_3.pth', None, 'epoch_3.pth named by load_from .*'
     r'pass an existing \.pth'),
    (True, 'epoch_3.pth', None, 'epoch_3.pth named by --resume does not '
     'exist: .*--resume alone'),
    (True, None, b'iter_8.pth', 'iter_8.pth named by .*last_checkpoint.*'
     'delete'),
    (True, None, b'\xff\xfe\x00garbage', 'last_checkpoint.*not the text '
     'path of a checkpoint.*delete'),
])
def test_checkpoint_flags_name_what_is_missing(tmp_path, resume, load_from,
                                               last, message):
    if last is not None:
        (tmp_path / 'last_checkpoint').write_bytes(last)
    cfg = Config(dict(resume=resume, work_dir=str(tmp_path), load_from=(
        load_from and str(tmp_path / load_from))))
    with pytest.raises(PreflightError, match=message):
        check_checkpoint_flags(cfg)
