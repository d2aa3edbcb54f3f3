"""The shipped configs, each parsed once here: every one selects our
components, fits its backbone and names timm's release of its weights; the
T configs are the recipes they claim (mmdet's / mmseg's Swin Mask R-CNN and
UPerNet, mmdet's DINO-4scale) with GC ViT, the other variants the T config
with another backbone. (Each builds to its model-zoo size: test_model_zoo.)
"""
import functools
import re
from pathlib import Path

import mmdet
import mmseg
import pytest
import timm
import torch
from helpers import (REPO, build_without_pretrained, run_tool,
                     with_custom_imports)
import mmengine.config.utils as mmengine_config_utils
from mmengine.config import Config
from mmengine.fileio import load
from mmengine.optim import build_optim_wrapper
from mmdet.registry import MODELS as DET_MODELS
from mmseg.registry import MODELS as SEG_MODELS

from mmgcvit.models.backbones.gcvit_arch import resolve_arch

CONFIGS = sorted(REPO.glob('configs/*/*.py'))
# The benchmark configs: OpenMMLab names ending in the dataset.
BENCHMARK = [p for p in CONFIGS
             if re.search(r'_(coco|ade20k-512x512)\.py$', p.name)]
VARIANT = re.compile(r'gcvit-(xxt|xt|t|s|b|l-384)_')
# (arch, drop-path rate): the variants' ImageNet rates (T's is also the
# official detection configs' value).
VARIANTS = {'xxt': ('xxtiny', 0.2), 'xt': ('xtiny', 0.2), 't': ('tiny', 0.2),
            's': ('small', 0.3), 'b': ('base', 0.5),
            'l-384': ('large-384', 0.2)}
CASCADE = 'cascade-mask-rcnn_gcvit-{}_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
# Whole detectors (80 / 150 classes), measured with the official backbone
# code and mmdet 3.3's / mmseg 1.2's heads; the paper (arXiv 2206.09959)
# rounds them to 48M, 85M / 108M / 146M and 58M / 84M / 125M.
PAPER_PARAMS_M = {
    'mask-rcnn_gcvit-t_fpn_ms-crop-3x_coco': 48.3,
    **{CASCADE.format(v)[:-3]: m
       for v, m in (('t', 86.1), ('s', 109.1), ('b', 148.4))},
    **{f'upernet_gcvit-{v}_8xb2-160k_ade20k-512x512': m
       for v, m in (('t', 58.45), ('s', 83.40), ('b', 124.70))},
}
MIM = {name: Path(package.__file__).parent / '.mim/configs'
       for name, package in (('mmdet', mmdet), ('mmseg', mmseg))}
# T configs and the upstream configs whose recipe they take, with the
# warm-up (iterations) where ours differs: the official GC ViT detection
# configs keep mmdet's 1x warm-up and warm up for 2500 iterations in 3x.
RECIPES = [
    ('detection/mask-rcnn_gcvit-t_fpn_1x_coco.py',
     'mmdet/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', 500),
    ('detection/mask-rcnn_gcvit-t_fpn_ms-crop-3x_coco.py',
     'mmdet/swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', 2500),
    *[(f'detection/dino-4scale_gcvit-t_8xb2-{e}e_coco.py',
       f'mmdet/dino/dino-4scale_r50_8xb2-{e}e_coco.py', None)
      for e in (12, 36)],
    ('segmentation/upernet_gcvit-t_8xb2-160k_ade20k-512x512.py',
     'mmseg/swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_'
     'ade20k-512x512.py', None),
]


@pytest.fixture(scope='module', autouse=True)
def metafiles_read_once():
    """mmengine looks every ``mmdet::`` / ``mmseg::`` base up in all of the
    package's metafiles (about a second each) before taking it as a path;
    within this module the answers are read once."""
    lookup = functools.cache(mmengine_config_utils._get_cfg_metainfo)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mmengine_config_utils, '_get_cfg_metainfo', lookup)
        yield


@functools.cache
def parsed(path):
    """The config at ``path`` (relative to configs/ or absolute) as plain
    dicts and lists, without the ``_scope_`` tags ``mmdet::`` bases add."""
    return plain(Config.fromfile(REPO / 'configs' / path).to_dict())


def plain(node):
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return [plain(v) for v in node]
    return node


def test_every_variant_and_schedule_has_a_config():
    expected = {f'mask-rcnn_gcvit-{v}_fpn_{s}_coco.py'
                for v in ('xxt', 'xt', 't', 's', 'b')
                for s in ('1x', 'ms-crop-3x')}
    expected |= {CASCADE.format(v) for v in 'tsb'}
    expected |= {f'dino-4scale_gcvit-{v}_8xb2-{e}e_coco.py'
                 for v in ('t', 's', 'b', 'l-384') for e in (12, 36)}
    expected |= {f'upernet_gcvit-{v}_8xb2-160k_ade20k-512x512.py'
                 for v in ('xxt', 'xt', 't', 's', 'b')}
    assert sorted(p.name for p in BENCHMARK) == sorted(expected)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_selects_our_components_and_fits_the_backbone(path):
    cfg = parsed(path)
    # What any tool then gets (README, "What our configs add").
    assert cfg['custom_imports']['imports'] == ['mmgcvit', 'mmgcvit.engine']
    assert cfg['train_cfg']['type'] in (
        'mmgcvit.ResumableEpochBasedTrainLoop',
        'mmgcvit.ResumableIterBasedTrainLoop')
    assert cfg['test_cfg']['type'] == 'mmgcvit.CheckedTestLoop'
    assert cfg['default_hooks']['checkpoint']['type'] == \
        'mmgcvit.AtomicCheckpointHook'
    assert cfg['default_hooks']['checkpoint']['backend_args'] == dict(
        backend='mmgcvit_atomic')
    assert [h['type'] for h in cfg['custom_hooks']] == [
        'mmgcvit.RNGStateHook', 'mmgcvit.PlainCheckpointHook',
        'mmgcvit.LoadReportHook']
    assert cfg['optim_wrapper']['type'] == 'OptimWrapper'  # --amp on GPUs
    model, backbone = cfg['model'], cfg['model']['backbone']
    dims = resolve_arch(backbone['arch'])['embed_dims']
    outputs = [dims * 2**i for i in backbone['out_indices']]
    if 'neck' in model:
        assert model['neck']['in_channels'] == outputs
    else:
        assert model['decode_head']['in_channels'] == outputs
        auxiliary = model['auxiliary_head']
        assert auxiliary['in_channels'] == outputs[auxiliary['in_index']]
    # ImageNet weights: timm's release of the variant, its URL written in
    # the config itself; Large (ImageNet-21K) has none: a local path.
    init_cfg = backbone.get('init_cfg') or {}
    if init_cfg.get('checkpoint'):
        release = timm.models.get_pretrained_cfg(f'gcvit_{backbone["arch"]}'
                                                 '.in1k')
        if release is None:
            assert not init_cfg['checkpoint'].startswith('http')
        else:
            assert init_cfg['checkpoint'] == release.url
            assert path not in BENCHMARK or release.url in path.read_text()


def unfed(model):
    """``model`` without the channels its backbone feeds."""
    return {key: {k: v for k, v in part.items() if k != 'in_channels'}
            if key in ('neck', 'decode_head', 'auxiliary_head') else part
            for key, part in model.items()}


def without_backbone(cfg):
    """``cfg`` without what a variant changes: the backbone's arch,
    drop-path rate, weights and checkpointing, the channels it feeds."""
    model = unfed(cfg['model'])
    model['backbone'] = {k: v for k, v in model['backbone'].items()
                         if k not in ('arch', 'drop_path_rate', 'init_cfg',
                                      'with_cp')}
    return dict({k: v for k, v in cfg.items() if k != 'checkpoint'},
                model=model)


@pytest.mark.parametrize('path', BENCHMARK, ids=lambda p: p.name)
def test_variant_is_the_t_config_with_its_backbone(path):
    variant = VARIANT.search(path.name).group(1)
    backbone = parsed(path)['model']['backbone']
    assert (backbone['arch'], backbone['drop_path_rate']) == VARIANTS[variant]
    assert backbone['window_size'] == 24
    assert backbone['with_cp'] == (variant == 'l-384')
    t_config = path.with_name(VARIANT.sub('gcvit-t_', path.name))
    assert without_backbone(parsed(path)) == without_backbone(
        parsed(t_config))


@pytest.mark.parametrize('ours,theirs,warmup', RECIPES,
                         ids=[Path(ours).stem for ours, _, _ in RECIPES])
def test_t_config_is_the_upstream_recipe_with_gcvit(ours, theirs, warmup):
    library, theirs = theirs.split('/', 1)
    cfg, ref = parsed(ours), parsed(MIM[library] / theirs)
    # Everything but the backbone and the channels it feeds is upstream's.
    assert dict(unfed(cfg['model']), backbone=None) == dict(
        unfed(ref['model']), backbone=None)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader',
                'val_evaluator', 'test_evaluator', 'auto_scale_lr',
                'tta_model', 'tta_pipeline'):
        assert cfg.get(key) == ref.get(key), key
    # Their optimiser, schedule and loop; ours resumes exactly.
    assert cfg['optim_wrapper']['optimizer'] == ref['optim_wrapper'][
        'optimizer']
    assert cfg['optim_wrapper'].get('clip_grad') == ref['optim_wrapper'].get(
        'clip_grad')
    assert dict(cfg['train_cfg'], type=None) == dict(ref['train_cfg'],
                                                     type=None)
    schedule, ref_schedule = cfg['param_scheduler'], ref['param_scheduler']
    if warmup is not None:
        assert schedule[0]['type'] == 'LinearLR'
        ref_schedule = [dict(ref_schedule[0], end=warmup), *ref_schedule[1:]]
    assert schedule == ref_schedule


def test_cascade_heads_are_4conv1fc_syncbn_giou():
    heads = parsed('detection/' + CASCADE.format('t'))['model']['roi_head'][
        'bbox_head']
    stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
            [0.033, 0.033, 0.067, 0.067]]
    assert [h['bbox_coder']['target_stds'] for h in heads] == stds
    for head in heads:
        assert head['type'] == 'Shared4Conv1FCBBoxHead'
        assert head['norm_cfg'] == dict(type='SyncBN', requires_grad=True)
        assert head['loss_bbox'] == dict(type='GIoULoss', loss_weight=10.0)
        assert head['reg_decoded_bbox'] and not head['reg_class_agnostic']


def zoo_sizes():
    """Parameters of the built models, by config name, as the model zoo
    lists them."""
    return {m['Name']: m['Metadata']['Parameters']
            for path in load(REPO / 'model-index.yml')['Import']
            for m in load(REPO / path)['Models']}


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS_M))
def test_size_is_the_papers(name):
    assert zoo_sizes()[name] / 1e6 == pytest.approx(PAPER_PARAMS_M[name],
                                                    abs=0.5)


def test_get_flops_reports_the_model():
    name = 'mask-rcnn_gcvit-xxt_fpn_1x_coco'
    rc, out = run_tool([REPO / 'tools/analysis_tools/get_flops.py',
                        REPO / f'configs/detection/{name}.py', '--shape',
                        96, 128], cwd=REPO, timeout=300)
    assert rc == 0, out[-3000:]
    assert 'Input shape: 3 x 96 x 128' in out
    params = float(re.search(r'Params: ([\d.]+) M', out).group(1))
    assert params == pytest.approx(zoo_sizes()[name] / 1e6, abs=0.01)
    flops = float(re.search(r'FLOPs: ([\d.]+) G', out).group(1))
    # Backbone + FPN + RPN are a few G at this size; the RoI heads on up to
    # 1000 proposals (mask head on 100) add some tens of G.
    assert 10 < flops < 200


@pytest.mark.parametrize('config', [
    'detection/mask-rcnn_gcvit-xxt_fpn_1x_coco.py',
    'segmentation/upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py',
    'detection/dino-4scale_gcvit-t_8xb2-12e_coco.py'
], ids=['mask-rcnn', 'upernet', 'dino'])
def test_optimizer_excludes_tables_and_norms_from_decay(config):
    """Per parameter, as the recipes name them: the backbone's LayerNorms
    and relative-position tables (found by module here) get no weight
    decay, its other weights the optimizer's; the backbone's lr multiplier
    (DINO's 0.1) applies to all of them."""
    cfg = Config.fromfile(REPO / 'configs' / config)
    registry = DET_MODELS if cfg.default_scope == 'mmdet' else SEG_MODELS
    cfg.model.backbone.arch = 'xxtiny'  # T's widths and names, fewer blocks
    model = build_without_pretrained(with_custom_imports(cfg, registry),
                                     registry)
    optimizer = cfg.optim_wrapper.optimizer
    lr_mult = cfg.optim_wrapper.paramwise_cfg.custom_keys.get(
        'backbone', {}).get('lr_mult', 1.)
    settings = {id(p): (g['lr'], g['weight_decay'])
                for g in build_optim_wrapper(
                    model, cfg.optim_wrapper).optimizer.param_groups
                for p in g['params']}
    norms = {f'{name}.{p}' for name, m in model.backbone.named_modules()
             if isinstance(m, torch.nn.LayerNorm)
             for p, _ in m.named_parameters()}
    tables = {name for name, _ in model.backbone.named_parameters()
              if name.endswith('relative_position_bias_table')}
    assert len(tables) == 12 and norms  # XXT: 2 + 2 + 6 + 2 blocks
    for name, param in model.backbone.named_parameters():
        excluded = name in norms | tables
        if excluded or param.ndim > 1:
            assert settings[id(param)] == pytest.approx((
                optimizer.lr * lr_mult,
                0. if excluded else optimizer.weight_decay)), name
