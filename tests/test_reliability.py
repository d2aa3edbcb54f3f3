"""Atomic checkpoints and pre-flight errors of the training tools."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_tool, small_detection_config
from mmengine.config import Config
from mmengine.fileio.backends import LocalBackend
from mmengine.runner import save_checkpoint

from mmgcvit.checkpoint import CheckpointError, load_checkpoint
from mmgcvit.cli.launch import run_context
from mmgcvit.engine import atomic_checkpoint_writes
from mmgcvit.utils.fileio import atomic_open

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / 'tools' / 'train.py'


# --- atomic checkpoint writes ---------------------------------------------
def test_atomic_open_keeps_target_on_failure(tmp_path):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'complete old checkpoint')
    with pytest.raises(RuntimeError, match='disk full'):
        with atomic_open(target, 'wb') as f:
            f.write(b'half of the new')
            raise RuntimeError('disk full')
    assert target.read_bytes() == b'complete old checkpoint'
    assert os.listdir(tmp_path) == ['epoch_1.pth'], 'temporary file left'


def test_mmengine_save_checkpoint_is_atomic(tmp_path):
    put = LocalBackend.put
    target = tmp_path / 'sub' / 'iter_2.pth'
    with atomic_checkpoint_writes():
        save_checkpoint({'state_dict': {'w': torch.arange(3.)}}, str(target))
    assert LocalBackend.put is put, 'leaving the context restores mmengine'
    assert load_checkpoint(target)['state_dict']['w'].tolist() == [0., 1., 2.]
    assert os.listdir(target.parent) == ['iter_2.pth']
    # Group-readable like a plain open() (mkstemp would make it 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


KILLED_SAVE = '''
import builtins, sys, time
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

work_dir, slow_name, atomic = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
if atomic:
    from mmgcvit.engine import atomic_checkpoint_writes
    writes = atomic_checkpoint_writes()  # for this whole process
    writes.__enter__()


class HalfThenHang:
    """A file whose first write stops halfway, as a job killed mid-write."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        print('HALF-WRITTEN', flush=True)
        time.sleep(600)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


real_open = builtins.open


def open_slowly(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    name = str(file)
    if mode[0] in 'wx' and name.split('/')[-1].lstrip('.').startswith(
            slow_name):
        return HalfThenHang(f)
    return f


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
    default_hooks=dict(checkpoint=dict(
        type='CheckpointHook', interval=1, by_epoch=False)))


class SlowFromSecondSave(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter == 1:  # runs before CheckpointHook saves iter_2
            builtins.open = open_slowly


runner.register_hook(SlowFromSecondSave(), 'VERY_HIGH')
runner.train()
'''


def kill_during_second_save(tmp_path, slow_name, atomic):
    """Train a toy model with a checkpoint every iteration, SIGKILL it while
    the second checkpoint's ``slow_name`` file is half written."""
    script = tmp_path / 'killed_save.py'
    script.write_text(KILLED_SAVE)
    work_dir = tmp_path / 'work'
    proc = subprocess.Popen(
        [sys.executable, str(script), str(work_dir), slow_name,
         '1' if atomic else '0'],
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


@pytest.mark.parametrize('slow_name', ['iter_2.pth', 'last_checkpoint'])
def test_kill_during_save_leaves_loadable_last_checkpoint(tmp_path,
                                                          slow_name):
    work_dir = kill_during_second_save(tmp_path, slow_name, atomic=True)
    last = Path((work_dir / 'last_checkpoint').read_text())
    assert last == work_dir / 'iter_1.pth'
    assert load_checkpoint(last)['meta']['iter'] == 1  # complete
    saved = sorted(p.name for p in work_dir.glob('*.pth'))
    assert saved == ['iter_1.pth'] + (['iter_2.pth'] if slow_name ==
                                      'last_checkpoint' else []), saved
    # The partial bytes are only in a hidden temporary file, which the next
    # run of our tools removes (its writer is dead).
    partial = [p for p in work_dir.iterdir() if p.name.endswith('.tmp')]
    assert len(partial) == 1 and partial[0].name.startswith(f'.{slow_name}.')
    before = {p.name for p in work_dir.iterdir()}
    with run_context(Config(dict(work_dir=str(work_dir)))):
        assert {p.name for p in work_dir.iterdir()} == before - {
            partial[0].name}


@pytest.mark.parametrize('slow_name', ['iter_2.pth', 'last_checkpoint'])
def test_kill_during_upstream_save_corrupts(tmp_path, slow_name):
    """Without the patch the same kill corrupts the file (what the test
    above guards against)."""
    work_dir = kill_during_second_save(tmp_path, slow_name, atomic=False)
    if slow_name == 'iter_2.pth':
        with pytest.raises(CheckpointError, match='truncated or corrupt'):
            load_checkpoint(work_dir / 'iter_2.pth')
    else:
        last = (work_dir / 'last_checkpoint').read_text()
        assert not Path(last).is_file(), last


# --- pre-flight errors -------------------------------------------------------

def assert_one_line_error(rc, output, *expected):
    """The tool failed with one ``error:`` line naming ``expected``, before
    training (no traceback, no iteration logged)."""
    assert rc != 0, output[-3000:]
    assert 'Traceback' not in output, output[-3000:]
    assert 'Epoch(train)' not in output and 'Iter(train)' not in output
    errors = [line for line in output.splitlines() if ': error: ' in line]
    assert len(errors) == 1, output[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def small_config(tmp_path, coco_root):
    return small_detection_config(tmp_path / 'small.py', coco_root,
                                  arch='xxtiny', images=2)


def test_unknown_config_path(tmp_path):
    rc, output = run_tool([TRAIN, tmp_path / 'nope.py'], cwd=tmp_path)
    assert_one_line_error(rc, output, 'nope.py', 'does not exist',
                          'pass the path of an mmdet/mmseg config')


@pytest.mark.parametrize('override, key', [
    ('train_dataloader.dataset.data_root=/no/such/coco/',
     'train_dataloader.dataset.data_root'),
    ('train_dataloader.dataset.ann_file=annotations/missing.json',
     'train_dataloader.dataset.ann_file'),
    ('val_dataloader.dataset.data_prefix.img=val2099/',
     'val_dataloader.dataset.data_prefix.img'),
    ('val_evaluator.ann_file=/no/such/instances_val2017.json',
     'val_evaluator.ann_file'),
])
def test_missing_data_named_with_its_config_key(small_config, tmp_path,
                                                override, key):
    work_dir = tmp_path / 'work'
    rc, output = run_tool([TRAIN, small_config, '--work-dir', work_dir,
                           '--cfg-options', override], cwd=tmp_path)
    assert_one_line_error(rc, output, 'does not exist', f'fix {key}')
    assert not list(work_dir.glob('*.pth'))


def test_missing_pretrained_checkpoint(tmp_path, coco_root):
    """A local ImageNet checkpoint (the --cfg-options alternative to the
    release URL) that is not there is named before any work starts."""
    config = small_detection_config(tmp_path / 'small.py', coco_root,
                                    arch='xxtiny', images=2)
    config.write_text(config.read_text().replace(
        'init_cfg=None', "init_cfg=dict(type='Pretrained', "
        "checkpoint='checkpoints/gcvit_1k_tiny.pth.tar')"))
    rc, output = run_tool([TRAIN, config, '--work-dir', tmp_path / 'work'],
                          cwd=tmp_path)
    assert_one_line_error(rc, output, 'checkpoints/gcvit_1k_tiny.pth.tar',
                          'model.backbone.init_cfg.checkpoint',
                          '--cfg-options model.backbone.init_cfg=None')


def test_resume_from_missing_checkpoint(small_config, tmp_path):
    rc, output = run_tool([TRAIN, small_config, '--work-dir', tmp_path / 'w',
                           '--resume', tmp_path / 'w' / 'epoch_3.pth'],
                          cwd=tmp_path)
    assert_one_line_error(rc, output, 'epoch_3.pth', '--resume',
                          'does not exist', '--resume alone')


def test_auto_resume_with_dangling_last_checkpoint(small_config, tmp_path):
    work_dir = tmp_path / 'w'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_8.pth'))
    rc, output = run_tool([TRAIN, small_config, '--work-dir', work_dir,
                           '--resume'], cwd=tmp_path)
    assert_one_line_error(rc, output, 'iter_8.pth', 'last_checkpoint',
                          'delete')


def test_preflight_passes_valid_config_in_process(small_config):
    """The checks accept the generated data (no false alarms): the runner
    builds and the checks of every split pass."""
    from mmgcvit.cli.launch import build_runner, load_config
    from mmgcvit.cli.preflight import check_data, check_pretrained
    cfg = load_config(str(small_config), work_dir=str(small_config.parent))
    for split in ('train', 'val', 'test'):
        check_data(cfg, split)
    check_pretrained(cfg)
    build_runner(cfg)
