"""The generic tools on stock mmdet / mmseg models and generated data.

``tools/train.py``, ``tools/test.py`` and ``tools/dist_train.sh`` must work
for any mmdet 3.x / mmseg 1.x config, so these tests use small stock models
(ResNet-18 Mask R-CNN, ResNet-18 FCN) built from the libraries' own base
configs, on the COCO / ADE20K folders of the session fixtures.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (assert_coco_metrics_recomputed, assert_miou_recomputed,
                     evaluate, last_checkpoint, train,
                     with_dumped_predictions)

from mmgcvit.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / 'tools'

DET_CONFIG = """
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
data_root = '{root}/'
metainfo = dict(classes={classes!r})
num_classes = len(metainfo['classes'])
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(
        bbox_head=dict(num_classes=num_classes),
        mask_head=dict(num_classes=num_classes)),
    # Keep every detection of the barely trained model, so that CocoMetric
    # has results to score.
    test_cfg=dict(rcnn=dict(score_thr=0.0)))
pipeline_train = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
pipeline_test = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, indices=4,
                 pipeline=pipeline_train))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, indices=4,
                 pipeline=pipeline_test))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                        begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1))
"""

SEG_CONFIG = """
_base_ = [
    'mmseg::_base_/models/fcn_r50-d8.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (64, 64)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(depth=18),
    decode_head=dict(in_channels=512, channels=64, num_classes=150),
    auxiliary_head=dict(in_channels=256, channels=32, num_classes=150))
pipeline_train = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
pipeline_test = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root='{root}', pipeline=pipeline_train))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root='{root}', indices=4, pipeline=pipeline_test))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=4))
"""


@pytest.fixture
def det_config(tmp_path, coco_root):
    path = tmp_path / 'mask-rcnn_r18_fpn_coco-tiny.py'
    classes = json.loads((Path(coco_root) / 'annotations' /
                          'instances_train2017.json').read_text())
    names = tuple(c['name'] for c in classes['categories'])
    path.write_text(DET_CONFIG.format(root=coco_root, classes=names))
    return path


@pytest.fixture
def seg_config(tmp_path, ade20k_root):
    path = tmp_path / 'fcn_r18_ade20k-tiny.py'
    path.write_text(SEG_CONFIG.format(root=ade20k_root))
    return path


@pytest.mark.slow
def test_detection_train_test_resume(det_config, coco_root, tmp_path):
    work_dir = tmp_path / 'work'
    train(det_config, work_dir)
    ckpt = work_dir / 'epoch_1.pth'
    assert ckpt.is_file() and last_checkpoint(work_dir) == ckpt

    # tools/test.py loads it under torch's default weights_only=True.
    dump = tmp_path / 'preds.pkl'
    metrics, _ = evaluate(det_config, ckpt, work_dir, '--out', dump)
    assert_coco_metrics_recomputed(
        metrics, dump, f'{coco_root}/annotations/instances_val2017.json',
        num_images=4)

    output = train(det_config, work_dir, '--resume',
                   '--cfg-options', 'train_cfg.max_epochs=2')
    assert 'resumed epoch: 1' in output, output[-3000:]
    resumed = load_checkpoint(work_dir / 'epoch_2.pth')
    assert resumed['meta']['epoch'] == 2
    first = load_checkpoint(ckpt)
    assert resumed['meta']['iter'] == 2 * first['meta']['iter']


@pytest.mark.slow
def test_segmentation_train_test_resume(seg_config, ade20k_root, tmp_path):
    work_dir = tmp_path / 'work'
    train(seg_config, work_dir)
    ckpt = work_dir / 'iter_4.pth'
    assert ckpt.is_file() and last_checkpoint(work_dir) == ckpt

    dump = tmp_path / 'preds.pkl'
    metrics, _ = evaluate(with_dumped_predictions(seg_config, dump, tmp_path),
                          ckpt, work_dir, '--show-dir', tmp_path / 'vis')
    # ADE20K's PNGs: 0 is unlabelled, k is class k - 1.
    assert_miou_recomputed(
        metrics, dump, f'{ade20k_root}/images/validation',
        ann_dir=f'{ade20k_root}/annotations/validation', num_images=4,
        num_classes=150, reduce_zero_label=True)
    assert list((tmp_path / 'vis').rglob('*.png')), 'no painted predictions'

    train(seg_config, work_dir, '--resume', str(ckpt), '--cfg-options',
          'train_cfg.max_iters=8')
    resumed = load_checkpoint(work_dir / 'iter_8.pth')
    assert resumed['meta']['iter'] == 8


@pytest.mark.slow
@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_dist_train_two_cpu_processes(task, request, tmp_path):
    """Two processes in one gloo group (SyncBN in FCN becomes BN)."""
    config = request.getfixturevalue(
        'det_config' if task == 'detection' else 'seg_config')
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable,
               PORT=str(29500 + os.getpid() % 1000))
    result = subprocess.run(
        ['bash', str(TOOLS / 'dist_train.sh'), str(config), '2',
         '--work-dir', str(work_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # mmengine's environment report names the world size 'GPU number'.
    assert 'Distributed training: True' in output, output[-3000:]
    assert 'GPU number: 2' in output, output[-3000:]
    assert last_checkpoint(work_dir).is_file()
