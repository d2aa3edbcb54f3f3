"""The generated datasets load and score perfectly with the stock loaders
and metrics (which proves the on-disk formats exact), are written
deterministically, and replace their own output only."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from pycocotools import mask as mask_utils

from mmgcvit.dataset_tools import (generate_ade20k, generate_coco,
                                   generate_custom_seg, synthetic)

SMALL = dict(num_train=8, num_val=4, img_size=128)


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(Path(root).rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def coco_val(coco_root):
    init_default_scope('mmdet')
    from mmdet.datasets import CocoDataset
    return CocoDataset(
        data_root=coco_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True,
                       with_mask=True),
                  dict(type='PackDetInputs')])


def test_coco_json_boxes_are_polygon_extents(coco_root):
    coco = json.loads((Path(coco_root) / 'annotations' /
                       'instances_train2017.json').read_text())
    assert [c['name'] for c in coco['categories']] == \
        ['person', 'bicycle', 'car']
    assert len(coco['images']) == 16 and coco['annotations']
    images = {i['id']: i for i in coco['images']}
    for ann in coco['annotations']:
        (poly, ) = ann['segmentation']
        xs, ys = poly[0::2], poly[1::2]
        x, y, w, h = ann['bbox']
        assert (x, y) == (min(xs), min(ys))
        assert (x + w, y + h) == pytest.approx((max(xs), max(ys)), abs=0.02)
        img = images[ann['image_id']]
        assert 0 <= x and x + w <= img['width'] and y + h <= img['height']
        assert ann['iscrowd'] == 0 and ann['area'] > 0
        # The mask pycocotools draws is what the image shows.
        rle = mask_utils.frPyObjects([poly], img['height'], img['width'])
        assert ann['area'] == int(mask_utils.area(rle).sum())


def test_coco_loads_with_stock_pipeline_and_ground_truth_scores_map_one(
        coco_val):
    """Each mask CocoDataset loads shows its class's colour in the image;
    the ground truth, as predictions, scores mAP 1 in CocoMetric."""
    from mmdet.evaluation import CocoMetric
    coco = json.loads(Path(coco_val.ann_file).read_text())
    assert len(coco_val) == len(coco['images']) == 8
    metric = CocoMetric(ann_file=coco_val.ann_file, metric=['bbox', 'segm'])
    metric.dataset_meta = coco_val.metainfo
    num_instances = 0
    for index in range(len(coco_val)):
        sample = coco_val[index]['data_samples']
        gt = sample.gt_instances
        masks = gt.masks.to_ndarray().astype(bool)
        image = coco_val[index]['inputs'].permute(1, 2, 0).numpy()
        num_instances += len(gt)
        for mask, label in zip(masks, gt.labels):
            assert mask.any()
            colour = image[mask].mean(0)
            expected = synthetic.PALETTE[int(label)]
            assert np.abs(colour - expected).max() < 30, (colour, expected)
        pred = dict(bboxes=gt.bboxes.tensor, labels=gt.labels,
                    scores=torch.ones(len(gt)),
                    masks=torch.from_numpy(masks))
        metric.process({}, [dict(pred_instances=pred, img_id=sample.img_id,
                                 ori_shape=sample.ori_shape)])
    assert num_instances == len(coco['annotations'])
    results = metric.evaluate(len(coco_val))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)
    assert results['coco/segm_mAP'] == pytest.approx(1.0)


def test_ade20k_loads_and_ground_truth_scores_miou_100(ade20k_root):
    init_default_scope('mmseg')
    from mmseg.datasets import ADE20KDataset
    from mmseg.evaluation import IoUMetric
    dataset = ADE20KDataset(
        data_root=ade20k_root,
        data_prefix=dict(img_path='images/validation',
                         seg_map_path='annotations/validation'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='PackSegInputs')])
    assert len(dataset) == 8
    metric = IoUMetric()
    metric.dataset_meta = dataset.metainfo
    present = set()
    for index in range(len(dataset)):
        sample = dataset[index]['data_samples']
        labels = sample.gt_sem_seg.data
        present |= set(labels.unique().tolist())
        metric.process({}, [dict(pred_sem_seg=dict(data=labels),
                                 gt_sem_seg=dict(data=labels))])
    # sky, floor, tree (ADE values 3, 4, 5) and ignored "other" patches.
    assert present <= {2, 3, 4, 255} and {2, 3, 4} <= present
    assert metric.evaluate(len(dataset))['mIoU'] == pytest.approx(100.0)


@pytest.mark.parametrize('generate',
                         [generate_coco, generate_ade20k, generate_custom_seg])
def test_same_seed_same_files_other_seed_other_images(generate, tmp_path):
    a, b, c = (_tree(generate(tmp_path / name, seed=seed, **SMALL).root)
               for name, seed in (('a', 3), ('b', 3), ('c', 4)))
    assert a == b
    images = [k for k in a if k.endswith('.jpg')]
    assert len(images) == 12 and all(a[k] != c[k] for k in images)


def test_replaces_its_own_output_refuses_other_data(tmp_path):
    root = tmp_path / 'coco'
    generate_coco(root, **SMALL)
    (root / 'val2017' / 'stale.jpg').write_bytes(b'')
    generate_coco(root, **dict(SMALL, num_val=6))
    assert len(list((root / 'val2017').glob('*.jpg'))) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ['coco']
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'precious.txt').write_text('keep')
    with pytest.raises(FileExistsError, match='not made by this generator'):
        generate_coco(tmp_path / 'mine', **SMALL)
    assert (tmp_path / 'mine' / 'precious.txt').read_text() == 'keep'


@pytest.mark.parametrize('generate, kwargs, match', [
    (generate_coco, dict(img_size=8), 'at least 32 pixels'),
    (generate_custom_seg, dict(classes=('a', 'a')), 'must be unique'),
    (generate_ade20k, dict(classes=('sky', 'unicorn')),
     r"\['unicorn'\] are not ADE20K classes"),
])
def test_bad_parameters_name_the_fix(tmp_path, generate, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(tmp_path / 'x', **kwargs)
