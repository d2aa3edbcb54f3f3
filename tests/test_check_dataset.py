"""tools/misc/check_dataset.py on generated data: what mmdet's CocoDataset
drops is checked against the class itself, and the advice it gives (class
order, EXIF turns) is followed to show that it fixes the labels."""
import ast
import json
from collections import Counter

import cv2
import numpy as np
import pytest
from helpers import (REPO, TOOLS, TRAIN, assert_one_line_error, run_tool,
                     small_detection_config)
from mmengine.config import Config
from mmengine.registry import DATASETS, init_default_scope
from PIL import Image

from mmgcvit.dataset_tools import (DatasetConfigError, check_dataset,
                                   generate_ade20k, generate_coco)

SMALL = dict(num_train=6, num_val=2, img_size=96)
CLASSES = ('person', 'bicycle', 'car')
WIDE = (64, 96)  # height, width: a 90-degree turn shows in the size


def det_config(tmp_path, root, classes=CLASSES):
    path = tmp_path / 'det.py'
    path.write_text(f"""
_base_ = 'mmdet::_base_/datasets/coco_instance.py'
default_scope = 'mmdet'
train_dataloader = dict(dataset=dict(data_root='{root}/',
                                     metainfo=dict(classes={classes!r})))
""")
    return path


def seg_config(tmp_path, root):
    path = tmp_path / 'seg.py'
    path.write_text(f"""
_base_ = 'mmseg::_base_/datasets/ade20k.py'
default_scope = 'mmseg'
train_dataloader = dict(dataset=dict(data_root='{root}'))
""")
    return path


def checker(config, *args):
    """(exit status, output) of the tool in a fresh process."""
    return run_tool([TOOLS / 'misc' / 'check_dataset.py', config, *args],
                    cwd=REPO)


def edit_json(root, edit):
    """Apply ``edit`` to the train json; return the json."""
    ann_file = root / 'annotations' / 'instances_train2017.json'
    data = json.loads(ann_file.read_text())
    edit(data)
    ann_file.write_text(json.dumps(data))
    return data


def built(config, **options):
    init_default_scope('mmdet')
    return DATASETS.build(dict(Config.fromfile(config).train_dataloader
                               .dataset, **options))


@pytest.fixture
def coco(tmp_path):
    return generate_coco(tmp_path / 'coco', **SMALL).data_root


def test_clean_coco_passes_with_the_json_counts(tmp_path, coco):
    code, output = checker(det_config(tmp_path, coco))
    assert code == 0 and '0 errors, 0 warnings' in output, output
    anns = json.loads((coco / 'annotations' / 'instances_train2017.json')
                      .read_text())['annotations']
    counts = Counter(CLASSES[a['category_id'] - 1] for a in anns)
    assert len(counts) == 3
    for name, count in counts.items():
        assert f'  {name}: {count}\n' in output, output


def test_clean_ade20k_passes_with_the_png_pixels(tmp_path):
    root = generate_ade20k(tmp_path / 'ade', **SMALL).data_root
    report = check_dataset(seg_config(tmp_path, root))
    assert report.ok and not report.warnings, report.format()
    assert report.num_images == 6
    values = Counter()  # reduce_zero_label: PNG value = label + 1
    for png in (root / 'annotations' / 'training').glob('*.png'):
        values.update(cv2.imread(str(png), cv2.IMREAD_UNCHANGED).ravel())
    assert dict(report.counts) == {v - 1: n for v, n in values.items() if v}


def test_what_coco_dataset_drops_is_named(tmp_path, coco):
    """Each annotation CocoDataset drops (asked of the class, one line
    each), one line for the categories outside the classes, the images it
    then drops: as many as the class itself leaves out."""
    def edit(data):
        anns = data['annotations']
        anns[0]['bbox'] = [500, 500, 10, 10]  # outside the image
        anns[1]['category_id'] = 99  # no json category
        anns[2]['bbox'][2] = float('nan')
        anns[3]['bbox'][3] = 0.5  # under one pixel
        anns.append(dict(anns[4], id=1000, image_id=12345))
    anns = edit_json(coco, edit)['annotations']
    config = det_config(tmp_path, coco, CLASSES[:2])  # 'car' left out
    report = check_dataset(config)
    dropped = [a for a in anns[:4] if a['category_id'] in (1, 2)]
    assert sorted(report.errors) == sorted(
        [f'annotation id {a["id"]} ({a["image_id"]:012d}.jpg): bbox '
         f'{a["bbox"]}, area {a["area"]}, ignore False in the 96x96 image; '
         'CocoDataset drops it' for a in dropped] +
        ['annotation id 1000: image_id 12345 is not in images']), \
        report.format()
    cars = sum(a['category_id'] == 3 for a in anns[:-1])
    (outside, images) = report.warnings
    assert outside.startswith(f'{cars + 1} annotations of categories '
                              'outside metainfo.classes, which CocoDataset '
                              'drops: '), outside
    assert f"'car' (id 3, {cars})" in outside
    assert "'no category' (id 99, 1)" in outside
    dataset = built(config)
    assert report.num_images == len(dataset) < 6
    assert images.startswith(f'CocoDataset loads {len(dataset)} of the 6 '
                             'images of annotations/instances_train2017.json'
                             ', dropping ['), images
    # The counts are those of the images the class loads.
    assert dict(report.counts) == Counter(
        i['bbox_label'] for k in range(len(dataset))
        for i in dataset.get_data_info(k)['instances'])


def test_dropping_every_image_is_an_error(tmp_path, coco):
    config = det_config(tmp_path, coco)
    report = check_dataset(config, cfg_options={
        'train_dataloader.dataset.indices': [1, 3]})
    (dropped, ) = report.warnings
    assert report.num_images == len(built(config, indices=[1, 3])) == 2
    assert dropped.endswith("train_dataloader.dataset.filter_cfg={'filter_"
                            "empty_gt': True, 'min_size': 32} / indices=[1, "
                            '3]'), dropped
    edit_json(coco, lambda data: data.update(annotations=[]))
    (error, ) = check_dataset(config).errors
    assert error.startswith('CocoDataset loads 0 of the 6 images')
    assert error.endswith('nothing is left to load; fix the data or these')


def test_inf_box_and_empty_segmentation(tmp_path, coco):
    """An Inf height passes CocoDataset's filter; an empty segmentation
    fails the pipeline's LoadAnnotations(with_mask=True), as in a run."""
    def edit(data):
        data['annotations'][0]['bbox'][3] = float('inf')
        data['annotations'][1]['segmentation'] = []
    inf, no_mask = (f'{coco}/train2017/{a["image_id"]:012d}.jpg' for a in
                    edit_json(coco, edit)['annotations'][:2])
    config = det_config(tmp_path, coco)
    assert sorted(check_dataset(config).errors) == sorted([
        f'{inf}: boxes with NaN / Inf values that the loader keeps; fix them',
        f"{no_mask}: LoadAnnotations cannot load its annotations (KeyError: "
        "'mask'): an annotation without segmentation (give it a polygon or "
        'RLE mask, or remove it)'])
    # Box-only training does not load masks.
    assert len(check_dataset(config, cfg_options={
        'train_dataloader.dataset.pipeline.1.with_mask': False}).errors) == 1


def test_broken_ade20k_labels_are_flagged(tmp_path):
    root = generate_ade20k(tmp_path / 'ade', **SMALL).data_root
    labels = sorted((root / 'annotations' / 'training').glob('*.png'))
    beyond = cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED)
    beyond[:4, :4] = 200  # 199 after reduce_zero_label; 150 classes
    cv2.imwrite(str(labels[0]), beyond)
    cv2.imwrite(str(labels[1]), np.zeros((50, 96), np.uint8))
    labels[2].write_bytes(b'not a png')
    code, output = checker(seg_config(tmp_path, root))
    assert code == 1, output
    image = str(labels[1]).replace('annotations', 'images')[:-3] + 'jpg'
    assert f'{labels[0]}: label values [199] are beyond' in output
    assert f'ERROR: {image}: decoded 96x96 but its label map is 96x50' in \
        output.splitlines()
    assert f'ERROR: {labels[2]}: LoadAnnotations cannot load' in output
    assert '3 errors' in output


# --- one line, never a traceback ---------------------------------------------

HOSTILE = {'RecursionError': lambda data: '[' * 100_000 + ']' * 100_000,
           'TypeError': lambda data: json.dumps(dict(data, images=7))}


@pytest.mark.parametrize('tool', ['checker', 'train'])
@pytest.mark.parametrize('error', HOSTILE)
def test_hostile_json_is_one_line(tmp_path, coco, error, tool):
    """The checker's error, and the one that stops a training run (the
    pre-flight our configs select), both naming the file."""
    config = small_detection_config(tmp_path / 'tiny.py', coco,
                                    arch='xxtiny', size=64, images=2,
                                    channels=16)
    ann_file = coco / 'annotations' / 'instances_train2017.json'
    ann_file.write_text(HOSTILE[error](json.loads(ann_file.read_text())))
    if tool == 'train':
        code, output = run_tool([TRAIN, config, '--work-dir',
                                 tmp_path / 'work'], cwd=REPO, timeout=600)
        line = assert_one_line_error(code, output, str(ann_file))
        assert line.startswith('tools/train.py: error: '), line
        return
    code, output = checker(det_config(tmp_path, coco))
    line = assert_one_line_error(code, output)
    assert code == 2 and line.startswith(
        f'check_dataset.py: error: CocoDataset cannot load {ann_file} '
        f'({error}: '), line
    assert line.endswith('fix the data or train_dataloader.dataset in the '
                         'config.')


def test_missing_paths_and_splits_are_one_line(tmp_path, coco):
    config = det_config(tmp_path, coco)
    code, output = checker(config, '--cfg-options',
                           'train_dataloader.dataset.data_root=/no/such/')
    assert code == 2 and assert_one_line_error(code, output).startswith(
        'check_dataset.py: error: CocoDataset cannot load /no/such/'
        'annotations/instances_train2017.json (FileNotFoundError: ')
    with pytest.raises(DatasetConfigError, match='no test_dataloader'):
        check_dataset(config, 'test', dict(test_dataloader=None))
    path = tmp_path / 'noscope.py'
    path.write_text('train_dataloader = dict(dataset=dict(type="X"))\n')
    with pytest.raises(DatasetConfigError, match='set default_scope'):
        check_dataset(path)


# --- class order -------------------------------------------------------------


def renumber_categories(data):
    """Non-contiguous category ids, listed neither by id nor in the order
    of CLASSES: car (9), person (17), bicycle (3)."""
    new_ids = {1: 17, 2: 3, 3: 9}
    cats = {c['id']: c for c in data['categories']}
    data['categories'] = [dict(cats[i], id=new_ids[i]) for i in (3, 1, 2)]
    for ann in data['annotations']:
        ann['category_id'] = new_ids[ann['category_id']]


def names_match(tmp_path, root, classes):
    """Whether every instance CocoDataset loads has the class name of its
    json category (matched through its box)."""
    data = json.loads((root / 'annotations' /
                       'instances_train2017.json').read_text())
    category = {c['id']: c['name'] for c in data['categories']}
    by_box = {(a['image_id'], *np.round(a['bbox'], 2)): category[a[
        'category_id']] for a in data['annotations']}
    dataset = built(det_config(tmp_path, root, classes), pipeline=[])
    pairs = [(by_box[(info['img_id'], *np.round(
        [x1, y1, x2 - x1, y2 - y1], 2))], classes[inst['bbox_label']])
        for info in map(dataset.get_data_info, range(len(dataset)))
        for inst in info['instances'] for x1, y1, x2, y2 in [inst['bbox']]]
    return bool(pairs) and all(a == b for a, b in pairs)


@pytest.mark.parametrize('classes, advice', [
    (CLASSES, ('car', 'person', 'bicycle')),
    # A subset in another order plus a class the json lacks: the advice
    # keeps the class count.
    (('bicycle', 'dog', 'car'), ('car', 'bicycle', 'dog')),
])
def test_class_order_advice_fixes_the_names(tmp_path, coco, classes,
                                            advice):
    edit_json(coco, renumber_categories)
    assert not names_match(tmp_path, coco, classes)
    (error, ) = check_dataset(det_config(tmp_path, coco, classes)).errors
    assert error.startswith('metainfo.classes lists the json categories in '
                            'another order')
    assert ast.literal_eval(error.split('classes = ')[1]) == advice
    assert names_match(tmp_path, coco, advice)
    assert check_dataset(det_config(tmp_path, coco, advice)).ok
    # Listing them by id keeps the mislabel, and the error.
    assert not names_match(tmp_path, coco, ('bicycle', 'car', 'person'))
    assert not check_dataset(det_config(tmp_path, coco, (
        'bicycle', 'car', 'person'))).ok


# --- images ------------------------------------------------------------------


def test_undecodable_images_are_flagged(tmp_path, coco):
    truncated, empty, missing = sorted((coco / 'train2017').glob('*.jpg'))[:3]
    truncated.write_bytes(truncated.read_bytes()[:1500])
    with Image.open(truncated) as img:
        assert img.size == (96, 96)  # the header alone looks fine
    empty.write_bytes(b'')
    missing.unlink()
    errors = check_dataset(det_config(tmp_path, coco)).errors
    assert errors[1:] == [f'{empty}: empty file (0 bytes)',
                          f'{missing}: missing'], errors
    assert errors[0].startswith(f'{truncated}: truncated or corrupt (image '
                                'file is truncated ('), errors


def tag_orientation(path, orientation):
    """Add an EXIF orientation tag, keeping the stored pixels."""
    with Image.open(path) as img:
        img.load()
        exif = img.getexif()
        exif[0x0112] = orientation
        img.save(path, exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_exif_turn_against_annotations_is_fixed_by_the_advice(tmp_path,
                                                              task):
    """mmcv's LoadImageFromFile turns a tagged image; the annotations fit
    the stored pixels: an error whose advice, followed in every pipeline,
    passes. A tag that keeps the size is a warning."""
    if task == 'det':
        root = generate_coco(tmp_path / 'data', 3, 1, WIDE).data_root
        images, config = root / 'train2017', det_config(tmp_path, root)
        what = 'json width / height'
    else:
        root = generate_ade20k(tmp_path / 'data', 3, 1, WIDE).data_root
        images, config = root / 'images/training', seg_config(tmp_path, root)
        what = 'label map'
    turned, flipped = sorted(images.glob('*.jpg'))[:2]
    tag_orientation(turned, 6)
    tag_orientation(flipped, 3)
    report = check_dataset(config)
    (error, ) = report.errors
    assert error == (
        f'{turned}: decoded 64x96 but its {what} is 96x64: LoadImageFromFile'
        f' turns its EXIF orientation 6, and its {what} matches the stored '
        "pixels; make them agree with color_type='color_ignore_orientation' "
        "in every pipeline's LoadImageFromFile"), error
    (warning, ) = report.warnings
    assert warning.startswith(f'{flipped}: EXIF orientation 3, which keeps '
                              'the size')
    # The loader is the first step of every pipeline.
    report = check_dataset(config, cfg_options={
        f'{split}_dataloader.dataset.pipeline.0.color_type':
        'color_ignore_orientation' for split in ('train', 'val', 'test')})
    assert report.ok, report.format()
