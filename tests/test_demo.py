"""``tools/demo.py``: the real demo, as a newcomer runs it, must learn.

Each task runs the full demo once (generated data, ``tools/train.py``,
``tools/test.py``, pictures, curves) from an empty folder and checks the
metrics it reports on the validation split against the thresholds of the
issue (box mAP@0.5 >= 0.5, mIoU >= 50), the files it writes, and that it
writes nothing outside its work dir. A second, shortened run (one epoch /
a few iterations via ``--cfg-options``) must reuse the generated data.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mmcv
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / 'tools' / 'demo.py'
NUM_VAL = 32
# What the demo must reach on its validation split (mIoU in percent).
THRESHOLDS = dict(det=('coco/bbox_mAP_50', 0.5), seg=('mIoU', 50.0))
SHORT = dict(
    det=['train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=8',
         'val_dataloader.dataset.indices=4'],
    seg=['train_cfg.max_iters=4', 'train_cfg.val_interval=4',
         'default_hooks.checkpoint.interval=4',
         'val_dataloader.dataset.indices=4'])


def run_demo(cwd, work_dir, *args):
    """Run the demo from ``cwd``; fail with its output."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, str(DEMO), '--work-dir', str(work_dir), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


@pytest.fixture(scope='module', params=['det', 'seg'])
def demo(request, tmp_path_factory):
    """``(task, cwd, work_dir, output)`` of one full demo run, started in
    an empty folder ``cwd`` with the work dir in another empty folder."""
    task = request.param
    root = tmp_path_factory.mktemp(f'demo_{task}')
    cwd, work_dir = root / 'cwd', root / 'out' / 'work'
    cwd.mkdir()
    output = run_demo(cwd, work_dir, '--task', task)
    return task, cwd, work_dir, output


@pytest.mark.slow
def test_demo_learns(demo):
    task, _, work_dir, output = demo
    summary = json.loads((work_dir / 'demo.json').read_text())
    metric, threshold = THRESHOLDS[task]
    value = summary['metrics'][metric]
    print(f'{task} demo: {metric} {value}, seconds {summary["seconds"]}')
    assert value >= threshold, summary
    # The printed summary matches the saved one.
    printed = re.search(rf'^  {re.escape(metric)}: ([\d.]+)$', output,
                        re.MULTILINE)
    assert printed and float(printed.group(1)) == pytest.approx(
        value, rel=1e-3)
    assert re.search(r'time: .* total \d+ s', output)
    if task == 'det':
        assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(summary['metrics'])
    # Training progress was streamed.
    progress = r'Epoch\(train\) +\[1\]\[\d+/64\]' if task == 'det' else \
        r'Iter\(train\) +\[ *\d+/\d+\]'
    assert re.search(progress, output)


@pytest.mark.slow
def test_demo_writes_pictures_and_curves(demo):
    task, _, work_dir, _ = demo
    summary = json.loads((work_dir / 'demo.json').read_text())
    pictures = sorted(Path(summary['pictures']).glob('*.png'))
    assert len(pictures) == NUM_VAL
    image = mmcv.imread(pictures[0])
    # The visualizer draws on the 128x128 validation image (mmseg puts the
    # ground truth and the prediction side by side).
    assert image.shape[0] == 128 and image.shape[1] in (128, 256)
    curves = mmcv.imread(summary['curves'])
    assert curves.shape[:2] == (360, 1000)
    assert Path(summary['checkpoint']).is_file()
    assert Path(summary['checkpoint']).parent == work_dir / 'train'


@pytest.mark.slow
def test_demo_writes_nothing_outside_work_dir(demo):
    _, cwd, work_dir, _ = demo
    assert list(cwd.iterdir()) == []
    assert list(work_dir.parent.iterdir()) == [work_dir]
    assert sorted(p.name for p in work_dir.iterdir()) == [
        'curves.png', 'data', 'demo.json', 'test', 'train']


@pytest.mark.slow
def test_demo_rerun_reuses_data(demo):
    task, cwd, work_dir, _ = demo
    manifest = work_dir / 'data' / 'manifest.json'
    stamp = manifest.stat().st_mtime_ns
    output = run_demo(cwd, work_dir, '--task', task, '--cfg-options',
                      *SHORT[task])
    assert re.search(r'Reusing the (coco|ade20k) dataset at ', output)
    assert manifest.stat().st_mtime_ns == stamp
    assert json.loads((work_dir / 'demo.json').read_text())['task'] == task
