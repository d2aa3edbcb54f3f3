"""Shipped detection configs trained on generated COCO data by mmdet's own
``tools/train.py`` with no override (fp32 ``OptimWrapper``; the config's
``custom_imports`` bring GC ViT and the engine components): Mask R-CNN XXT
scaled down by ``--cfg-options``, then evaluated by our ``tools/test.py``,
and DINO T as a user's config inherits it; every mAP recomputed with
pycocotools. (Exact resume: test_resume_determinism.py.)
"""
import json
import re
import sys

import pytest
from helpers import (MMDET_TRAIN, REPO, TEST_IMAGES,
                     assert_coco_metrics_recomputed, det_scaled_down,
                     evaluate, run)

CONFIG = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_1x_coco.py'


@pytest.mark.slow
def test_mmdet_train_then_test_reports_bbox_and_segm_map(tmp_path,
                                                         coco_root):
    work_dir = tmp_path / 'work'
    log = run([sys.executable, MMDET_TRAIN, CONFIG, '--work-dir', work_dir,
               *det_scaled_down(coco_root)], cwd=tmp_path)
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', log)
    assert 'coco/bbox_mAP' in log and 'coco/segm_mAP' in log
    # The configs' components ran: atomic hook, exact-resume loop.
    assert 'AtomicCheckpointHook' in log and 'RNGStateHook' in log

    dump = tmp_path / 'preds.pkl'
    metrics, _ = evaluate(CONFIG, work_dir / 'epoch_1.pth', tmp_path / 'test',
                          '--out', dump, *det_scaled_down(coco_root))
    assert_coco_metrics_recomputed(
        metrics, dump, f'{coco_root}/annotations/instances_val2017.json',
        num_images=TEST_IMAGES)


# The DINO T config as a user's config inherits it (through mmgcvit::),
# scaled down to seconds of CPU: 128 px images, 30 queries, the generated
# data's 3 classes, batch 2 on 4 training images (two iterations), every
# validation image, the validated detections dumped.
DINO = """
_base_ = 'mmgcvit::detection/dino-4scale_gcvit-t_8xb2-12e_coco.py'
data_root = '{root}/'
metainfo = dict(classes=('person', 'bicycle', 'car'))
model = dict(
    backbone=dict(init_cfg=None),
    num_queries=30,
    bbox_head=dict(num_classes=3),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=20)),
    test_cfg=dict(max_per_img=30))
# mmdet's DINO pipelines at 128 px: the multi-scale crop (RandomChoice)
# and the 1333x800 test resize become 128 px resizes.
train_pipeline = [
    dict(type='Resize', scale=(128, 128), keep_ratio=True)
    if step['type'] == 'RandomChoice' else step
    for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=(128, 128)) if step['type'] == 'Resize' else step
    for step in _base_.test_pipeline
]
dataset = dict(data_root=data_root, metainfo=metainfo)
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_dataloader = dict(
    **loader, dataset=dict(**dataset, indices=4, pipeline=train_pipeline))
val_dataloader = dict(**loader, dataset=dict(**dataset,
                                             pipeline=test_pipeline))
val_evaluator = [
    dict(_base_.val_evaluator,
         ann_file=data_root + 'annotations/instances_val2017.json'),
    dict(type='DumpDetResults', out_file_path='{dump}'),
]
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=-1, save_last=False))
randomness = dict(seed=0, deterministic=True)
"""


@pytest.mark.slow
def test_dino_t_config_trains_and_validates_box_map(tmp_path, coco_root):
    """mmdet's own train.py on the scaled-down DINO T config; its validation
    mAP equals pycocotools' over the validated detections."""
    config = tmp_path / 'my_dino_gcvit-t_3cls.py'
    config.write_text(DINO.format(root=coco_root, dump=tmp_path / 'dets.pkl'))
    log = run([sys.executable, MMDET_TRAIN, config, '--work-dir',
               tmp_path / 'work'], cwd=tmp_path)
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', log), log[-3000:]
    scalars, = tmp_path.glob('work/*/vis_data/scalars.json')
    metrics, = [json.loads(line) for line in scalars.read_text().splitlines()
                if 'coco/bbox_mAP' in line]
    assert_coco_metrics_recomputed(
        metrics, tmp_path / 'dets.pkl',
        f'{coco_root}/annotations/instances_val2017.json')
