"""DINO-4scale with a GC ViT backbone.

The configs are mmdet's DINO-4scale recipe with GC ViT stages 2-4 in place
of R-50's C3-C5 (checked against mmdet's own config files), the optimiser
gives every parameter the learning rate and weight decay the recipe names
(checked per parameter against its module), ``with_cp`` and
``frozen_stages`` hold under DINO's loss, and the T config, scaled down and
inherited through ``mmgcvit::`` as a user's config would, trains two
iterations and evaluates box mAP with mmdet's own ``tools/train.py`` (what
ours runs), the mAP matching pycocotools recomputed over the dumped
detections.
"""
import copy
import json
import math
import re
import sys
from pathlib import Path

import mmdet
import pytest
import torch
from helpers import MMDET_TRAIN, REPO, rel_err, run
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from mmgcvit.analysis.complexity import build_model
from mmgcvit.checkpoint.download import is_url
from mmgcvit.models.backbones.gcvit_arch import resolve_arch

CONFIGS = sorted(
    (REPO / 'configs/detection').glob('dino-4scale_gcvit-*_coco.py'))
NAME = re.compile(r'dino-4scale_gcvit-(t|s|b|l-384)_8xb2-(12|36)e_coco')
ARCHS = {'t': 'tiny', 's': 'small', 'b': 'base', 'l-384': 'large-384'}
MMDET = Path(mmdet.__file__).parent / '.mim'
T_CONFIG = 'detection/dino-4scale_gcvit-t_8xb2-12e_coco.py'
DOC = REPO / 'docs/dino.md'

# The T config as a user's config would inherit it, scaled down to seconds
# of CPU: 128 px images, 30 queries, 3 classes (the generated data's), batch
# 2 on 4 training images (two iterations), every validation image, no
# checkpoint files, detections dumped where the test reads them.
SMALL = """
_base_ = 'mmgcvit::{base}'
data_root = '{root}/'
metainfo = dict(classes={classes!r})
model = dict(
    backbone=dict(init_cfg=None),
    num_queries=30,
    bbox_head=dict(num_classes=len(metainfo['classes'])),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=20)),
    test_cfg=dict(max_per_img=30))
# mmdet's DINO pipelines at 128 px: the multi-scale crop (RandomChoice)
# and the 1333x800 test resize become 128 px resizes.
train_pipeline = [
    dict(type='Resize', scale=(128, 128), keep_ratio=True)
    if step['type'] == 'RandomChoice' else step
    for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=(128, 128)) if step['type'] == 'Resize' else step
    for step in _base_.test_pipeline
]
dataset = dict(data_root=data_root, metainfo=metainfo)
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_dataloader = dict(
    **loader, dataset=dict(**dataset, indices=4, pipeline=train_pipeline))
val_dataloader = dict(**loader, dataset=dict(**dataset,
                                             pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '{val_ann}',
                     outfile_prefix='{dets}')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=-1, save_last=False))
randomness = dict(seed=0, deterministic=True)
"""
VAL_ANN = 'annotations/instances_val2017.json'
# CocoMetric's box metrics and their pycocotools ``stats`` indices.
BOX_METRICS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


def small_config(folder, coco_root):
    """Write the scaled-down T config into ``folder``; its detections go to
    ``folder / 'dets.bbox.json'``."""
    folder.mkdir(parents=True, exist_ok=True)
    classes = tuple(c['name'] for c in json.loads(
        (Path(coco_root) / VAL_ANN).read_text())['categories'])
    path = folder / 'my_dino_gcvit-t_3cls.py'
    path.write_text(SMALL.format(base=T_CONFIG, root=coco_root,
                                 classes=classes, val_ann=VAL_ANN,
                                 dets=folder / 'dets'))
    return path


def plain(node):
    """A config tree as plain dicts and lists, without mmengine's
    ``_scope_`` tags (inheriting through ``mmdet::`` adds them)."""
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return [plain(v) for v in node]
    return node


def mmdet_dino(epochs):
    return Config.fromfile(
        MMDET / f'configs/dino/dino-4scale_r50_8xb2-{epochs}e_coco.py')


def test_every_variant_has_both_schedules():
    names = {NAME.fullmatch(p.stem).groups() for p in CONFIGS}
    assert names == {(v, e) for v in ARCHS for e in ('12', '36')}


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_is_mmdet_dino_4scale_with_gcvit(path):
    variant, epochs = NAME.fullmatch(path.stem).groups()
    cfg = Config.fromfile(path)
    ref = mmdet_dino(epochs)
    model, ref_model = plain(cfg.model), plain(ref.model)
    # Everything but the backbone and the mapper's inputs is mmdet's.
    backbone = model.pop('backbone')
    neck, ref_neck = model.pop('neck'), ref_model.pop('neck')
    ref_model.pop('backbone')
    assert model == ref_model
    assert {k: v for k, v in neck.items() if k != 'in_channels'} == {
        k: v for k, v in ref_neck.items() if k != 'in_channels'}
    assert ref_neck['num_outs'] == 4
    # Stages 2-4 (strides 8-32) to the mapper, as R-50's C3-C5.
    settings = resolve_arch(backbone['arch'])
    assert backbone['arch'] == ARCHS[variant]
    assert backbone['type'] == 'GCViT'
    assert tuple(backbone['out_indices']) == (1, 2, 3)
    assert neck['in_channels'] == [settings['embed_dims'] * 2**i
                                   for i in (1, 2, 3)]
    assert backbone['window_size'] == 24
    checkpoint = backbone['init_cfg']['checkpoint']
    if variant == 'l-384':
        # NVlabs publish the ImageNet-21K weights only on their model page.
        assert not is_url(checkpoint)
    else:
        # A release URL whose file name carries its sha256 prefix, which
        # the loader checks.
        assert is_url(checkpoint)
        assert re.search(rf'gcvit_{ARCHS[variant]}_224_nvidia-[0-9a-f]{{8}}'
                         r'\.pth$', checkpoint)
    # mmdet's data, schedule and optimiser (fp32; --amp on GPUs), with the
    # loop that resumes exactly.
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader',
                'val_evaluator', 'test_evaluator', 'param_scheduler',
                'auto_scale_lr'):
        assert plain(cfg[key]) == plain(ref[key]), key
    assert plain(cfg.train_cfg) == dict(
        plain(ref.train_cfg), type='mmgcvit.ResumableEpochBasedTrainLoop')
    for key in ('type', 'optimizer', 'clip_grad'):
        assert plain(cfg.optim_wrapper[key]) == plain(ref.optim_wrapper[key])
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['backbone'] == \
        ref.optim_wrapper.paramwise_cfg.custom_keys['backbone']
    assert cfg.custom_imports['imports'] == ['mmgcvit', 'mmgcvit.engine']


def test_doc_example_is_the_t_config_for_its_data(tmp_path):
    """docs/dino.md's user config loads through ``mmgcvit::`` and differs
    from the T config only in its classes and data."""
    block, = re.findall(r'```python\n(# my_dino_gcvit-t_3cls\.py\b.*?)```',
                        DOC.read_text(), re.S)
    path = tmp_path / 'my_dino_gcvit-t_3cls.py'
    path.write_text(block)
    mine = Config.fromfile(path)
    ours = Config.fromfile(REPO / 'configs' / T_CONFIG)
    assert mine.model.bbox_head.num_classes == len(mine.classes) == 3
    mine.model.bbox_head.num_classes = ours.model.bbox_head.num_classes
    assert plain(mine.model) == plain(ours.model)
    for split in ('train', 'val', 'test'):
        dataset = mine[f'{split}_dataloader'].dataset
        assert dataset.data_root == mine.data_root
        assert tuple(dataset.metainfo.classes) == mine.classes
    assert mine.val_evaluator.ann_file.startswith(mine.data_root)
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                'custom_imports'):
        assert plain(mine[key]) == plain(ours[key]), key


@pytest.fixture(scope='module')
def small_cfg(tmp_path_factory, coco_root):
    return Config.fromfile(
        small_config(tmp_path_factory.mktemp('dino_cfg'), coco_root))


def param_groups(model, cfg):
    """The optimiser's param groups from ``cfg.optim_wrapper``."""
    return build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups


def dino_model(cfg, **backbone):
    """The model of ``cfg`` with GC ViT-XXT (T's widths, fewer blocks: the
    parameter names are the same) and no drop path, initialised."""
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.update(arch='xxtiny', drop_path_rate=0., **backbone)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    return model


def test_optimizer_follows_dino_and_gcvit_rules(small_cfg):
    """Per parameter: DINO's lr and weight decay, the backbone's lr x0.1 (as
    the config's 'backbone' key), and no weight decay on the backbone's
    LayerNorms and relative-position tables, found by module type here."""
    model = dino_model(small_cfg)
    groups = param_groups(model, small_cfg)
    base_lr = small_cfg.optim_wrapper.optimizer.lr
    base_wd = small_cfg.optim_wrapper.optimizer.weight_decay
    lr_mult = small_cfg.optim_wrapper.paramwise_cfg.custom_keys[
        'backbone'].lr_mult
    no_decay = {
        id(p) for m in model.backbone.modules()
        if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    no_decay |= {id(p) for n, p in model.backbone.named_parameters()
                 if n.endswith('relative_position_bias_table')}
    in_backbone = {id(p) for p in model.backbone.parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    seen = {(False, False): 0, (True, False): 0, (True, True): 0}
    for group in groups:
        for param in group['params']:
            key = (id(param) in in_backbone, id(param) in no_decay)
            seen[key] += 1
            expected_lr = base_lr * (lr_mult if key[0] else 1.)
            expected_wd = 0. if key[1] else base_wd
            assert group['lr'] == pytest.approx(expected_lr), names[id(param)]
            assert group['weight_decay'] == pytest.approx(expected_wd), \
                names[id(param)]
    assert sum(seen.values()) == len(names)
    assert all(seen.values()), seen


def dino_batch(model):
    """One 128 px image with two boxes, through the model's preprocessor."""
    sample = DetDataSample(metainfo=dict(
        img_shape=(128, 128), ori_shape=(128, 128), scale_factor=(1., 1.)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[10., 12., 60., 50.], [70., 64., 120., 118.]]),
        labels=torch.tensor([0, 2]))
    image = torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    return model.data_preprocessor(
        dict(inputs=[image], data_samples=[sample]), True)


def loss_and_backward(model):
    """DINO's total training loss on ``dino_batch``, gradients filled in;
    seeded, as DINO draws its denoising queries at random."""
    model.train()
    torch.manual_seed(0)
    loss, _ = model.parse_losses(model(**dino_batch(model), mode='loss'))
    model.zero_grad()
    loss.backward()
    return loss.item()


def test_with_cp_gives_the_same_loss_and_gradients(small_cfg):
    plain_model = dino_model(small_cfg)
    checkpointed = dino_model(small_cfg, with_cp=True)
    checkpointed.load_state_dict(plain_model.state_dict())
    loss = loss_and_backward(plain_model)
    assert loss_and_backward(checkpointed) == pytest.approx(loss, rel=1e-6)
    grads = dict(checkpointed.named_parameters())
    compared = 0
    for name, param in plain_model.named_parameters():
        assert (param.grad is None) == (grads[name].grad is None), name
        if param.grad is not None:
            assert rel_err(grads[name].grad, param.grad) < 1e-5, name
            compared += 1
    assert compared == len(grads)


def test_frozen_stages_get_no_gradients_and_no_optimizer_slot(small_cfg):
    """frozen_stages=2: the stem, stages 1-2 and stage 2's output norm (the
    mapper's first input) stay fixed; stages 3-4 train."""
    model = dino_model(small_cfg, frozen_stages=2)
    loss_and_backward(model)
    frozen = ('patch_embed.', 'levels.0.', 'levels.1.', 'norm1.')
    trained_grads = []
    for name, param in model.backbone.named_parameters():
        if name.startswith(frozen):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None, name
            trained_grads.append(param.grad.abs().max().item())
    assert max(trained_grads) > 0
    for module in (model.backbone.patch_embed, model.backbone.levels[1],
                   model.backbone.norm1):
        assert not module.training
    assert model.backbone.levels[2].training
    in_optimizer = {id(p) for g in param_groups(model, small_cfg)
                    for p in g['params']}
    assert in_optimizer == {
        id(p) for p in model.parameters() if p.requires_grad}


def recompute_box_stats(ann_file, detections):
    """pycocotools' COCOeval over the dumped detections, with CocoMetric's
    settings (every image and category of the annotation file, its
    proposal numbers as maxDets)."""
    gt = COCO(str(ann_file))
    evaluation = COCOeval(gt, gt.loadRes(str(detections)), 'bbox')
    evaluation.params.maxDets = [100, 300, 1000]
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation.stats


def validation_metrics(work_dir):
    """The box metrics of the run's validation, from its scalars.json."""
    scalars, = work_dir.glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in scalars.read_text().splitlines()
               if 'coco/bbox_mAP' in line]
    assert len(records) == 1, records
    return records[0]


@pytest.mark.slow
def test_t_config_trains_and_evaluates_box_map(tmp_path, coco_root):
    config = small_config(tmp_path / 'my_repo', coco_root)
    work_dir = tmp_path / 'work'
    log = run([sys.executable, MMDET_TRAIN, config, '--work-dir', work_dir],
              cwd=config.parent)
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', log), log[-3000:]
    logged = validation_metrics(work_dir)
    for name in BOX_METRICS:
        assert math.isfinite(logged[f'coco/bbox_{name}']), logged

    ann_file = Path(coco_root) / VAL_ANN
    detections = config.parent / 'dets.bbox.json'
    dumped = json.loads(detections.read_text())
    images = json.loads(ann_file.read_text())
    # Every validation image was scored, each with the configured number
    # of detections, in the annotation file's categories and image frames.
    per_image = {}
    for det in dumped:
        per_image[det['image_id']] = per_image.get(det['image_id'], 0) + 1
    max_per_img = Config.fromfile(config).model.test_cfg.max_per_img
    assert per_image == {img['id']: max_per_img for img in images['images']}
    assert {d['category_id'] for d in dumped} <= {
        c['id'] for c in images['categories']}
    sizes = {img['id']: (img['width'], img['height'])
             for img in images['images']}
    for det in dumped:
        x, y, w, h = det['bbox']
        width, height = sizes[det['image_id']]
        assert -1e-3 <= x <= x + w <= width + 1e-3, det
        assert -1e-3 <= y <= y + h <= height + 1e-3, det
    # CocoMetric reports its figures rounded to 3 decimals.
    stats = recompute_box_stats(ann_file, detections)
    for index, name in enumerate(BOX_METRICS):
        assert logged[f'coco/bbox_{name}'] == float(f'{stats[index]:.3f}'), \
            name
