"""A real GC ViT UPerNet config end to end on generated ADE20K data.

The shipped XXT config is shrunk by ``--cfg-options`` only (``scaled_down``):
64x64 crops, 4 iterations of 2 images in fp32, narrower heads, 4 test
images, no ImageNet checkpoint. mmseg's own ``tools/train.py`` (which finds
GC ViT and the engine components through the config's ``custom_imports``)
trains it; our ``tools/test.py`` (mmseg's, single scale and ``--tta``)
evaluates it, the mIoU recomputed with numpy.
"""
import sys

import pytest
from helpers import (MMSEG_TRAIN, REPO, SEG_ITERS, TEST_IMAGES,
                     assert_miou_recomputed, evaluate, last_checkpoint, run,
                     seg_scaled_down, with_dumped_predictions)

from mmgcvit.checkpoint import load_checkpoint

CONFIG = (REPO / 'configs' / 'segmentation' /
          'upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py')
ITERS = SEG_ITERS


@pytest.fixture(scope='module')
def trained(ade20k_root, tmp_path_factory):
    """Work dir and checkpoint of one run of mmseg's own train.py."""
    work_dir = tmp_path_factory.mktemp('seg_e2e') / 'work'
    run([sys.executable, MMSEG_TRAIN, CONFIG, '--work-dir', work_dir,
         *seg_scaled_down(ade20k_root)], cwd=work_dir.parent)
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
