"""tools/misc/check_dataset.py: clean generated data passes, deliberately
broken annotations are flagged, missing paths name the config key."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmgcvit.dataset_tools import (DatasetConfigError, check_dataset,
                              generate_ade20k, generate_coco)

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'misc' / \
    'check_dataset.py'
SMALL = dict(num_train=6, num_val=2, img_size=96)

DET_CONFIG = """
_base_ = 'mmdet::_base_/datasets/coco_instance.py'
default_scope = 'mmdet'
train_dataloader = dict(dataset=dict(data_root={root!r},
                                     metainfo=dict(classes={classes!r})))
"""
SEG_CONFIG = """
_base_ = 'mmseg::_base_/datasets/ade20k.py'
default_scope = 'mmseg'
train_dataloader = dict(dataset=dict(data_root={root!r}))
"""


def det_config(tmp_path, root, classes=('person', 'bicycle', 'car')):
    path = tmp_path / 'det.py'
    path.write_text(DET_CONFIG.format(root=f'{root}/', classes=classes))
    return path


def seg_config(tmp_path, root):
    path = tmp_path / 'seg.py'
    path.write_text(SEG_CONFIG.format(root=str(root)))
    return path


def run_tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def coco(tmp_path):
    return generate_coco(tmp_path / 'coco', **SMALL)


@pytest.fixture
def ade(tmp_path):
    return generate_ade20k(tmp_path / 'ade', **SMALL)


def test_clean_coco_passes_and_paints(tmp_path, coco):
    out = tmp_path / 'vis'
    result = run_tool(det_config(tmp_path, coco.data_root), '--out-dir', out,
                      '--show-number', 3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '0 errors' in result.stdout
    counts = coco.counts['train']['instances']
    for name, count in counts.items():
        assert any(line.split()[0] == name and line.split()[-1] == str(count)
                   for line in result.stdout.splitlines()), result.stdout
    pngs = sorted(out.glob('*.png'))
    assert len(pngs) == 3 and cv2.imread(str(pngs[0])).shape == (96, 96, 3)


def test_broken_coco_annotations_are_flagged(tmp_path, coco):
    ann_file = coco.data_root / 'annotations' / 'instances_train2017.json'
    data = json.loads(ann_file.read_text())
    outside, unknown, partly, degenerate, flat = data['annotations'][:5]
    outside['bbox'] = [500, 500, 10, 10]
    unknown['category_id'] = 99
    partly['bbox'][0] = -5
    degenerate['segmentation'] = [[1, 1, 2, 2]]
    flat['bbox'][3] = 0
    data['images'].append(dict(id=999, file_name=data['images'][0][
        'file_name'], width=96, height=96))
    ann_file.write_text(json.dumps(data))

    report = check_dataset(det_config(tmp_path, coco.data_root),
                           out_dir=tmp_path / 'vis', show_number=2)
    assert not report.ok
    text = '\n'.join(report.errors)
    assert f'annotation id {outside["id"]} ' in text
    assert 'lies outside the 96x96 image' in text
    assert 'category_id 99 is not among the json categories' in text
    assert 'is partly outside' in text
    assert 'polygon with 4 coordinates' in text
    assert f'annotation id {flat["id"]} ' in text and 'not positive' in text
    assert any('no annotations' in w for w in report.warnings)
    # The problematic images are painted first.
    bad = {Path(i['file_name']).stem for i in data['images']
           if i['id'] in (outside['image_id'], unknown['image_id'])}
    assert bad & {Path(p).stem for p in report.drawn}

    result = run_tool(det_config(tmp_path, coco.data_root),
                      '--show-number', 0)
    assert result.returncode == 1 and 'ERROR:' in result.stdout


def test_category_outside_configured_classes_is_flagged(tmp_path, coco):
    report = check_dataset(det_config(tmp_path, coco.data_root,
                                      classes=('person', 'bicycle')))
    assert not report.ok
    assert all("category 'car' (id 3) is not a configured class" in e
               for e in report.errors)
    assert len(report.errors) == coco.counts['train']['instances']['car']


def test_clean_ade20k_passes(tmp_path, ade):
    report = check_dataset(seg_config(tmp_path, ade.data_root),
                           out_dir=tmp_path / 'vis', show_number=2)
    assert report.ok, report.format()
    rows = {name: pixels for name, _, pixels in report.per_class if pixels}
    assert rows == ade.counts['train']['pixels']
    assert len(report.drawn) == 2 and all(map(Path.is_file,
                                              map(Path, report.drawn)))


def test_broken_ade20k_labels_are_flagged(tmp_path, ade):
    labels = sorted((ade.data_root / 'annotations' / 'training').glob(
        '*.png'))
    beyond = cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED)
    beyond[:4, :4] = 200  # 199 after reduce_zero_label; 150 classes
    cv2.imwrite(str(labels[0]), beyond)
    cv2.imwrite(str(labels[1]), np.zeros((50, 96), np.uint8))
    labels[2].write_bytes(b'not a png')

    result = run_tool(seg_config(tmp_path, ade.data_root), '--out-dir',
                      tmp_path / 'vis')
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert f'{labels[0].name}: label values [199] are beyond' in out
    assert f'{labels[1].name}: label is 96x50 but the image is 96x96' in out
    assert f'{labels[2].name}: missing or unreadable' in out
    assert '3 errors' in out


@pytest.mark.parametrize('override, key', [
    ('train_dataloader.dataset.data_root=/no/such/dir/',
     'train_dataloader.dataset.data_root'),
    ('train_dataloader.dataset.ann_file=annotations/missing.json',
     'train_dataloader.dataset.ann_file'),
])
def test_missing_paths_name_the_config_key(tmp_path, coco, override, key):
    config = det_config(tmp_path, coco.data_root)
    result = run_tool(config, '--cfg-options', override)
    assert result.returncode == 2
    (line, ) = [ln for ln in result.stderr.splitlines()
                if ln.startswith('error:')]
    assert f'fix {key} in the config' in line and 'does not exist' in line


def test_missing_split_and_scope_are_clear(tmp_path, ade):
    with pytest.raises(DatasetConfigError, match='no test_dataloader'):
        check_dataset(seg_config(tmp_path, ade.data_root), split='test',
                      cfg_options=dict(test_dataloader=None))
    path = tmp_path / 'noscope.py'
    path.write_text('train_dataloader = dict(dataset=dict(type="X"))\n')
    with pytest.raises(DatasetConfigError, match='set default_scope'):
        check_dataset(path)
