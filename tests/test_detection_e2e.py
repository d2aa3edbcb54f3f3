"""A real GC ViT detection config, scaled down by ``--cfg-options`` only,
trained and evaluated end to end on the generated COCO data: mmdet's own
``tools/train.py``, with nothing but the config (its ``custom_imports``
registers GCViT and the engine components; fp32 ``OptimWrapper``, so no
override on a CPU), then our ``tools/test.py`` (bbox and segm mAP through
the stock ``CocoMetric``, recomputed with pycocotools) and our
``tools/train.py --resume``.
"""
import re
import sys

import pytest
from helpers import (MMDET_TRAIN, REPO, TEST_IMAGES,
                     assert_coco_metrics_recomputed, det_scaled_down,
                     evaluate, run, train)

CONFIG = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_1x_coco.py'


@pytest.fixture(scope='module')
def trained(tmp_path_factory, coco_root):
    """A work dir after one epoch of mmdet's own ``tools/train.py``."""
    work_dir = tmp_path_factory.mktemp('det_train') / 'work'
    log = run([sys.executable, MMDET_TRAIN, CONFIG, '--work-dir', work_dir,
               *det_scaled_down(coco_root)], cwd=work_dir.parent)
    return work_dir, log


@pytest.mark.slow
def test_mmdet_train_checkpoints_and_validates(trained):
    work_dir, log = trained
    assert (work_dir / 'epoch_1.pth').is_file()
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', log)
    assert 'coco/bbox_mAP' in log and 'coco/segm_mAP' in log
    # The configs' components ran: atomic hook, exact-resume loop.
    assert 'AtomicCheckpointHook' in log and 'RNGStateHook' in log


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
    log = train(CONFIG, work_dir, '--resume', *det_scaled_down(coco_root, 2))
    assert 'resumed epoch: 1' in log
    assert re.search(r'Epoch\(train\) *\[2\]\[2/2\]', log)
    assert not re.search(r'Epoch\(train\) *\[1\]\[', log)
    assert (work_dir / 'epoch_2.pth').is_file()
