"""tools/misc/check_dataset.py: clean generated data passes, deliberately
broken annotations and images are flagged, the advice for a class order or
an EXIF orientation that mislabels fixes it when followed, missing paths
name the config key."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.registry import DATASETS, init_default_scope
from PIL import Image

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


def test_left_out_category_is_one_summary_line(tmp_path, coco):
    """Training on a subset of the json's categories is normal: one
    warning with what it drops, not one error per annotation (and, with the
    subset in the json's order, no class-order error)."""
    data = renumber_categories(coco.data_root / 'annotations' /
                               'instances_train2017.json')
    cars = [a for a in data['annotations'] if a['category_id'] == 9]
    with_other = {a['image_id'] for a in data['annotations']
                  if a['category_id'] != 9}
    only_cars = {a['image_id'] for a in cars} - with_other
    assert cars and only_cars  # the generated data exercises both counts

    result = run_tool(det_config(tmp_path, coco.data_root,
                                 classes=('person', 'bicycle')),
                      '--show-number', 0)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [ln for ln in result.stdout.splitlines() if "'car'" in ln]
    assert lines == [
        "WARNING: json categories outside metainfo.classes: 'car' (id 9, "
        f'{len(cars)} annotations); the loader drops these {len(cars)} '
        f'annotations, and training drops the {len(only_cars)} image(s) '
        'left without any (filter_empty_gt)'], result.stdout


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


# --- class order -------------------------------------------------------------

# Non-contiguous category ids, listed in the json neither by id nor in the
# order of CLASSES.
NEW_IDS = {1: 17, 2: 3, 3: 9}  # person, bicycle, car
JSON_ORDER = (9, 17, 3)        # car, person, bicycle
CLASSES = ('person', 'bicycle', 'car')


def renumber_categories(ann_file):
    data = json.loads(ann_file.read_text())
    cats = {NEW_IDS[c['id']]: dict(c, id=NEW_IDS[c['id']])
            for c in data['categories']}
    data['categories'] = [cats[i] for i in JSON_ORDER]
    for ann in data['annotations']:
        ann['category_id'] = NEW_IDS[ann['category_id']]
    ann_file.write_text(json.dumps(data))
    return data


def loaded_names(root, classes):
    """Per loaded instance: (its json category name, the name mmdet's
    CocoDataset gives it), matched through the box."""
    init_default_scope('mmdet')
    dataset = DATASETS.build(dict(
        type='CocoDataset', data_root=f'{root}/',
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), metainfo=dict(classes=classes),
        pipeline=[]))
    data = json.loads((root / 'annotations' /
                       'instances_train2017.json').read_text())
    category = {c['id']: c['name'] for c in data['categories']}
    by_box = {(a['image_id'], *a['bbox']): category[a['category_id']]
              for a in data['annotations']}
    pairs = []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        for inst in info['instances']:
            x1, y1, x2, y2 = inst['bbox']
            key = (info['img_id'], x1, y1, x2 - x1, y2 - y1)
            match = [v for k, v in by_box.items()
                     if k[0] == key[0] and np.allclose(k[1:], key[1:])]
            pairs.append((match[0], classes[inst['bbox_label']]))
    return pairs


def printed_classes(text):
    (line, ) = [ln for ln in text.splitlines() if 'classes = (' in ln]
    return ast.literal_eval(line[line.index('classes = (') + 10:])


def test_class_order_advice_fixes_the_names(tmp_path, coco):
    root = coco.data_root
    renumber_categories(root / 'annotations' / 'instances_train2017.json')
    assert any(json_name != name
               for json_name, name in loaded_names(root, CLASSES))

    result = run_tool(det_config(tmp_path, root, classes=CLASSES),
                      '--show-number', 0)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'ERROR: metainfo.classes lists the json categories in another ' \
        'order' in result.stdout
    advice = printed_classes(result.stdout)
    assert advice == ('car', 'person', 'bicycle')

    pairs = loaded_names(root, advice)
    assert pairs and all(json_name == name for json_name, name in pairs)
    result = run_tool(det_config(tmp_path, root, classes=advice),
                      '--show-number', 0)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '0 errors' in result.stdout
    # Listing them by id (the checker's earlier advice) keeps the mislabel.
    by_id = ('bicycle', 'car', 'person')
    assert any(a != b for a, b in loaded_names(root, by_id))
    assert not check_dataset(det_config(tmp_path, root, classes=by_id)).ok


def test_class_order_advice_keeps_classes_without_category(tmp_path, coco):
    """A subset in the wrong order plus a class the json lacks: the advice
    keeps the class count and gives each category its own name."""
    root = coco.data_root
    renumber_categories(root / 'annotations' / 'instances_train2017.json')
    classes = ('bicycle', 'dog', 'car')
    report = check_dataset(det_config(tmp_path, root, classes=classes))
    advice = printed_classes('\n'.join(report.errors))
    assert advice == ('car', 'bicycle', 'dog')
    pairs = loaded_names(root, advice)
    assert pairs and all(json_name == name for json_name, name in pairs)
    report = check_dataset(det_config(tmp_path, root, classes=advice))
    assert report.ok, report.format()


# --- annotations the loader cannot use ---------------------------------------


def test_non_finite_boxes_and_empty_segmentation(tmp_path, coco):
    ann_file = coco.data_root / 'annotations' / 'instances_train2017.json'
    data = json.loads(ann_file.read_text())
    nan_box, inf_box, nan_polygon, no_mask = data['annotations'][:4]
    nan_box['bbox'][2] = float('nan')
    inf_box['bbox'][3] = float('inf')
    nan_polygon['segmentation'][0][1] = float('nan')
    no_mask['segmentation'] = []
    ann_file.write_text(json.dumps(data))

    report = check_dataset(det_config(tmp_path, coco.data_root))
    text = '\n'.join(report.errors)
    for ann in (nan_box, inf_box):
        assert f'annotation id {ann["id"]} ' in text
    assert text.count('is not finite (NaN or Inf)') == 2
    assert f'annotation id {nan_polygon["id"]} ' in text
    assert 'polygon with NaN / Inf coordinates' in text
    assert f'annotation id {no_mask["id"]} ' in text
    assert "cannot load (KeyError: 'mask')" in text
    assert len(report.errors) == 4, report.format()
    # Box-only training does not load masks: an empty one is no problem.
    report = check_dataset(det_config(tmp_path, coco.data_root), cfg_options={
        'train_dataloader.dataset.pipeline.1.with_mask': False})
    assert len(report.errors) == 3, report.format()


def test_no_annotations_is_one_clear_line(tmp_path, coco):
    ann_file = coco.data_root / 'annotations' / 'instances_train2017.json'
    data = json.loads(ann_file.read_text())
    ann_file.write_text(json.dumps(dict(data, annotations=[])))
    result = run_tool(det_config(tmp_path, coco.data_root))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == (
        f'error: {ann_file} has no annotations, and train_dataloader.dataset'
        '.filter_cfg.filter_empty_gt drops images without any, so no image '
        'is left to train on: point train_dataloader.dataset.ann_file at the '
        'annotated json')


# --- images ------------------------------------------------------------------


def test_undecodable_images_are_flagged(tmp_path, coco):
    images = sorted((coco.data_root / 'train2017').glob('*.jpg'))
    truncated, empty, missing = images[:3]
    content = truncated.read_bytes()
    truncated.write_bytes(content[:len(content) // 2])
    with Image.open(truncated) as img:
        assert img.size == (96, 96)  # the header alone looks fine
    empty.write_bytes(b'')
    missing.unlink()

    report = check_dataset(det_config(tmp_path, coco.data_root))
    assert sorted(report.errors) == sorted([
        f'{truncated}: truncated or corrupt: mmcv (cv2 backend) cannot '
        'decode it',
        f'{empty}: empty file (0 bytes)',
        f'{missing}: missing']), report.format()


# --- EXIF orientation --------------------------------------------------------

WIDE = (64, 96)  # height, width: a 90-degree turn shows in the size


def tag_orientation(path, orientation):
    """Add an EXIF orientation tag, keeping the stored pixels."""
    img = Image.open(path)
    img.load()
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
def test_mmcv_turns_images_as_their_exif_tag_says(tmp_path, backend):
    """What the checker's advice rests on: LoadImageFromFile with
    color_type 'color' turns an image as its tag says, with
    'color_ignore_orientation' it keeps the stored pixels."""
    from mmcv.transforms import LoadImageFromFile
    path = tmp_path / 'tagged.jpg'
    pixels = np.zeros((*WIDE, 3), np.uint8)
    pixels[:8, :16] = 255  # top left corner
    Image.fromarray(pixels).save(path)
    tag_orientation(path, 6)
    loaded = {
        color_type: LoadImageFromFile(color_type=color_type,
                                      imdecode_backend=backend)(dict(
                                          img_path=str(path)))['img']
        for color_type in ('color', 'color_ignore_orientation')}
    assert loaded['color_ignore_orientation'].shape == (*WIDE, 3)
    # 6: turn 90 degrees clockwise to display, the corner goes top right.
    assert loaded['color'].shape == (*WIDE[::-1], 3)
    assert loaded['color'][:16, -8:].mean() > 200


@pytest.fixture
def wide_coco(tmp_path):
    return generate_coco(tmp_path / 'wide', num_train=4, num_val=1,
                         img_size=WIDE)


def cfg_options_of(error):
    """The ``key=value`` pairs of the ``--cfg-options`` an error advises."""
    return dict(pair.split('=') for pair in
                error.split('--cfg-options ')[1].split())


def test_exif_turn_against_annotations_is_an_error_the_advice_fixes(
        tmp_path, wide_coco):
    root = wide_coco.data_root
    tagged = sorted((root / 'train2017').glob('*.jpg'))[0]
    tag_orientation(tagged, 6)
    config = det_config(tmp_path, root)

    result = run_tool(config, '--show-number', 0)
    assert result.returncode == 1, result.stdout + result.stderr
    (error, ) = [ln for ln in result.stdout.splitlines()
                 if ln.startswith('ERROR')]
    assert error.startswith(
        f'ERROR: EXIF orientation tag on 1 image(s) ({tagged.name}: '
        'orientation 6, decoded 64x96, annotated 96x64): LoadImageFromFile '
        "(color_type='color', imdecode_backend='cv2') decodes them turned "
        'as the tag says, but their json width / height fit the stored '
        'pixels'), error
    options = cfg_options_of(error)
    assert options == {
        f'{split}_dataloader.dataset.pipeline.0.color_type':
        'color_ignore_orientation' for split in ('train', 'val', 'test')}

    result = run_tool(config, '--show-number', 0, '--cfg-options',
                      *[f'{k}={v}' for k, v in options.items()])
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'decodes them as stored, ignoring the tag, which their json ' \
        'width / height match' in result.stdout


def test_exif_turn_matching_annotations_and_unknown_turns(tmp_path,
                                                          wide_coco):
    root = wide_coco.data_root
    turned, flipped = sorted((root / 'train2017').glob('*.jpg'))[:2]
    tag_orientation(turned, 8)
    tag_orientation(flipped, 3)
    ann_file = root / 'annotations' / 'instances_train2017.json'
    data = json.loads(ann_file.read_text())
    for img in data['images']:
        if img['file_name'] == turned.name:  # annotated as displayed
            img['width'], img['height'] = img['height'], img['width']
    ann_file.write_text(json.dumps(data))

    report = check_dataset(det_config(tmp_path, root), out_dir=tmp_path /
                           'vis', show_number=1)
    # (Its boxes, left in the stored frame, may stick out of the turned one.)
    assert not [e for e in report.errors if 'EXIF' in e or 'file is' in e]
    unknown, matching = [w for w in report.warnings if 'EXIF' in w]
    assert unknown.startswith(
        'EXIF orientation tag that keeps the size on 1 image(s) '
        f'({flipped.name}: orientation 3')
    assert 'if the painted ground truth (--out-dir) misses the objects, ' \
        'use --cfg-options train_dataloader.dataset.pipeline.0.color_type' \
        '=color_ignore_orientation' in unknown
    assert matching.startswith(
        f'EXIF orientation tag on 1 image(s) ({turned.name}: '
        'orientation 8, decoded 64x96, annotated 64x96)')
    # The image that may be wrong is painted first.
    report = check_dataset(det_config(tmp_path, root), out_dir=tmp_path /
                           'vis', show_number=1, cfg_options={
                               'train_dataloader.dataset.indices': [2, 1]})
    (png, ) = report.drawn
    assert Path(png).stem == flipped.stem


def test_exif_image_whose_size_fits_no_frame(tmp_path, wide_coco):
    root = wide_coco.data_root
    tagged = sorted((root / 'train2017').glob('*.jpg'))[0]
    tag_orientation(tagged, 6)
    ann_file = root / 'annotations' / 'instances_train2017.json'
    data = json.loads(ann_file.read_text())
    data['images'][0].update(width=80, height=50)
    ann_file.write_text(json.dumps(data))
    report = check_dataset(det_config(tmp_path, root))
    assert f'{tagged.name}: orientation 6, decoded 64x96, annotated 80x50: ' \
        'the json width / height fit neither the stored nor the turned ' \
        'pixels' in report.errors, report.format()


def test_exif_turn_against_segmentation_labels(tmp_path):
    ade = generate_ade20k(tmp_path / 'ade', num_train=2, num_val=1,
                          img_size=WIDE)
    tagged = sorted((ade.data_root / 'images' / 'training').glob(
        '*.jpg'))[0]
    tag_orientation(tagged, 6)
    config = seg_config(tmp_path, ade.data_root)
    report = check_dataset(config)
    (error, ) = report.errors
    assert 'but their label maps fit the stored pixels' in error
    report = check_dataset(config, cfg_options=cfg_options_of(error))
    assert report.ok, report.format()
