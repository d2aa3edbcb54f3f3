"""The generated datasets load and score perfectly with the stock loaders
and metrics (which proves the on-disk formats exact), and are written
deterministically, reused, regenerated and atomically."""
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


def test_coco_loads_with_stock_pipeline_and_looks_like_its_class(coco_val):
    coco = json.loads(Path(coco_val.ann_file).read_text())
    assert len(coco_val) == len(coco['images']) == 8
    num_instances = 0
    for index in range(len(coco_val)):
        sample = coco_val[index]['data_samples']
        gt = sample.gt_instances
        masks = gt.masks.to_ndarray().astype(bool)
        image = coco_val[index]['inputs'].permute(1, 2, 0).numpy()
        num_instances += len(gt)
        for box, mask, label in zip(gt.bboxes.tensor, masks, gt.labels):
            assert mask.any()
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = box.tolist()
            assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1
            assert y0 - 1 <= ys.min() and ys.max() <= y1 + 1
            colour = image[mask].mean(0)
            expected = synthetic.PALETTE[int(label)]
            assert np.abs(colour - expected).max() < 30, (colour, expected)
    assert num_instances == len(coco['annotations'])


def test_coco_ground_truth_scores_map_one(coco_val):
    from mmdet.evaluation import CocoMetric
    metric = CocoMetric(ann_file=coco_val.ann_file, metric=['bbox', 'segm'])
    metric.dataset_meta = coco_val.metainfo
    for index in range(len(coco_val)):
        sample = coco_val[index]['data_samples']
        gt = sample.gt_instances
        pred = dict(bboxes=gt.bboxes.tensor, labels=gt.labels,
                    scores=torch.ones(len(gt)),
                    masks=torch.from_numpy(gt.masks.to_ndarray()).bool())
        metric.process({}, [dict(pred_instances=pred, img_id=sample.img_id,
                                 ori_shape=sample.ori_shape)])
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


def test_custom_seg_loads_with_base_seg_dataset(tmp_path):
    init_default_scope('mmseg')
    from mmseg.datasets import BaseSegDataset
    classes = ('background', 'road', 'grass')
    info = generate_custom_seg(tmp_path / 'seg', classes=classes, **SMALL)
    dataset = BaseSegDataset(
        data_root=str(info.data_root), metainfo=dict(classes=classes),
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations'),
                  dict(type='PackSegInputs')])
    assert len(dataset) == 4
    values = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample['inputs'].shape[1:] == sample[
            'data_samples'].gt_sem_seg.data.shape[1:] == (128, 128)
        values |= set(sample['data_samples'].gt_sem_seg.data.unique()
                      .tolist())
    assert values <= {0, 1, 2, 255} and len(values - {255}) >= 2


@pytest.mark.parametrize('generate',
                         [generate_coco, generate_ade20k, generate_custom_seg])
def test_same_seed_same_files_other_seed_other_images(generate, tmp_path):
    a = generate(tmp_path / 'a', seed=3, **SMALL)
    b = generate(tmp_path / 'b', seed=3, **SMALL)
    c = generate(tmp_path / 'c', seed=4, **SMALL)
    assert _tree(a.root) == _tree(b.root)
    assert a.counts == b.counts
    tree_a, tree_c = _tree(a.root), _tree(c.root)
    images = [k for k in tree_a if k.endswith('.jpg')]
    assert len(images) == 12
    assert all(tree_a[k] != tree_c[k] for k in images)


def test_reuse_and_regenerate(tmp_path, capsys):
    root = tmp_path / 'coco'
    first = generate_coco(root, **SMALL)
    stamp = (root / 'manifest.json').stat().st_mtime_ns
    again = generate_coco(root, **SMALL)
    assert again.reused and not first.reused
    assert again.counts == first.counts
    assert (root / 'manifest.json').stat().st_mtime_ns == stamp
    assert 'Reusing' in capsys.readouterr().out

    more = generate_coco(root, **dict(SMALL, num_val=6))
    assert not more.reused and more.counts['val']['images'] == 6
    assert len(list((root / 'val2017').glob('*.jpg'))) == 6
    # A deleted file is noticed rather than reused.
    next((root / 'train2017').glob('*.jpg')).unlink()
    assert not generate_coco(root, **dict(SMALL, num_val=6)).reused
    assert sorted(p.name for p in tmp_path.iterdir()) == ['coco']


def test_refuses_to_replace_foreign_data(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'precious.txt').write_text('keep')
    with pytest.raises(FileExistsError, match='not made by this generator'):
        generate_coco(tmp_path / 'mine', **SMALL)
    assert (tmp_path / 'mine' / 'precious.txt').read_text() == 'keep'


def test_interrupted_write_leaves_target_untouched(tmp_path, monkeypatch):
    written = []
    real = synthetic._write_jpg

    def fail_on_fifth(img, path):
        if len(written) == 4:
            raise KeyboardInterrupt('simulated interruption')
        written.append(path)
        real(img, path)

    monkeypatch.setattr(synthetic, '_write_jpg', fail_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        generate_ade20k(tmp_path / 'ade', **SMALL)
    assert written and list(tmp_path.iterdir()) == []

    monkeypatch.setattr(synthetic, '_write_jpg', real)
    old = generate_coco(tmp_path / 'coco', **SMALL)
    before = _tree(old.root)
    written.clear()
    monkeypatch.setattr(synthetic, '_write_jpg', fail_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        generate_coco(tmp_path / 'coco', **dict(SMALL, seed=1))
    assert _tree(old.root) == before
    assert [p.name for p in tmp_path.iterdir()] == ['coco']


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_train=0), 'at least 1'),
    (dict(img_size=8), 'too small'),
    (dict(classes=('a', 'a')), 'unique'),
    (dict(objects_per_image=(3, 1)), 'min <= max'),
])
def test_bad_parameters_name_the_fix(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_coco(tmp_path / 'x', **kwargs)
    with pytest.raises(ValueError, match='not ADE20K classes'):
        generate_ade20k(tmp_path / 'y', classes=('sky', 'unicorn'))
