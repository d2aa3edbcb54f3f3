"""tools/misc/check_dataset.py: clean generated data passes with the
generator's counts; what mmdet's CocoDataset drops is named (checked against
the class itself); broken annotations, labels and images are flagged; the
advice for a class order or an EXIF turn fixes the labels when followed;
hostile jsons and missing paths end the tool in one line."""
import ast
import json
from collections import Counter

import cv2
import numpy as np
import pytest
from helpers import TOOLS, assert_one_line_error, run_tool
from mmengine.config import Config
from mmengine.registry import DATASETS, init_default_scope
from PIL import Image

from mmgcvit.dataset_tools import (DatasetConfigError, check_dataset,
                                   generate_ade20k, generate_coco)

TOOL = TOOLS / 'misc' / 'check_dataset.py'
SMALL = dict(num_train=6, num_val=2, img_size=96)
CLASSES = ('person', 'bicycle', 'car')
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


def det_config(tmp_path, root, classes=CLASSES):
    path = tmp_path / 'det.py'
    path.write_text(DET_CONFIG.format(root=f'{root}/', classes=classes))
    return path


def seg_config(tmp_path, root):
    path = tmp_path / 'seg.py'
    path.write_text(SEG_CONFIG.format(root=str(root)))
    return path


def checker(config, *args):
    """(exit status, output) of the tool in a fresh process."""
    return run_tool([TOOL, config, *args], cwd=TOOLS.parent)


def one_line_error(code, output):
    """The tool's one error line (exit status 2), without its prefix."""
    assert code == 2, output
    return assert_one_line_error(code, output).split(': error: ', 1)[1]


def edit_json(root, edit, split='train'):
    """Apply ``edit`` to the split's json; return the parsed json."""
    ann_file = root / 'annotations' / f'instances_{split}2017.json'
    data = json.loads(ann_file.read_text())
    edit(data)
    ann_file.write_text(json.dumps(data))
    return data


@pytest.fixture
def coco(tmp_path):
    return generate_coco(tmp_path / 'coco', **SMALL)


def test_clean_coco_passes_with_the_generated_counts(tmp_path, coco):
    code, output = checker(det_config(tmp_path, coco.data_root))
    assert code == 0, output
    assert '0 errors, 0 warnings' in output
    rows = {line.split()[0]: line.split()[1:] for line in output.splitlines()}
    for name, count in coco.counts['train']['instances'].items():
        assert rows[name][1] == str(count), output


def test_clean_ade20k_passes_with_the_generated_pixels(tmp_path):
    ade = generate_ade20k(tmp_path / 'ade', **SMALL)
    report = check_dataset(seg_config(tmp_path, ade.data_root))
    assert report.ok and not report.warnings, report.format()
    assert report.num_images == 6
    assert {name: pixels for name, _, pixels in report.per_class
            if pixels} == ade.counts['train']['pixels']


def test_what_coco_dataset_drops_is_named(tmp_path, coco):
    """Each annotation CocoDataset drops, with the reason; one line for
    the categories outside the classes; the images filter_cfg drops, as
    many as the class itself leaves out."""
    def edit(data):
        anns = data['annotations']
        anns[0]['bbox'] = [500, 500, 10, 10]
        anns[1]['category_id'] = 99
        anns[2]['bbox'][2] = float('nan')
        anns[3]['bbox'][3] = 0.5
        anns.append(dict(anns[4], id=1000, image_id=12345))
    data = edit_json(coco.data_root, edit)
    anns = data['annotations']
    classes = ('person', 'bicycle')  # 'car' (id 3) left out
    config = det_config(tmp_path, coco.data_root, classes)
    report = check_dataset(config)
    images = {i['id']: i['file_name'] for i in data['images']}

    def named(ann):
        return f'annotation id {ann["id"]} ({images[ann["image_id"]]})'

    kept = {0, 2, 3} - {i for i in (0, 2, 3)
                        if anns[i]['category_id'] == 3}
    expected = [f'{named(anns[i])}: {why}; CocoDataset drops it'
                for i, why in ((0, 'bbox [500, 500, 10, 10] lies outside '
                                'the 96x96 image'),
                               (2, f'bbox {anns[2]["bbox"]} / area '
                                f'{anns[2]["area"]} is not finite (NaN or '
                                'Inf)'),
                               (3, f'bbox {anns[3]["bbox"]} / area '
                                f'{anns[3]["area"]} is under one pixel'))
                if i in kept]
    expected += [f'{named(anns[1])}: category_id 99 is no json category; '
                 'CocoDataset drops it',
                 'annotation id 1000: image_id 12345 is not in images; '
                 'CocoDataset drops it']
    assert sorted(report.errors) == sorted(expected), report.format()

    cars = sum(1 for a in anns if a['category_id'] == 3 and
               a['image_id'] in images)
    init_default_scope('mmdet')
    dataset = DATASETS.build(Config.fromfile(config).train_dataloader
                             .dataset)
    assert report.num_images == len(dataset) < len(images)
    (outside, dropped) = report.warnings
    assert outside == (f"{cars} annotations of json categories outside "
                       f"metainfo.classes, which CocoDataset drops: 'car' "
                       f'(id 3, {cars})')
    assert dropped.startswith(
        f'CocoDataset loads {len(dataset)} of the {len(images)} images of '
        f'annotations/instances_train2017.json, dropping those that '
        f'{len(images) - len(dataset)} hold no annotation of '
        'train_dataloader.dataset.metainfo.classes '
        '(filter_cfg.filter_empty_gt)'), dropped


def test_counts_are_those_of_the_loaded_images(tmp_path, coco):
    config = det_config(tmp_path, coco.data_root)
    report = check_dataset(config, cfg_options={
        'train_dataloader.dataset.indices': [1, 3]})
    init_default_scope('mmdet')
    dataset = DATASETS.build(dict(Config.fromfile(config).train_dataloader
                                  .dataset, indices=[1, 3]))
    labels = Counter(i['bbox_label'] for k in range(len(dataset))
                     for i in dataset.get_data_info(k)['instances'])
    assert report.num_images == 2 and dict(report.counts) == labels
    (dropped, ) = report.warnings
    assert 'dropping those that 4 are not in train_dataloader.dataset.' \
        'indices, e.g. [' in dropped, dropped


def test_dropping_every_image_is_an_error(tmp_path, coco):
    edit_json(coco.data_root, lambda data: data.update(annotations=[]))
    report = check_dataset(det_config(tmp_path, coco.data_root))
    (error, ) = report.errors
    assert error.startswith('CocoDataset loads 0 of the 6 images')
    assert error.endswith('nothing is left to load; fix the data or these '
                          'keys')


def test_inf_box_and_empty_segmentation(tmp_path, coco):
    """An Inf height passes CocoDataset's filter; an empty segmentation
    fails the pipeline's LoadAnnotations(with_mask=True), as in a run."""
    def edit(data):
        data['annotations'][0]['bbox'][3] = float('inf')
        data['annotations'][1]['segmentation'] = []
    data = edit_json(coco.data_root, edit)
    images = {i['id']: i['file_name'] for i in data['images']}
    inf_image, no_mask_image = (images[a['image_id']]
                                for a in data['annotations'][:2])
    config = det_config(tmp_path, coco.data_root)
    report = check_dataset(config)
    prefix = f'{coco.data_root}/train2017/'
    assert f'{prefix}{inf_image}: boxes with NaN / Inf values that the ' \
        'loader keeps; fix them' in report.errors
    assert f"{prefix}{no_mask_image}: LoadAnnotations cannot load its " \
        "annotations (KeyError: 'mask'): an annotation without " \
        'segmentation (give it a polygon or RLE mask, or remove it)' in \
        report.errors
    assert len(report.errors) == 2, report.format()
    # Box-only training does not load masks.
    report = check_dataset(config, cfg_options={
        'train_dataloader.dataset.pipeline.1.with_mask': False})
    assert not [e for e in report.errors if 'mask' in e], report.format()


def test_broken_ade20k_labels_are_flagged(tmp_path):
    ade = generate_ade20k(tmp_path / 'ade', **SMALL)
    labels = sorted((ade.data_root / 'annotations' / 'training').glob(
        '*.png'))
    beyond = cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED)
    beyond[:4, :4] = 200  # 199 after reduce_zero_label; 150 classes
    cv2.imwrite(str(labels[0]), beyond)
    cv2.imwrite(str(labels[1]), np.zeros((50, 96), np.uint8))
    labels[2].write_bytes(b'not a png')

    code, output = checker(seg_config(tmp_path, ade.data_root))
    assert code == 1, output
    image = str(labels[1]).replace('annotations', 'images')[:-3] + 'jpg'
    assert f'{labels[0]}: label values [199] are beyond' in output
    assert f'ERROR: {image}: decoded 96x96 but its label map is 96x50' in \
        output.splitlines()
    assert f'ERROR: {labels[2]}: LoadAnnotations cannot load' in output
    assert '3 errors' in output


# --- one line, never a traceback ---------------------------------------------


def deep_json(data):
    return '[' * 100_000 + ']' * 100_000


@pytest.mark.parametrize('hostile, what', [
    (deep_json, 'RecursionError'),
    (lambda data: json.dumps(dict(data, images=7)), 'TypeError'),
])
def test_hostile_json_is_one_line(tmp_path, coco, hostile, what):
    ann_file = coco.data_root / 'annotations' / 'instances_train2017.json'
    original = json.loads(ann_file.read_text())
    ann_file.write_text(hostile(original))
    config = det_config(tmp_path, coco.data_root)
    line = one_line_error(*checker(config))
    assert line.startswith(f'CocoDataset cannot load {ann_file} '
                           f'({what}: ')
    assert line.endswith('fix the data or train_dataloader.dataset in the '
                         'config.')
    ann_file.write_text(json.dumps(dict(original, images=[1, 2])))
    with pytest.raises(DatasetConfigError, match='TypeError'):
        check_dataset(config)


def test_missing_paths_and_splits_are_one_line(tmp_path, coco):
    config = det_config(tmp_path, coco.data_root)
    line = one_line_error(*checker(config, '--cfg-options',
                                   'train_dataloader.dataset.data_root='
                                   '/no/such/dir/'))
    assert line.startswith('CocoDataset cannot load /no/such/dir/'
                           'annotations/instances_train2017.json '
                           '(FileNotFoundError: '), line
    with pytest.raises(DatasetConfigError, match='no test_dataloader'):
        check_dataset(config, split='test',
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


def renumber_categories(data):
    cats = {NEW_IDS[c['id']]: dict(c, id=NEW_IDS[c['id']])
            for c in data['categories']}
    data['categories'] = [cats[i] for i in JSON_ORDER]
    for ann in data['annotations']:
        ann['category_id'] = NEW_IDS[ann['category_id']]


def loaded_names(root, classes):
    """Per instance CocoDataset loads: (its json category name, the class
    name its label has), matched through the box."""
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
            (name, ) = [v for k, v in by_box.items() if k[0] == info[
                'img_id'] and np.allclose(k[1:], (x1, y1, x2 - x1, y2 - y1))]
            pairs.append((name, classes[inst['bbox_label']]))
    return pairs


def printed_classes(text):
    (line, ) = [ln for ln in text.splitlines() if 'classes = (' in ln]
    return ast.literal_eval(line[line.index('classes = (') + 10:])


def test_class_order_advice_fixes_the_names(tmp_path, coco):
    root = coco.data_root
    edit_json(root, renumber_categories)
    assert any(a != b for a, b in loaded_names(root, CLASSES))

    (error, ) = check_dataset(det_config(tmp_path, root)).errors
    assert error.startswith('metainfo.classes lists the json categories in '
                            'another order')
    advice = printed_classes(error)
    assert advice == ('car', 'person', 'bicycle')
    pairs = loaded_names(root, advice)
    assert pairs and all(a == b for a, b in pairs)
    assert check_dataset(det_config(tmp_path, root, advice)).ok
    # Listing them by id keeps the mislabel.
    by_id = ('bicycle', 'car', 'person')
    assert any(a != b for a, b in loaded_names(root, by_id))
    assert not check_dataset(det_config(tmp_path, root, by_id)).ok


def test_class_order_advice_keeps_classes_without_category(tmp_path, coco):
    """A subset in the wrong order plus a class the json lacks: the advice
    keeps the class count and gives each category its own name."""
    root = coco.data_root
    edit_json(root, renumber_categories)
    report = check_dataset(det_config(tmp_path, root,
                                      ('bicycle', 'dog', 'car')))
    advice = printed_classes('\n'.join(report.errors))
    assert advice == ('car', 'bicycle', 'dog')
    pairs = loaded_names(root, advice)
    assert pairs and all(a == b for a, b in pairs)
    report = check_dataset(det_config(tmp_path, root, advice))
    assert report.ok, report.format()


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


def cfg_options_of(error):
    """The advised LoadImageFromFile settings as ``--cfg-options`` for the
    loader of every pipeline (the first step in each)."""
    advice = error.split('make them agree with ')[1].split(' in every')[0]
    settings = dict(pair.split('=') for pair in advice.split(', '))
    return {f'{split}_dataloader.dataset.pipeline.0.{k}': v.strip("'")
            for split in ('train', 'val', 'test')
            for k, v in settings.items()}


def test_exif_turn_against_annotations_is_fixed_by_the_advice(tmp_path):
    root = generate_coco(tmp_path / 'wide', num_train=3, num_val=1,
                         img_size=WIDE).data_root
    turned, flipped = sorted((root / 'train2017').glob('*.jpg'))[:2]
    tag_orientation(turned, 6)
    tag_orientation(flipped, 3)
    config = det_config(tmp_path, root)

    report = check_dataset(config)
    (error, ) = report.errors
    assert error.startswith(
        f'{turned}: decoded 64x96 but its json width / height is '
        '96x64: LoadImageFromFile turns its EXIF orientation 6, and its '
        'json width / height matches the stored pixels; make them agree '
        "with color_type='color_ignore_orientation' in every pipeline's "
        'LoadImageFromFile'), error
    options = cfg_options_of(error)
    (warning, ) = report.warnings
    assert warning.startswith(f'{flipped}: EXIF orientation 3, which keeps '
                              'the size')

    report = check_dataset(config, cfg_options=options)
    assert report.ok, report.format()


def test_exif_turn_against_segmentation_labels(tmp_path):
    ade = generate_ade20k(tmp_path / 'ade', num_train=2, num_val=1,
                          img_size=WIDE)
    tagged = sorted((ade.data_root / 'images' / 'training').glob(
        '*.jpg'))[0]
    tag_orientation(tagged, 6)
    config = seg_config(tmp_path, ade.data_root)
    (error, ) = check_dataset(config).errors
    assert f'{tagged}: decoded 64x96 but its label map is 96x64: ' \
        'LoadImageFromFile turns its EXIF orientation 6, and its label map ' \
        'matches the stored pixels' in error, error
    report = check_dataset(config, cfg_options=cfg_options_of(error))
    assert report.ok, report.format()
