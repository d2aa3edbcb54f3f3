"""The shipped UPerNet XXT config, scaled down by ``--cfg-options`` only,
trained on generated ADE20K data by mmseg's own ``tools/train.py`` (the
config's ``custom_imports`` bring GC ViT and the engine components) and
evaluated by ours, the mIoU recomputed with numpy. (``--tta`` is mmseg's
with mmseg's ADE20K TTA pipeline: test_configs.py.)
"""
import sys

import pytest
from helpers import (MMSEG_TRAIN, REPO, SEG_ITERS, TEST_IMAGES,
                     assert_miou_recomputed, evaluate, last_checkpoint, run,
                     seg_scaled_down, with_dumped_predictions)

from mmgcvit.checkpoint import load_checkpoint

CONFIG = (REPO / 'configs' / 'segmentation' /
          'upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py')


@pytest.mark.slow
def test_mmseg_train_then_test_reports_miou(ade20k_root, tmp_path):
    work_dir = tmp_path / 'work'
    run([sys.executable, MMSEG_TRAIN, CONFIG, '--work-dir', work_dir,
         *seg_scaled_down(ade20k_root)], cwd=tmp_path)
    ckpt = last_checkpoint(work_dir)
    assert ckpt == work_dir / f'iter_{SEG_ITERS}.pth'
    state = load_checkpoint(ckpt)
    assert state['meta']['iter'] == SEG_ITERS
    assert any(k.startswith('backbone.levels.') for k in state['state_dict'])

    dump = tmp_path / 'preds.pkl'
    metrics, _ = evaluate(with_dumped_predictions(CONFIG, dump, tmp_path),
                          ckpt, tmp_path / 'test',
                          *seg_scaled_down(ade20k_root))
    # The stock IoUMetric's summary, from every test image; ADE20K's PNGs:
    # 0 is unlabelled, k is class k - 1.
    assert_miou_recomputed(
        metrics, dump, f'{ade20k_root}/images/validation',
        ann_dir=f'{ade20k_root}/annotations/validation',
        num_images=TEST_IMAGES, num_classes=150, reduce_zero_label=True)
