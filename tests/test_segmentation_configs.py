"""ADE20K UPerNet configs: every one loads and builds through its own
``custom_imports``; the T/S/B segmentors have the paper's sizes; the recipe
is Swin's (optimizer, decay exclusions, schedule, fp32, SyncBN, batch, TTA).
"""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS
from mmseg.registry import MODELS
from helpers import build_without_pretrained, n_params, with_custom_imports

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs' / 'segmentation'
# The ADE20K configs (the custom-data one: tests/test_custom_data.py).
CONFIGS = sorted(CONFIG_DIR.glob('*_ade20k-512x512.py'))
NAME = 'upernet_gcvit-{}_8xb2-160k_ade20k-512x512.py'

# Whole segmentor (GC ViT + UPerHead + auxiliary FCNHead, 150 classes),
# measured with the official backbone code and mmseg 1.2's heads; the paper
# rounds them to 58M / 84M / 125M.
PAPER_PARAMS_M = {'t': 58.45, 's': 83.40, 'b': 124.70}
# (arch, embed_dims, drop-path rate) per variant (the ImageNet-1K URLs:
# tests/test_weights.py).
VARIANTS = {
    'xxt': ('xxtiny', 64, 0.2),
    'xt': ('xtiny', 64, 0.2),
    't': ('tiny', 64, 0.2),
    's': ('small', 96, 0.3),
    'b': ('base', 128, 0.5),
}
BASE_LR = 6e-5


def load(path):
    """The config, with its ``custom_imports`` done as the Runner does."""
    return with_custom_imports(Config.fromfile(path), MODELS)


def build(cfg):
    return build_without_pretrained(cfg, MODELS)


def test_every_variant_has_a_config():
    assert sorted(CONFIGS) == sorted(CONFIG_DIR / NAME.format(v)
                                     for v in VARIANTS)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_builds_and_runs(path):
    cfg = load(path)
    model = build(cfg).eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 96), mode='tensor')
    assert logits.shape == (1, 150, 16, 24)


@pytest.mark.parametrize('variant', sorted(PAPER_PARAMS_M))
def test_param_count_matches_paper(variant):
    model = build(load(CONFIG_DIR / NAME.format(variant)))
    assert n_params(model) / 1e6 == pytest.approx(PAPER_PARAMS_M[variant],
                                                  abs=0.5)


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_variant_settings(variant):
    arch, dims, drop_path = VARIANTS[variant]
    cfg = load(CONFIG_DIR / NAME.format(variant))
    backbone = cfg.model.backbone
    assert backbone.type == 'GCViT' and backbone.arch == arch
    assert backbone.window_size == 24
    assert backbone.drop_path_rate == drop_path
    assert backbone.out_indices == (0, 1, 2, 3)
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=cfg.checkpoint)
    assert cfg.model.decode_head.in_channels == [dims * 2**i for i in range(4)]
    assert cfg.model.auxiliary_head.in_channels == dims * 4
    assert cfg.model.auxiliary_head.in_index == 2


@pytest.fixture(scope='module')
def tiny_cfg():
    return load(CONFIG_DIR / NAME.format('t'))


def test_recipe(tiny_cfg):
    cfg = tiny_cfg
    assert cfg.custom_imports == dict(imports=['mmgcvit', 'mmgcvit.engine'],
                                      allow_failed_imports=False)
    assert cfg.default_scope == 'mmseg'
    assert cfg.model.type == 'EncoderDecoder'
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.auxiliary_head.type == 'FCNHead'
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        assert head.num_classes == 150
        assert head.norm_cfg.type == 'SyncBN'
    assert cfg.model.decode_head.channels == 512
    assert cfg.crop_size == (512, 512)
    assert cfg.model.data_preprocessor.size == (512, 512)
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    # 8 GPUs x 2 images per iteration, 160k iterations.
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.train_cfg.max_iters == 160000
    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'OptimWrapper'  # --amp on GPUs
    assert wrapper.optimizer == dict(type='AdamW', lr=BASE_LR,
                                     betas=(0.9, 0.999), weight_decay=0.01)


def test_no_weight_decay_on_bias_tables_and_norms(tiny_cfg):
    model = build(load(CONFIG_DIR / NAME.format('xxt')))
    optimizer = build_optim_wrapper(model, tiny_cfg.optim_wrapper).optimizer
    decay = {id(p): g['weight_decay'] for g in optimizer.param_groups
             for p in g['params']}
    kinds = {'table': set(), 'norm': set(), 'other': set()}
    for name, param in model.named_parameters():
        if 'relative_position_bias_table' in name:
            kinds['table'].add(decay[id(param)])
        elif '.norm' in name or name.startswith('backbone.norm'):
            kinds['norm'].add(decay[id(param)])
        elif name.endswith('qkv.weight') or name.endswith('conv_seg.weight'):
            kinds['other'].add(decay[id(param)])
    assert kinds == {'table': {0.0}, 'norm': {0.0}, 'other': {0.01}}


def test_lr_schedule(tiny_cfg):
    """Linear warm-up to 6e-5 over 1500 iterations, then linear decay to 0
    at 160k."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=BASE_LR)
    schedulers = [
        PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer))
        for s in tiny_cfg.param_scheduler
    ]
    lrs = {}
    for it in range(160000):
        lrs[it] = optimizer.param_groups[0]['lr']
        for scheduler in schedulers:
            scheduler.step()
    assert lrs[0] == pytest.approx(BASE_LR * 1e-6)
    assert lrs[750] == pytest.approx(BASE_LR / 2, rel=1e-3)
    assert lrs[1500] == pytest.approx(BASE_LR)
    assert lrs[1500 + 79250] == pytest.approx(BASE_LR / 2, rel=1e-3)
    assert lrs[150000] == pytest.approx(BASE_LR * 10000 / 158500, rel=1e-3)
    assert lrs[159999] == pytest.approx(0.0, abs=1e-12)


def test_multi_scale_flip_tta(tiny_cfg):
    """``tools/test.py --tta`` uses mmseg's ADE20K TTA: 6 scales x flip."""
    assert tiny_cfg.tta_model.type == 'SegTTAModel'
    load_img, tta = tiny_cfg.tta_pipeline
    assert load_img['type'] == 'LoadImageFromFile'
    assert tta['type'] == 'TestTimeAug'
    resizes, flips = tta['transforms'][:2]
    assert [r['scale_factor'] for r in resizes] == [
        0.5, 0.75, 1.0, 1.25, 1.5, 1.75
    ]
    assert sorted(f['prob'] for f in flips) == [0.0, 1.0]
