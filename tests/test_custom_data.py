"""Fine-tuning on your own data, as README's "Train on your own data" does.

For each task a short run of the standard config (COCO Mask R-CNN with 80
classes, ADE20K UPerNet with 150) gives a checkpoint; generated data with 3
classes that are neither COCO's nor ADE20K's is laid out as the custom
configs expect; a copy of each custom config edited as a user would (class
names, palette, data root) fine-tunes from that checkpoint (``load_from``)
and evaluates with ``tools/test.py``: the log names the classifier weights
that were skipped, and the per-class results list exactly the 3 class
names. Every run is scaled down by ``--cfg-options`` only (XXT backbone,
128-pixel images, a few iterations).
"""
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings
from helpers import (TEST_IMAGES, assert_coco_metrics_recomputed,
                     assert_miou_recomputed, evaluate, last_checkpoint,
                     seg_scaled_down, train, with_dumped_predictions)

from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.dataset_tools import generate_coco, generate_custom_seg
from mmgcvit.engine import check_weights_fit

REPO = Path(__file__).resolve().parents[1]
DET_STANDARD = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_1x_coco.py'
DET_CUSTOM = REPO / 'configs/detection/mask-rcnn_gcvit-t_fpn_custom-coco.py'
SEG_STANDARD = (REPO / 'configs/segmentation/'
                'upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py')
SEG_CUSTOM = REPO / 'configs/segmentation/upernet_gcvit-t_custom-seg.py'
CLASSES = ('widget', 'gadget', 'gizmo')
PALETTE = [[220, 40, 40], [40, 220, 40], [40, 40, 220]]
# The class-specific layers of Mask R-CNN / UPerNet.
DET_CLASSIFIERS = ('roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg',
                   'roi_head.mask_head.conv_logits')
SEG_CLASSIFIERS = ('decode_head.conv_seg', 'auxiliary_head.conv_seg')


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


def custom_coco(root, **kwargs):
    """A generated COCO dataset with CLASSES under the layout of the custom
    config (``annotations/{train,val}.json``, ``{train,val}/``), made of
    symlinks to the generator's COCO-named files."""
    generated = generate_coco(root / 'generated', classes=CLASSES, **kwargs)
    data_root = root / 'my_dataset'
    (data_root / 'annotations').mkdir(parents=True)
    source = generated.data_root
    for split in ('train', 'val'):
        (data_root / 'annotations' / f'{split}.json').symlink_to(
            source / 'annotations' / f'instances_{split}2017.json')
        (data_root / split).symlink_to(source / f'{split}2017',
                                       target_is_directory=True)
    return data_root, generated.counts


def det_scaled_down(splits=('train', 'val', 'test'), **overrides):
    """``--cfg-options`` shrinking a Mask R-CNN config to seconds of CPU:
    no ImageNet weights, 128-pixel images, 4 images per split in batches of
    2, fewer proposals, one epoch; keeps every detection so that CocoMetric
    has something to score."""
    options = {
        'model.backbone.init_cfg': None,
        'model.train_cfg.rpn_proposal.max_per_img': 100,
        'model.test_cfg.rpn.max_per_img': 100,
        'model.test_cfg.rcnn.score_thr': 0.0,
        # coco_instance.py's pipelines: train [2], test [1] is the Resize.
        'train_dataloader.dataset.pipeline.2.scale': (128, 128),
        'train_cfg.max_epochs': 1,
        'param_scheduler.0.end': 2,
        'default_hooks.logger.interval': 1,
    }
    for split in splits:
        options.update({
            f'{split}_dataloader.batch_size': 2,
            f'{split}_dataloader.num_workers': 0,
            f'{split}_dataloader.persistent_workers': False,
            f'{split}_dataloader.dataset.indices': TEST_IMAGES,
        })
        if split != 'train':
            options[f'{split}_dataloader.dataset.pipeline.1.scale'] = (128,
                                                                       128)
    options.update(overrides)
    return ['--cfg-options'] + [
        f'{key}={value}'.replace(' ', '') for key, value in options.items()
    ]


def det_config(directory, data_root):
    """The custom detection config, edited for CLASSES in ``data_root``."""
    return user_config(DET_CUSTOM, directory, classes=CLASSES,
                       data_root=f'{data_root}/')


def seg_config(directory, data_root):
    """The custom segmentation config, edited for CLASSES in ``data_root``."""
    return user_config(SEG_CUSTOM, directory, classes=CLASSES,
                       palette=PALETTE, data_root=f'{data_root}/')


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


def state_dict(checkpoint):
    return load_checkpoint(checkpoint)['state_dict']


# --- the load report -------------------------------------------------------


class Toy(torch.nn.Module):
    """A body, a 4-class head, a BN (whose num_batches_tracked mmengine
    does not count as missing) and a weight the checkpoint lacks."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(8, 4)
        self.bn = torch.nn.BatchNorm1d(2)
        self.new = torch.nn.Linear(1, 1, bias=False)


def test_load_report_lists_skipped_missing_and_unexpected():
    model = Toy()
    ckpt = {k: v for k, v in model.state_dict().items()
            if not k.startswith('new.') and k != 'bn.num_batches_tracked'}
    ckpt.update({'head.weight': torch.zeros(81, 8),
                 'head.bias': torch.zeros(81), 'old.w': torch.zeros(1)})
    line = check_weights_fit(ckpt, model, allow_partial=True)
    assert '\n' not in line
    assert '2 weights NOT loaded' in line
    assert 'head.weight [81, 8] -> [4, 8]' in line
    assert '1 model weights absent from it keep their initialisation: ' \
        'new.weight' in line
    assert '1 of its weights are unused by the model: old.w' in line
    assert check_weights_fit(model.state_dict(), model) is None

    many = {f'k{i}': torch.zeros(1) for i in range(25)}
    assert 'k9 and 15 more' in check_weights_fit(
        {**model.state_dict(), **many}, model, allow_partial=True)


# --- the shipped custom configs --------------------------------------------


@pytest.mark.parametrize('template', [DET_CUSTOM, SEG_CUSTOM],
                         ids=['detection', 'segmentation'])
def test_custom_config_sizes_heads_from_classes(template, tmp_path):
    """As shipped (GC ViT-T) and edited to CLASSES, every class-specific
    layer follows ``classes`` and every dataset lists them."""
    values = dict(classes=CLASSES)
    if template == SEG_CUSTOM:
        values['palette'] = PALETTE
    for path, classes in ((template, None),
                          (user_config(template, tmp_path, **values),
                           CLASSES)):
        cfg = Config.fromfile(path)
        classes = classes or cfg.classes
        import_modules_from_strings(**cfg.custom_imports)
        init_default_scope(cfg.default_scope)
        model = MODELS.build(dict(cfg.model, backbone=dict(
            cfg.model.backbone, init_cfg=None)))
        assert model.backbone.arch_settings['embed_dims'] == 64  # T
        if template == DET_CUSTOM:
            outputs = {
                'fc_cls': model.roi_head.bbox_head.fc_cls.out_features,
                'fc_reg': model.roi_head.bbox_head.fc_reg.out_features,
                'conv_logits':
                model.roi_head.mask_head.conv_logits.out_channels}
            # + background; 4 box coordinates per class.
            assert outputs == dict(fc_cls=len(classes) + 1,
                                   fc_reg=4 * len(classes),
                                   conv_logits=len(classes))
            assert cfg.val_evaluator.classwise
        else:
            for head in (model.decode_head, model.auxiliary_head):
                assert head.conv_seg.out_channels == len(classes)
                assert head.ignore_index == cfg.ignore_index == 255
            assert cfg.val_evaluator.ignore_index == 255
        for split in ('train', 'val', 'test'):
            dataset = cfg[f'{split}_dataloader'].dataset
            assert dataset.metainfo['classes'] == classes
            assert dataset.data_root == cfg.data_root


# --- detection: COCO (80 classes) -> 3 custom classes ----------------------


@pytest.fixture(scope='module')
def coco_checkpoint(coco_root, tmp_path_factory):
    """One epoch of the standard 80-class config: no validation (its
    CocoMetric would map 80 labels onto the 3 categories of the data)."""
    work_dir = tmp_path_factory.mktemp('det_standard') / 'work'
    train(DET_STANDARD, work_dir, *det_scaled_down(
        splits=('train', ), **{
            'train_dataloader.dataset.data_root': f'{coco_root}/',
            'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None}))
    ckpt = last_checkpoint(work_dir)
    assert state_dict(ckpt)['roi_head.bbox_head.fc_cls.weight'].shape[0] \
        == 81  # 80 classes + background
    return ckpt


@pytest.fixture(scope='module')
def det_finetuned(coco_checkpoint, tmp_path_factory):
    """The edited custom config fine-tuned from the 80-class checkpoint."""
    root = tmp_path_factory.mktemp('det_custom')
    data_root, _ = custom_coco(root, num_train=8, num_val=4, img_size=128)
    config = det_config(root, data_root)
    work_dir = root / 'work'
    output = train(config, work_dir, *det_scaled_down(**{
        'model.backbone.arch': 'xxtiny', 'load_from': coco_checkpoint}))
    return config, data_root, work_dir, output


@pytest.mark.slow
def test_det_finetune_skips_classifiers(coco_checkpoint, det_finetuned):
    _, _, work_dir, output = det_finetuned
    line = skip_report(output)
    assert '6 weights NOT loaded' in line
    for layer in DET_CLASSIFIERS:
        assert f'{layer}.weight' in line and f'{layer}.bias' in line
    assert 'fc_cls.weight [81, 1024] -> [4, 1024]' in line
    assert 'absent from it' not in line
    assert f'Load checkpoint from {coco_checkpoint}' in output
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', output)
    tuned, source = state_dict(last_checkpoint(work_dir)), \
        state_dict(coco_checkpoint)
    assert tuned['roi_head.bbox_head.fc_cls.weight'].shape[0] == 4
    # Everything else came from the checkpoint: two small AdamW steps
    # (lr <= 1e-4) later it is still within 1e-3 of it.
    for key in ('backbone.patch_embed.proj.weight',
                'neck.fpn_convs.0.conv.weight',
                'roi_head.bbox_head.shared_fcs.0.weight'):
        assert torch.allclose(tuned[key], source[key], atol=1e-3), key


@pytest.mark.slow
def test_det_test_reports_the_custom_classes(det_finetuned, tmp_path):
    config, data_root, work_dir, _ = det_finetuned
    dump = tmp_path / 'preds.pkl'
    metrics, output = evaluate(
        config, last_checkpoint(work_dir), tmp_path / 'work', '--out', dump,
        *det_scaled_down(**{'model.backbone.arch': 'xxtiny'}))
    # CocoMetric's classwise tables, bbox then segm.
    assert table_rows(output, 'category') == [list(CLASSES)] * 2, \
        output[-4000:]
    per_class = sorted(k for k in metrics if k.endswith('_precision'))
    assert per_class == sorted(f'coco/{c}_precision' for c in CLASSES)
    assert_coco_metrics_recomputed(metrics, dump,
                                   data_root / 'annotations' / 'val.json',
                                   num_images=TEST_IMAGES)


# --- segmentation: ADE20K (150 classes) -> 3 custom classes ----------------


@pytest.fixture(scope='module')
def ade20k_checkpoint(ade20k_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('seg_standard') / 'work'
    train(SEG_STANDARD, work_dir, *seg_scaled_down(ade20k_root))
    ckpt = last_checkpoint(work_dir)
    assert state_dict(ckpt)['decode_head.conv_seg.weight'].shape[0] == 150
    return ckpt


@pytest.fixture(scope='module')
def seg_finetuned(ade20k_checkpoint, tmp_path_factory):
    """The edited custom config fine-tuned from the 150-class checkpoint."""
    root = tmp_path_factory.mktemp('seg_custom')
    data = generate_custom_seg(root / 'my_seg_dataset', num_train=8,
                               num_val=4, img_size=128, classes=CLASSES)
    config = seg_config(root, data.data_root)
    work_dir = root / 'work'
    output = train(config, work_dir, *seg_scaled_down(data.data_root),
                   'model.backbone.arch=xxtiny',
                   f'load_from={ade20k_checkpoint}')
    return config, data.data_root, work_dir, output


@pytest.mark.slow
def test_seg_finetune_skips_classifiers(ade20k_checkpoint, seg_finetuned):
    _, _, work_dir, output = seg_finetuned
    line = skip_report(output)
    assert '4 weights NOT loaded' in line
    for layer in SEG_CLASSIFIERS:
        assert f'{layer}.weight' in line and f'{layer}.bias' in line
    assert 'decode_head.conv_seg.weight [150, 64, 1, 1] -> [3, 64, 1, 1]' \
        in line
    assert 'absent from it' not in line
    assert f'Load checkpoint from {ade20k_checkpoint}' in output
    tuned = state_dict(last_checkpoint(work_dir))
    assert tuned['decode_head.conv_seg.weight'].shape[0] == len(CLASSES)
    source = state_dict(ade20k_checkpoint)
    for key in ('backbone.patch_embed.proj.weight',
                'decode_head.fpn_bottleneck.conv.weight'):
        assert torch.allclose(tuned[key], source[key], atol=1e-3), key


@pytest.mark.slow
def test_seg_test_reports_the_custom_classes(seg_finetuned, tmp_path):
    config, data_root, work_dir, _ = seg_finetuned
    dump = tmp_path / 'preds.pkl'
    metrics, output = evaluate(
        with_dumped_predictions(config, dump, tmp_path),
        last_checkpoint(work_dir), tmp_path / 'work',
        *seg_scaled_down(data_root), 'model.backbone.arch=xxtiny')
    # IoUMetric's per-class table.
    assert table_rows(output, 'Class') == [list(CLASSES)], output[-4000:]
    # The generated PNGs hold class indices, and 255 (ignored) on "other".
    assert_miou_recomputed(
        metrics, dump, data_root / 'img_dir' / 'val',
        ann_dir=data_root / 'ann_dir' / 'val', num_images=TEST_IMAGES,
        num_classes=len(CLASSES), reduce_zero_label=False)
