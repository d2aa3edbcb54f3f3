"""A real GC ViT detection config, scaled down by ``--cfg-options`` only,
trained and evaluated end to end on the generated COCO data: our
``tools/train.py`` / ``tools/test.py`` (bbox and segm mAP through the stock
``CocoMetric``), ``--resume``, ``tools/dist_train.sh`` on two CPU processes,
and mmdet's own ``tools/train.py``, which finds GCViT through the config's
``custom_imports``.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (MMDET_TRAIN, TEST_IMAGES, assert_coco_metrics_recomputed,
                     det_scaled_down, evaluate, requires_cpu_amp)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_1x_coco.py'
TRAIN = (sys.executable, 'tools/train.py', CONFIG)


def run(cmd, timeout=300):
    """Run a tool from the repository root; fail with its output."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    result = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def train(tool, work_dir, coco_root, *args, epochs=1, options=()):
    """Run a training ``tool`` (command up to the config) scaled down."""
    return run([*tool, '--work-dir', work_dir, *args,
                *det_scaled_down(coco_root, epochs, *options)])


@pytest.fixture(scope='module')
def trained(tmp_path_factory, coco_root):
    """A work dir after one epoch of ``tools/train.py``."""
    work_dir = tmp_path_factory.mktemp('det_train')
    log = train(TRAIN, work_dir, coco_root)
    return work_dir, log


@pytest.mark.slow
def test_train_checkpoints_and_validates(trained):
    work_dir, log = trained
    assert (work_dir / 'epoch_1.pth').is_file()
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', log)
    assert 'coco/bbox_mAP' in log and 'coco/segm_mAP' in log


@pytest.mark.slow
def test_test_reports_bbox_and_segm_map(trained, coco_root, tmp_path):
    work_dir, _ = trained
    dump = tmp_path / 'preds.pkl'
    metrics, _ = evaluate(CONFIG, work_dir / 'epoch_1.pth', tmp_path / 'test',
                          '--out', dump, *det_scaled_down(coco_root))
    assert_coco_metrics_recomputed(
        metrics, dump, f'{coco_root}/annotations/instances_val2017.json',
        num_images=TEST_IMAGES)


@pytest.mark.slow
def test_resume_continues(trained, coco_root):
    work_dir, _ = trained
    log = train(TRAIN, work_dir, coco_root, '--resume', epochs=2)
    assert 'resumed epoch: 1' in log
    assert re.search(r'Epoch\(train\) *\[2\]\[2/2\]', log)
    assert not re.search(r'Epoch\(train\) *\[1\]\[', log)
    assert (work_dir / 'epoch_2.pth').is_file()


@pytest.mark.slow
def test_dist_train_two_cpu_processes(tmp_path, coco_root):
    log = train(('bash', 'tools/dist_train.sh', CONFIG, 2), tmp_path,
                coco_root)
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log
    # 4 images, 2 per process: one iteration per epoch.
    assert re.search(r'Epoch\(train\) *\[1\]\[1/1\]', log)
    assert (tmp_path / 'epoch_1.pth').is_file()


@pytest.mark.slow
@requires_cpu_amp
def test_mmdet_upstream_train(tmp_path, coco_root):
    """mmdet's own train.py knows nothing of mmgcvit: the config's
    custom_imports registers GCViT, and mmgcvit's CPUAmpOptimWrapper stands
    in for the GPU-only AmpOptimWrapper (our tools swap it themselves)."""
    log = train((sys.executable, MMDET_TRAIN, CONFIG), tmp_path, coco_root,
                options=['optim_wrapper.type=mmgcvit.CPUAmpOptimWrapper'])
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', log)
    assert 'coco/segm_mAP' in log
    assert (tmp_path / 'epoch_1.pth').is_file()
