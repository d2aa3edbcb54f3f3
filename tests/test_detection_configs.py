"""COCO detection configs: every one loads and builds through its own
``custom_imports``; the detectors have the paper's sizes; the recipe is the
official GC ViT one (AdamW, decay exclusions, schedules, fp32, batch, DETR
multi-scale + crop); the Cascade heads are 4conv-1fc / SyncBN / GIoU; the
FLOPs tool prints a sane report.
"""
import copy
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmdet.registry import MODELS
from helpers import build_without_pretrained, n_params, with_custom_imports

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / 'configs' / 'detection'
# The Mask R-CNN and Cascade COCO configs (DINO's are tested in
# test_dino.py, custom-data and demo configs on their own).
CONFIGS = sorted(p for p in CONFIG_DIR.glob('*_coco.py')
                 if not p.name.startswith('dino-'))
MASK_1X = 'mask-rcnn_gcvit-{}_fpn_1x_coco.py'
MASK_3X = 'mask-rcnn_gcvit-{}_fpn_ms-crop-3x_coco.py'
CASCADE_3X = 'cascade-mask-rcnn_gcvit-{}_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
# (arch, embed_dims, drop-path rate) per variant.
VARIANTS = {
    'xxt': ('xxtiny', 64, 0.2),
    'xt': ('xtiny', 64, 0.2),
    't': ('tiny', 64, 0.2),
    's': ('small', 96, 0.3),
    'b': ('base', 128, 0.5),
}
EXPECTED = ([MASK_1X.format(v) for v in VARIANTS] +
            [MASK_3X.format(v) for v in VARIANTS] +
            [CASCADE_3X.format(v) for v in ('t', 's', 'b')])
# Whole detectors (80 classes), measured with the official backbone code and
# mmdet 3.3's heads; the paper (arXiv 2206.09959, COCO table) rounds them to
# 48M (Mask R-CNN T) and 85M / 108M / 146M (Cascade T / S / B).
PAPER_PARAMS_M = {
    MASK_3X.format('t'): 48.3,
    CASCADE_3X.format('t'): 86.1,
    CASCADE_3X.format('s'): 109.1,
    CASCADE_3X.format('b'): 148.4,
}
MS_SHORT_SIDES = set(range(480, 801, 32))


@functools.lru_cache(maxsize=None)
def _parse(name):
    return Config.fromfile(CONFIG_DIR / name)


def load(name):
    """A copy of the config (parsed once: parsing the mmdet bases takes
    seconds), with its ``custom_imports`` done as the Runner does."""
    return with_custom_imports(copy.deepcopy(_parse(name)), MODELS)


def build(cfg):
    return build_without_pretrained(cfg, MODELS)


def test_expected_configs_exist():
    assert sorted(p.name for p in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_builds(path):
    cfg = load(path.name)
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(imports=['mmgcvit', 'mmgcvit.engine'],
                                      allow_failed_imports=False)
    model = build(cfg)
    assert type(model.backbone).__name__ == 'GCViT'
    assert model.neck.in_channels == model.backbone.num_features


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS_M))
def test_param_count_matches_paper(name):
    model = build(load(name))
    assert n_params(model) / 1e6 == pytest.approx(PAPER_PARAMS_M[name],
                                                  abs=0.5)


@pytest.mark.parametrize('name', EXPECTED)
def test_variant_settings(name):
    variant = re.search(r'gcvit-(\w+?)_', name).group(1)
    arch, dims, drop_path = VARIANTS[variant]
    cfg = load(name)
    backbone = cfg.model.backbone
    assert backbone.type == 'GCViT' and backbone.arch == arch
    assert backbone.drop_path_rate == drop_path
    assert backbone.window_size == 24
    assert backbone.out_indices == (0, 1, 2, 3)
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=cfg.checkpoint)
    assert cfg.model.neck.in_channels == [dims * 2**i for i in range(4)]


@pytest.mark.parametrize('name', EXPECTED)
def test_optimizer_and_batch(name):
    cfg = load(name)
    wrapper = cfg.optim_wrapper
    # fp32, as mmdet's Swin configs: --amp for the recipe's fp16 on GPUs.
    assert wrapper.type == 'OptimWrapper'
    assert wrapper.optimizer == dict(type='AdamW', lr=1e-4,
                                     betas=(0.9, 0.999), weight_decay=0.05)
    # 16 images per iteration = 8 GPUs x 2.
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)


def test_no_decay_on_position_tables_and_norms():
    """The decay exclusions match GCViT's parameter names: every bias table
    and LayerNorm of the backbone has weight decay 0, its other weights
    0.05."""
    cfg = load(MASK_1X.format('xxt'))
    model = build(cfg)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay']
             for g in wrapper.optimizer.param_groups for p in g['params']}
    backbone = dict(model.backbone.named_parameters())
    tables = [n for n in backbone
              if n.endswith('relative_position_bias_table')]
    # One table per block: XXT has 2 + 2 + 6 + 2 blocks.
    assert len(tables) == 12
    norms = [f'{m}.{p}' for m, module in model.backbone.named_modules()
             if isinstance(module, torch.nn.LayerNorm)
             for p, _ in module.named_parameters()]
    assert norms
    others = set(backbone) - set(tables) - set(norms)
    assert {decay[id(backbone[n])] for n in tables + norms} == {0.}
    assert {decay[id(backbone[n])] for n in others
            if backbone[n].ndim > 1} == {0.05}


@pytest.mark.parametrize('name,epochs,milestones,warmup', [
    (MASK_1X.format('t'), 12, [8, 11], 500),
    (MASK_3X.format('t'), 36, [27, 33], 2500),
    (CASCADE_3X.format('t'), 36, [27, 33], 2500),
])
def test_schedule(name, epochs, milestones, warmup):
    cfg = load(name)
    assert cfg.train_cfg.max_epochs == epochs
    linear, steps = cfg.param_scheduler
    linear.pop('_scope_', None)  # mmengine tags mmdet::-based entries
    assert linear == dict(type='LinearLR', start_factor=0.001,
                          by_epoch=False, begin=0, end=warmup)
    assert steps.type == 'MultiStepLR' and steps.by_epoch
    assert steps.milestones == milestones and steps.gamma == 0.1
    assert steps.end == epochs


def test_cascade_heads():
    cfg = load(CASCADE_3X.format('t'))
    model = build(cfg)
    heads = model.roi_head.bbox_head
    stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
            [0.033, 0.033, 0.067, 0.067]]
    assert len(heads) == 3
    for head, head_cfg, std in zip(heads, cfg.model.roi_head.bbox_head, stds):
        assert type(head).__name__ == 'Shared4Conv1FCBBoxHead'
        assert (head.num_shared_convs, head.num_shared_fcs) == (4, 1)
        assert all(isinstance(conv.bn, torch.nn.SyncBatchNorm)
                   for conv in head.shared_convs)
        assert type(head.loss_bbox).__name__ == 'GIoULoss'
        assert head.loss_bbox.loss_weight == 10.0
        assert head.reg_decoded_bbox and not head.reg_class_agnostic
        assert list(head.bbox_coder.stds) == std
        assert head_cfg.norm_cfg == dict(type='SyncBN', requires_grad=True)


def test_single_scale_pipeline_1x():
    cfg = load(MASK_1X.format('t'))
    resize = [t for t in cfg.train_dataloader.dataset.pipeline
              if t.type == 'Resize']
    assert resize == [dict(type='Resize', scale=(1333, 800), keep_ratio=True)]


def test_multiscale_crop_pipeline_3x(coco_root):
    """The DETR-style policy run on generated images: every sample ends at a
    short side of 480..800 (step 32), through both branches."""
    from mmdet.registry import DATASETS
    cfg = load(MASK_3X.format('t'))
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.update(data_root=coco_root + '/')
    choice = next(t for t in dataset_cfg.pipeline if t.type == 'RandomChoice')
    single, crop = choice.transforms
    assert set(s for s, _ in single[0].scales) == MS_SHORT_SIDES
    assert [t.type for t in crop] == ['RandomChoiceResize', 'RandomCrop',
                                      'RandomChoiceResize']
    assert crop[0].scales == [(400, 1333), (500, 1333), (600, 1333)]
    assert crop[1].crop_size == (384, 600)
    assert crop[1].crop_type == 'absolute_range'
    dataset = DATASETS.build(dataset_cfg)
    torch.manual_seed(0)
    shapes = {tuple(dataset[i % len(dataset)]['inputs'].shape[1:])
              for i in range(12)}
    assert all(min(shape) in MS_SHORT_SIDES for shape in shapes)
    assert len(shapes) > 1


def test_get_flops_report():
    name = MASK_1X.format('xxt')
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/analysis_tools/get_flops.py'),
         str(CONFIG_DIR / name), '--shape', '96', '128'],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert 'Input shape: 3 x 96 x 128' in out
    params = float(re.search(r'Params: ([\d.]+) M', out).group(1))
    assert params == pytest.approx(n_params(build(load(name))) / 1e6,
                                   abs=0.01)
    flops = float(re.search(r'FLOPs: ([\d.]+) G', out).group(1))
    # Backbone + FPN + RPN are a few G at this size; the RoI heads on up to
    # 1000 proposals (mask head on 100) add some tens of G.
    assert 10 < flops < 200


def test_get_flops_rejects_bad_shape():
    from mmgcvit.analysis.complexity import parse_shape
    assert parse_shape([64]) == (64, 64)
    with pytest.raises(ValueError, match='H W'):
        parse_shape([1, 2, 3])
