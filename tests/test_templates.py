"""The custom-data templates work wherever a user copies them.

Both inherit through ``mmgcvit::`` (the installed package), not a path
relative to the checkout. A copy in a temporary folder outside the
checkout, edited as docs/custom_data.md says (classes, data root, file
names), loads to the same settings as the template in place and trains a
few iterations on generated data with mmdet's / mmseg's own
``tools/train.py`` (what ours runs), from that folder.
"""
import re
import sys

import pytest
from helpers import (MMDET_TRAIN, MMSEG_TRAIN, REPO, det_scaled_down,
                     last_checkpoint, run, seg_scaled_down)
from mmengine.config import Config

from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.dataset_tools import generate_custom_seg

DET_TEMPLATE = REPO / 'configs/detection/mask-rcnn_gcvit-t_fpn_custom-coco.py'
SEG_TEMPLATE = REPO / 'configs/segmentation/upernet_gcvit-t_custom-seg.py'
# The classes of the generated data (conftest's COCO and generate_custom_seg).
COCO_CLASSES = ('person', 'bicycle', 'car')
SEG_CLASSES = ('widget', 'gadget', 'gizmo')


def copy_template(template, folder, edits):
    """``template`` copied into ``folder`` with ``edits`` (old text -> new
    text, wherever it occurs) applied, as a user edits their copy."""
    assert not folder.resolve().is_relative_to(REPO)
    folder.mkdir(parents=True, exist_ok=True)
    text = template.read_text()
    for old, new in edits.items():
        assert old in text, f'{template.name}: {old!r}'
        text = text.replace(old, new)
    path = folder / f'my_{template.name}'
    path.write_text(text)
    return path


def det_copy(folder, coco_root):
    """The detection template for the generated COCO data: its classes,
    root and COCO's file names."""
    return copy_template(DET_TEMPLATE, folder, {
        "classes = ('scratch', 'dent', 'crack')": f'classes = {COCO_CLASSES}',
        "data_root = 'data/my_dataset/'": f'data_root = {coco_root + "/"!r}',
        "'annotations/train.json'": "'annotations/instances_train2017.json'",
        "'annotations/val.json'": "'annotations/instances_val2017.json'",
        "img='train/'": "img='train2017/'",
        "img='val/'": "img='val2017/'",
    })


def seg_copy(folder, data_root):
    return copy_template(SEG_TEMPLATE, folder, {
        "classes = ('background', 'crack')": f'classes = {SEG_CLASSES}',
        'palette = [[0, 0, 0], [255, 64, 0]]':
        'palette = [[220, 40, 40], [40, 220, 40], [40, 40, 220]]',
        "data_root = 'data/my_seg_dataset/'":
        f'data_root = {str(data_root)!r}',
    })


@pytest.mark.parametrize('template', [DET_TEMPLATE, SEG_TEMPLATE],
                         ids=['det', 'seg'])
def test_template_inherits_through_the_package(template):
    assert re.search(r"^_base_ = 'mmgcvit::", template.read_text(), re.M)


@pytest.mark.parametrize('template', [DET_TEMPLATE, SEG_TEMPLATE],
                         ids=['det', 'seg'])
def test_unedited_copy_loads_as_the_template(template, tmp_path):
    copy = copy_template(template, tmp_path / 'elsewhere', {})
    original, copied = (Config.fromfile(path).to_dict()
                        for path in (template, copy))
    assert copied == original
    assert copied['model']['backbone']['type'] == 'GCViT'


@pytest.fixture(scope='module')
def seg_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('custom_seg')
    return generate_custom_seg(root / 'my_seg_dataset', num_train=4,
                               num_val=4, img_size=128,
                               classes=SEG_CLASSES).data_root


def trained_heads(work_dir):
    state = load_checkpoint(last_checkpoint(work_dir))['state_dict']
    return {k: v.shape[0] for k, v in state.items()
            if k.endswith(('fc_cls.weight', 'conv_logits.weight',
                           'conv_seg.weight'))}


@pytest.mark.slow
def test_copied_detection_template_trains(tmp_path, coco_root):
    folder = tmp_path / 'my_project'
    config = det_copy(folder, coco_root)
    log = run([sys.executable, MMDET_TRAIN, config.name, '--work-dir', 'work',
               *det_scaled_down(coco_root, 1, 'model.backbone.arch=xxtiny')],
              cwd=folder)
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', log), log[-3000:]
    assert 'coco/segm_mAP' in log, log[-3000:]
    # + background; the heads follow the copy's classes.
    assert trained_heads(folder / 'work') == {
        'roi_head.bbox_head.fc_cls.weight': len(COCO_CLASSES) + 1,
        'roi_head.mask_head.conv_logits.weight': len(COCO_CLASSES)}


@pytest.mark.slow
def test_copied_segmentation_template_trains(tmp_path, seg_data):
    folder = tmp_path / 'my_project'
    config = seg_copy(folder, seg_data)
    log = run([sys.executable, MMSEG_TRAIN, config.name, '--work-dir', 'work',
               *seg_scaled_down(seg_data), 'model.backbone.arch=xxtiny'],
              cwd=folder)
    assert 'mIoU' in log, log[-3000:]
    assert trained_heads(folder / 'work') == {
        'decode_head.conv_seg.weight': len(SEG_CLASSES),
        'auxiliary_head.conv_seg.weight': len(SEG_CLASSES)}
