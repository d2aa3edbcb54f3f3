"""``tools/demo.py``: the real demo, as a newcomer runs it from an empty
folder, must learn (the issue's thresholds: box mAP@0.5 >= 0.5, mIoU >=
50) and write nothing outside its work dir. That a second run reuses the
generated data is the generators' (``tests/test_datasets.py``).
"""
import json
import re
import sys

import mmcv
import pytest
from helpers import REPO, run, saved_test_metrics

DEMO = REPO / 'tools' / 'demo.py'
NUM_VAL = 32
# What the demo must reach on its validation split (mIoU in percent).
THRESHOLDS = dict(det=('coco/bbox_mAP_50', 0.5), seg=('mIoU', 50.0))
LOG_INTERVAL = 16
# The training iterations logged, as (epoch, iteration) or iteration.
PROGRESS = dict(det=r'Epoch\(train\) +\[1\]\[ *(\d+)/64\]',
                seg=r'Iter\(train\) +\[ *(\d+)/200\]')


@pytest.fixture(scope='module', params=['det', 'seg'])
def demo(request, tmp_path_factory):
    """``(task, cwd, work_dir, output)`` of one full demo run, started in
    an empty folder ``cwd`` with the work dir in another empty folder."""
    task = request.param
    root = tmp_path_factory.mktemp(f'demo_{task}')
    cwd, work_dir = root / 'cwd', root / 'out' / 'work'
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('OMP_NUM_THREADS', '1')
        output = run([sys.executable, DEMO, '--task', task, '--work-dir',
                      work_dir, '--cfg-options',
                      f'default_hooks.logger.interval={LOG_INTERVAL}'],
                     cwd=cwd, timeout=1500)
    return task, cwd, work_dir, output


def saved_metrics(work_dir):
    """The test run's log folder and its metrics."""
    metrics_file = saved_test_metrics(work_dir / 'test')
    return metrics_file.parent, json.loads(metrics_file.read_text())


@pytest.mark.slow
def test_demo_learns(demo):
    task, _, work_dir, output = demo
    metrics = saved_metrics(work_dir)[1]
    metric, threshold = THRESHOLDS[task]
    print(f'{task} demo: {metric} {metrics[metric]}')
    assert metrics[metric] >= threshold, metrics
    # The printed summary matches the saved one.
    printed = re.search(rf'^  {re.escape(metric)}: ([\d.]+)$', output,
                        re.MULTILINE)
    assert printed and float(printed.group(1)) == pytest.approx(
        metrics[metric], rel=1e-3)
    if task == 'det':
        assert re.search(r'^  coco/segm_mAP: [\d.]+$', output, re.MULTILINE)
    # Training progress was streamed, at the interval passed.
    logged = [int(i) for i in re.findall(PROGRESS[task], output)]
    assert logged and all(i % LOG_INTERVAL == 0 for i in logged), logged


@pytest.mark.slow
def test_demo_writes_pictures_and_nothing_outside_work_dir(demo):
    task, cwd, work_dir, _ = demo
    pictures = sorted(
        (saved_metrics(work_dir)[0] / 'vis_data' / 'vis_image').glob('*.png'))
    assert len(pictures) == NUM_VAL
    image = mmcv.imread(pictures[0])
    # The visualizer draws on the 128x128 validation image (mmseg puts the
    # ground truth and the prediction side by side).
    assert image.shape[0] == 128 and image.shape[1] in (128, 256)
    assert list(cwd.iterdir()) == []
    assert list(work_dir.parent.iterdir()) == [work_dir]
    assert sorted(p.name for p in work_dir.iterdir()) == [
        'data', 'test', 'train']
