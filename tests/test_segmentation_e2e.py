"""A real GC ViT UPerNet config end to end on generated ADE20K data.

The shipped XXT config is shrunk by ``--cfg-options`` only (``scaled_down``):
64x64 crops, 4 iterations of 2 images in fp32, narrower heads, 4 test
images, no ImageNet checkpoint. Our
``tools/train.py`` / ``tools/test.py`` (single scale and ``--tta``),
``tools/dist_train.sh`` on two CPU processes, and mmseg's own upstream
``tools/train.py`` (loading GC ViT through the config's ``custom_imports``)
must all run it.
"""
import os
import subprocess
import sys
from pathlib import Path

import mmseg
import pytest
from helpers import (SEG_ITERS, TEST_IMAGES, assert_miou_recomputed,
                     evaluate, last_checkpoint, run, seg_scaled_down, train,
                     with_dumped_predictions)

from mmgcvit.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIG = (REPO / 'configs' / 'segmentation' /
          'upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py')
UPSTREAM_TRAIN = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
ITERS = SEG_ITERS


@pytest.fixture(scope='module')
def trained(ade20k_root, tmp_path_factory):
    """Work dir and checkpoint of one ``tools/train.py`` run."""
    work_dir = tmp_path_factory.mktemp('seg_e2e') / 'work'
    train(CONFIG, work_dir, *seg_scaled_down(ade20k_root))
    return work_dir, last_checkpoint(work_dir)


@pytest.mark.slow
def test_train_checkpoints(trained):
    work_dir, ckpt = trained
    assert ckpt == work_dir / f'iter_{ITERS}.pth'
    state = load_checkpoint(ckpt)
    assert state['meta']['iter'] == ITERS
    assert any(k.startswith('backbone.levels.') for k in state['state_dict'])


@pytest.mark.slow
@pytest.mark.parametrize('tta', [False, True], ids=['single-scale', 'tta'])
def test_test_reports_miou(trained, ade20k_root, tta, tmp_path):
    _, ckpt = trained
    args = seg_scaled_down(ade20k_root) + (['--tta'] if tta else [])
    dump = tmp_path / 'preds.pkl'
    metrics, output = evaluate(with_dumped_predictions(CONFIG, dump, tmp_path),
                               ckpt, tmp_path / 'work', *args)
    # The stock IoUMetric's summary, from every test image; ADE20K's PNGs:
    # 0 is unlabelled, k is class k - 1.
    assert_miou_recomputed(
        metrics, dump, f'{ade20k_root}/images/validation',
        ann_dir=f'{ade20k_root}/annotations/validation',
        num_images=TEST_IMAGES, num_classes=150, reduce_zero_label=True)
    if tta:
        assert 'SegTTAModel' in output or 'TestTimeAug' in output, \
            output[-3000:]


@pytest.mark.slow
def test_dist_train_two_cpu_processes(ade20k_root, tmp_path):
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable,
               PORT=str(29600 + os.getpid() % 1000))
    result = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(CONFIG), '2',
         '--work-dir', str(work_dir), *seg_scaled_down(ade20k_root)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert 'GPU number: 2' in output, output[-3000:]
    assert last_checkpoint(work_dir) == work_dir / f'iter_{ITERS}.pth'


@pytest.mark.slow
def test_upstream_mmseg_train(ade20k_root, tmp_path):
    """mmseg's own tools/train.py knows nothing of mmgcvit: the config's
    ``custom_imports`` must register GCViT."""
    assert UPSTREAM_TRAIN.is_file(), f'mmseg ships no {UPSTREAM_TRAIN}'
    work_dir = tmp_path / 'work'
    run([sys.executable, UPSTREAM_TRAIN, CONFIG, '--work-dir', work_dir,
         *seg_scaled_down(ade20k_root)], cwd=tmp_path)
    assert last_checkpoint(work_dir) == work_dir / f'iter_{ITERS}.pth'
