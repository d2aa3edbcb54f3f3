"""Data that used to break a run late or unclearly now stops it with one
line naming the problem, the fix and the dataset checker: COCO jsons that
leave no image or hold empty segmentations (pre-flight), and images that
cannot be loaded mid-epoch (``one_line_image_errors``), in the main process
and in DataLoader workers."""
import json
from pathlib import Path

import pytest
import torch
from helpers import REPO, TRAIN, run_tool, small_detection_config
from mmcv.transforms import LoadImageFromFile
from mmengine.config import Config
from mmengine.registry import DATASETS, init_default_scope

from mmgcvit.cli.image_loading import ImageLoadError, one_line_image_errors
from mmgcvit.cli.launch import ONE_LINE_ERRORS
from mmgcvit.cli.preflight import DataError, check_data
from mmgcvit.dataset_tools import generate_coco

CONFIG = """
_base_ = 'mmdet::_base_/datasets/coco_instance.py'
default_scope = 'mmdet'
metainfo = dict(classes=('person', 'bicycle', 'car'))
train_dataloader = dict(dataset=dict(data_root={root!r}, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root={root!r}, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={root!r} + 'annotations/instances_val2017.json')
work_dir = {work_dir!r}
"""


@pytest.fixture
def coco(tmp_path):
    return generate_coco(tmp_path / 'coco', num_train=4, num_val=2,
                         img_size=64).data_root


@pytest.fixture
def cfg(tmp_path, coco):
    path = tmp_path / 'det.py'
    path.write_text(CONFIG.format(root=f'{coco}/',
                                  work_dir=str(tmp_path / 'work')))
    init_default_scope('mmdet')
    return Config.fromfile(path)


def edit_json(coco, split, edit):
    """Apply ``edit`` to the split's json; return its path and what
    ``edit`` returned (names for the expected message)."""
    ann_file = coco / 'annotations' / f'instances_{split}2017.json'
    data = json.loads(ann_file.read_text())
    names = edit(data)
    ann_file.write_text(json.dumps(data))
    return ann_file, names


def no_annotations(data):
    data['annotations'] = []
    return {}


def other_categories(data):
    for ann in data['annotations']:
        ann['category_id'] = 99
    data['categories'].append(dict(id=99, name='dog'))
    return {}


def empty_segmentation(data):
    ann = data['annotations'][1]
    ann['segmentation'] = []
    (image, ) = [i for i in data['images'] if i['id'] == ann['image_id']]
    return dict(ann_id=ann['id'], file_name=image['file_name'])


# (edit, what mmdet says without the pre-flight check, our line after the
# json's path)
BROKEN_JSONS = {
    'no annotations': (
        no_annotations, 'need at least one array to concatenate',
        ' has no annotations, and train_dataloader.dataset.filter_cfg.'
        'filter_empty_gt drops images without any, so no image is left to '
        'train on: point train_dataloader.dataset.ann_file at the annotated '
        'json; then check the whole dataset with: python '
        'tools/misc/check_dataset.py {config}'),
    'no annotation of the classes': (
        other_categories, 'need at least one array to concatenate',
        ' has a category among train_dataloader.dataset.metainfo.classes, '
        'so filter_empty_gt leaves no image to train on: set '
        "metainfo.classes to json category names, e.g. classes = ('person',"
        " 'bicycle', 'car', 'dog'); then check the whole dataset with: "
        'python tools/misc/check_dataset.py {config}'),
    'empty segmentation': (
        empty_segmentation, "KeyError: 'mask'",
        " have an empty segmentation, which LoadAnnotations(with_mask=True) "
        "cannot load (KeyError: 'mask') (e.g. annotation id {ann_id} of "
        '{file_name}): give each a polygon or RLE mask, or remove them; '
        'then check the whole dataset with: python '
        'tools/misc/check_dataset.py {config}'),
}


def library_error(cfg):
    """What building the train dataset and loading every sample raises."""
    try:
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        for index in range(len(dataset)):
            dataset[index]
    except Exception as error:
        return f'{type(error).__name__}: {error}'
    return None


@pytest.mark.parametrize('case', list(BROKEN_JSONS))
def test_preflight_names_what_the_library_reports_unclearly(cfg, coco, case):
    edit, unclear, ours = BROKEN_JSONS[case]
    ann_file, names = edit_json(coco, 'train', edit)
    assert unclear in library_error(cfg)
    with pytest.raises(DataError) as caught:
        check_data(cfg, 'train')
    message = str(caught.value)
    assert '\n' not in message
    assert message.endswith(ours.format(config=cfg.filename, **names)), \
        message
    assert str(ann_file) in message
    assert DataError in ONE_LINE_ERRORS


def test_preflight_passes_clean_data_and_names_the_split(cfg, coco):
    check_data(cfg, 'train')
    check_data(cfg, 'val')
    edit_json(coco, 'val', empty_segmentation)
    check_data(cfg, 'train')
    # The config the run dumped into its work dir holds its --cfg-options.
    dumped = Path(cfg.work_dir, 'det.py')
    dumped.parent.mkdir()
    cfg.dump(dumped)
    with pytest.raises(DataError, match='empty segmentation') as caught:
        check_data(cfg, 'val')
    assert str(caught.value).endswith(
        f'python tools/misc/check_dataset.py {dumped} --split val')


BREAKAGES = {
    'missing': (lambda path: path.unlink(), 'it does not exist'),
    'empty': (lambda path: path.write_bytes(b''), 'it is empty (0 bytes)'),
    'truncated': (lambda path: path.write_bytes(
        path.read_bytes()[:path.stat().st_size // 2]),
                  'it cannot be decoded (truncated or corrupt)'),
}


@pytest.mark.parametrize('num_workers', [0, 1])
@pytest.mark.parametrize('breakage', list(BREAKAGES))
def test_unloadable_image_is_one_line(cfg, coco, breakage, num_workers):
    """Also from a DataLoader worker process, whose exception torch
    re-raises in the main process with the worker's whole traceback."""
    dataset = DATASETS.build(dict(cfg.val_dataloader.dataset,
                                  pipeline=[dict(type='LoadImageFromFile')]))
    image = sorted((coco / 'val2017').glob('*.jpg'))[1]
    break_it, problem = BREAKAGES[breakage]
    break_it(image)
    original = LoadImageFromFile.transform
    loader = torch.utils.data.DataLoader(dataset, num_workers=num_workers,
                                         collate_fn=list)
    with pytest.raises(ImageLoadError) as caught:
        with one_line_image_errors(cfg):
            list(loader)
    assert LoadImageFromFile.transform is original
    assert str(caught.value) == (
        f'cannot load image {image}: {problem}; fix or remove it, and find '
        'every such image with: python tools/misc/check_dataset.py '
        f'{cfg.filename} --split val')
    # Without the context: mmcv's and OpenCV's own errors.
    with pytest.raises(Exception) as bare:
        list(torch.utils.data.DataLoader(dataset, collate_fn=list))
    assert not isinstance(bare.value, ImageLoadError)


@pytest.mark.slow
def test_train_stops_on_an_empty_image_with_one_line(tmp_path):
    """tools/train.py with a worker process: the one line names the image
    and a checker command that, run as printed, finds the image."""
    root = generate_coco(tmp_path / 'coco', num_train=2, num_val=1,
                         img_size=64).data_root
    image = sorted((root / 'train2017').glob('*.jpg'))[0]
    image.write_bytes(b'')
    config = small_detection_config(tmp_path / 'tiny.py', root,
                                    arch='xxtiny', size=64, images=2,
                                    channels=16)
    work_dir = tmp_path / 'work'
    code, output = run_tool(
        [TRAIN, config, '--work-dir', work_dir, '--cfg-options',
         'train_dataloader.num_workers=1'], cwd=REPO, timeout=600)
    assert code != 0, output
    assert 'Traceback' not in output, output[-3000:]
    checker = f'python tools/misc/check_dataset.py {work_dir}/tiny.py'
    assert output.splitlines()[-1] == (
        f'train.py: error: cannot load image {image}: it is empty (0 '
        f'bytes); fix or remove it, and find every such image with: '
        f'{checker}'), output[-3000:]

    code, output = run_tool(checker.split()[1:], cwd=REPO)
    assert code == 1, output
    assert f'ERROR: {image}: empty file (0 bytes)' in output.splitlines()
