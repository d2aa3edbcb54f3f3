"""Fine-tuning on your own data, as README's "Train on your own data" does:
a copy of each custom config, edited as a user would, fine-tunes on
generated data with 3 classes from a checkpoint of the standard config (80
COCO / 150 ADE20K classes; freshly initialised, it has a trained one's
weight names and shapes) and evaluates with ``tools/test.py``. Every run is
scaled down by ``--cfg-options`` only.
"""
import re
from pathlib import Path

import pytest
import torch
from helpers import (REPO, TEST_IMAGES, assert_coco_metrics_recomputed,
                     assert_miou_recomputed, det_scaled_down, evaluate,
                     last_checkpoint, random_checkpoint, seg_scaled_down,
                     train, with_dumped_predictions)

from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.dataset_tools import generate_coco, generate_custom_seg

DET_STANDARD = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_1x_coco.py'
DET_CUSTOM = REPO / 'configs/detection/mask-rcnn_gcvit-t_fpn_custom-coco.py'
SEG_STANDARD = (REPO / 'configs/segmentation/'
                'upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py')
SEG_CUSTOM = REPO / 'configs/segmentation/upernet_gcvit-t_custom-seg.py'
CLASSES = ('widget', 'gadget', 'gizmo')
PALETTE = [[220, 40, 40], [40, 220, 40], [40, 40, 220]]
XXT = 'model.backbone.arch=xxtiny'


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """The trainings run as subprocesses on shared cores."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('OMP_NUM_THREADS', '1')
        yield


def user_config(template, directory, **values):
    """A copy of ``template`` in ``directory`` (its ``mmgcvit::`` base
    resolves anywhere) with the top-level settings ``values`` edited (what
    the README asks a user to do)."""
    text = template.read_text()
    for name, value in values.items():
        text, count = re.subn(rf'^{name} = .*$', f'{name} = {value!r}', text,
                              flags=re.M)
        assert count == 1, f'{template} has no single-line `{name} = ...`'
    path = Path(directory) / f'{template.stem}_edited.py'
    path.write_text(text)
    return path


def custom_coco(root):
    """Generated COCO data with CLASSES, also under the names of the custom
    config (``annotations/{train,val}.json``, ``{train,val}/``)."""
    data_root = generate_coco(root, 8, 4, 128, classes=CLASSES).data_root
    for split in ('train', 'val'):
        (data_root / 'annotations' / f'{split}.json').symlink_to(
            data_root / 'annotations' / f'instances_{split}2017.json')
        (data_root / split).symlink_to(data_root / f'{split}2017',
                                       target_is_directory=True)
    return data_root


def skip_report(output):
    """The line mmgcvit.LoadReportHook logs for skipped weights."""
    lines = [line for line in output.splitlines()
             if 'weights NOT loaded because their shapes differ' in line]
    assert len(lines) == 1, output[-6000:]
    return lines[0]


def table_rows(output, header):
    """First-column names of each ASCII table (the loggers' per-class
    tables) whose header row starts with ``header``."""
    tables, rows = [], None
    for line in output.splitlines():
        if line.startswith('|'):
            first = line.strip('|').split('|')[0].strip()
            if first == header:
                rows = []
                tables.append(rows)
            elif rows is not None:
                rows.append(first)
        elif not line.startswith('+'):
            rows = None
    return tables


# The classifier layers the fine-tuning skips, and the first one's shapes.
SKIPPED = dict(
    det=(('roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg',
          'roi_head.mask_head.conv_logits'), '[81, 1024] -> [4, 1024]'),
    seg=(('decode_head.conv_seg', 'auxiliary_head.conv_seg'),
         '[150, 64, 1, 1] -> [3, 64, 1, 1]'))


@pytest.fixture(scope='module', params=['det', 'seg'])
def finetuned(request, tmp_path_factory):
    """The edited custom config fine-tuned from a checkpoint of the standard
    config (80 COCO / 150 ADE20K classes): (task, config, data root,
    --cfg-options, work dir, checkpoint, log)."""
    task, root = request.param, tmp_path_factory.mktemp(request.param)
    checkpoint = random_checkpoint(DET_STANDARD, root / 'std.pth') if \
        task == 'det' else random_checkpoint(
            SEG_STANDARD, root / 'std.pth', {  # seg_scaled_down's heads
                'model.decode_head.channels': 64,
                'model.auxiliary_head.channels': 32})
    if task == 'det':
        data_root = custom_coco(root / 'my_dataset')
        config = user_config(DET_CUSTOM, root, classes=CLASSES,
                             data_root=f'{data_root}/')
        options = det_scaled_down(data_root, 1, XXT)
    else:
        data_root = generate_custom_seg(root / 'my_seg_dataset', 8, 4, 128,
                                        classes=CLASSES).data_root
        config = user_config(SEG_CUSTOM, root, classes=CLASSES,
                             palette=PALETTE, data_root=f'{data_root}/')
        options = [*seg_scaled_down(data_root), XXT]
    output = train(config, root / 'work', *options,
                   f'load_from={checkpoint}')
    return task, config, data_root, options, root / 'work', checkpoint, \
        output


@pytest.mark.slow
def test_finetune_skips_the_classifiers_only(finetuned):
    task, _, _, _, work_dir, checkpoint, output = finetuned
    layers, shapes = SKIPPED[task]
    line = skip_report(output)
    assert f'{2 * len(layers)} weights NOT loaded' in line
    for layer in layers:
        assert f'{layer}.weight' in line and f'{layer}.bias' in line
    assert f'{layers[0]}.weight {shapes}' in line
    assert 'absent from it' not in line
    assert f'Load checkpoint from {checkpoint}' in output
    tuned, source = (load_checkpoint(path)['state_dict']
                     for path in (last_checkpoint(work_dir), checkpoint))
    assert tuned[f'{layers[0]}.weight'].shape[0] == len(CLASSES) + (
        task == 'det')  # + background
    # Everything else came from the checkpoint: a few small AdamW steps
    # (lr <= 1e-4) later it is still within 1e-3 of it.
    kept = [k for k in source if k.endswith('.weight') and not
            k.startswith(layers)]
    assert len(kept) > 50
    for key in kept:
        assert torch.allclose(tuned[key], source[key], atol=1e-3), key


@pytest.mark.slow
def test_test_reports_the_custom_classes(finetuned, tmp_path):
    task, config, data_root, options, work_dir, _, _ = finetuned
    dump = tmp_path / 'preds.pkl'
    if task == 'det':
        metrics, output = evaluate(config, last_checkpoint(work_dir),
                                   tmp_path / 'work', '--out', dump, *options)
        # CocoMetric's classwise tables, bbox then segm.
        assert table_rows(output, 'category') == [list(CLASSES)] * 2, \
            output[-4000:]
        assert sorted(k for k in metrics if k.endswith('_precision')) == \
            sorted(f'coco/{c}_precision' for c in CLASSES)
        assert_coco_metrics_recomputed(
            metrics, dump, data_root / 'annotations' / 'val.json',
            num_images=TEST_IMAGES)
        return
    metrics, output = evaluate(
        with_dumped_predictions(config, dump, tmp_path),
        last_checkpoint(work_dir), tmp_path / 'work', *options)
    # IoUMetric's per-class table.
    assert table_rows(output, 'Class') == [list(CLASSES)], output[-4000:]
    # The generated PNGs hold class indices, and 255 (ignored) on "other".
    assert_miou_recomputed(
        metrics, dump, data_root / 'img_dir' / 'val',
        ann_dir=data_root / 'ann_dir' / 'val', num_images=TEST_IMAGES,
        num_classes=len(CLASSES), reduce_zero_label=False)
