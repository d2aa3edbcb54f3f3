"""GCViT backbone: architecture (against timm), dense shapes, training
features, fused vs reference attention, validation and registries."""
import math

import numpy as np
import pytest
import timm
import torch
from helpers import DEVICES, REPO, TINY, n_params, rel_err
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from torch.utils._python_dispatch import TorchDispatchMode

import mmgcvit  # noqa: F401  (registers GCViT)
from mmgcvit.analysis.benchmark import peak_memory_mib
from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.models import GCViT
from mmgcvit.models.backbones import biased_attention, gcvit
from mmgcvit.models.backbones.gcvit_arch import ARCH_SETTINGS, resolve_arch
from mmgcvit.models.backbones.window_attention import (GlobalWindowAttention,
                                                       LocalWindowAttention)
from mmgcvit.models.backbones.torch_compat import aten_op

# The CPU flash kernel (torch 2.2 on) behind the fused path's CPU memory
# savings and its CPU backward.
requires_cpu_flash = pytest.mark.skipif(
    biased_attention.CPU_FLASH is None,
    reason=f'torch {torch.__version__} has no CPU flash attention kernel')


def table_params(model):
    return sum(m.relative_position_bias_table.numel() for m in model.modules()
               if isinstance(m, (LocalWindowAttention, GlobalWindowAttention)))


@pytest.mark.parametrize('arch,timm_name', [
    ('xxtiny', 'gcvit_xxtiny'), ('xtiny', 'gcvit_xtiny'),
    ('tiny', 'gcvit_tiny'), ('small', 'gcvit_small'), ('base', 'gcvit_base')
])
def test_param_count_matches_timm(arch, timm_name):
    timm_model = timm.create_model(timm_name, pretrained=False)
    trunk = sum(
        p.numel() for k, p in timm_model.named_parameters()
        if not k.startswith('head.') and not k.startswith('stages.3.norm.'))
    model = GCViT(arch=arch)
    output_norms = sum(2 * d for d in model.num_features)
    assert n_params(model) == trunk + output_norms
    # Window 24: only the bias tables grow, by exactly their size.
    model24 = GCViT(arch=arch, window_size=24)
    heads = sum(d * h for d, h in zip(model.arch_settings['depths'],
                                      model.arch_settings['num_heads']))
    assert table_params(model24) == 47**2 * heads
    assert n_params(model24) - n_params(model) == \
        table_params(model24) - table_params(model)


@pytest.mark.parametrize('alias,name', [
    ('XXT', 'xxtiny'), ('xx-tiny', 'xxtiny'), ('xx_tiny', 'xxtiny'),
    ('T', 'tiny'), ('Small', 'small'), ('s2', 'small2'), ('L-384', 'large-384')
])
def test_arch_aliases(alias, name):
    assert resolve_arch(alias) == ARCH_SETTINGS[name]


@pytest.mark.parametrize('arch,window,blocks,pooled', [
    ('xxtiny', None, (3, 2, 1, 1), (True, True, False, False)),
    ('xxtiny', 24, (3, 2, 1, 1), (True, True, True, False)),
    # 384 / 24 = 16 = stage-3 resolution at 384: the window matches it.
    ('large-384', 24, (3, 2, 1, 1), (True, True, False, False)),
    ('large-512', None, (3, 2, 1, 1), (True, True, False, False)),
])
def test_global_query_chain_follows_pretraining_geometry(
        arch, window, blocks, pooled):
    model = GCViT(arch=arch, window_size=window)
    for level, n, pool in zip(model.levels, blocks, pooled):
        chain = level.q_global_gen.to_q_global
        assert len(chain) == n
        assert all(isinstance(b.pool, torch.nn.MaxPool2d) == pool
                   for b in chain)


@pytest.mark.parametrize('kwargs,message', [
    (dict(arch='huge'), r"use one of \['base', 'large', 'large-384', "),
    (dict(arch=dict(TINY, num_heads=(1, 2, 2))), 'num_heads'),
    (dict(arch=dict(TINY, num_heads=(3, 2, 2, 4))), 'not divisible'),
    (dict(arch=dict(TINY, depth=(2, 2, 2, 2))), 'unknown keys'),
    (dict(arch=TINY, window_size=(7, 7, 14)), 'window_size'),
    (dict(arch=TINY, pretrained_window_size=(6, 7, 14, 7)),
     'not a power of two'),
    (dict(arch=TINY, pretrain_img_size=200), 'multiple of 32'),
    (dict(arch=TINY, frozen_stages=5), 'frozen_stages'),
    (dict(arch=TINY, out_indices=(0, 4)), 'out_indices'),
    # Each names the fix (arch XXT where none is given).
    (dict(window_size=0), 'window_size=24'),
    (dict(window_size=7.5), 'window_size=24'),
    (dict(pretrain_img_size=0), 'pretrain_img_size=224'),
    (dict(drop_path_rate=1.5), r'\[0, 1\)'),
    (dict(attn_drop_rate=-0.1), r'\[0, 1\)'),
    (dict(mlp_ratio=0), 'mlp_ratio=3'),
    (dict(out_indices=2), r'\(2,\)'),
    (dict(norm_cfg=dict(type='BN')), "dict\\(type='LN'\\)"),
    (dict(arch=dict(TINY, embed_dims=0)), 'embed_dims=64'),
])
def test_bad_config_raises_naming_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GCViT(**{'arch': 'xxtiny', **kwargs})


@pytest.mark.parametrize('shape', [(1, 3, 31, 64), (2, 3, 64), (1, 4, 64, 64)])
def test_bad_input_raises(shape):
    model = GCViT(arch=TINY)
    with pytest.raises(ValueError, match=r'\(N, 3, H>=32, W>=32\)') as info:
        model(torch.zeros(shape))
    assert str(tuple(shape)) in str(info.value)


@pytest.mark.parametrize('size', [(800, 1216), (512, 512), (333, 517),
                                  (64, 64), (32, 45)])
def test_dense_shapes_and_per_image_global_queries(size):
    torch.manual_seed(0)
    model = GCViT(arch=TINY, window_size=24).eval()
    model.init_weights()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        outs = model(x)
        single = model(x[1:])
    assert [o.shape[1] for o in outs] == [16, 32, 64, 128]
    assert [tuple(o.shape[-2:]) for o in outs] == [
        tuple(math.ceil(n / 2**(i + 2)) for n in size) for i in range(4)]
    # Batch of two = each image alone: global queries stay with their image.
    for o, s in zip(outs, single):
        assert o.shape[0] == 2
        assert torch.allclose(o[1:], s, atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = GCViT(arch=dict(TINY, layer_scale=1e-5), window_size=(8, 4, 4, 2),
                  pretrained_window_size=(4, 4, 4, 2), pretrain_img_size=64)
    model.init_weights()
    model.train()
    sum(o.square().mean() for o in model(torch.randn(2, 3, 70, 90))).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize('frozen', [-1, 0, 1, 2, 3, 4])
def test_frozen_stages(frozen):
    model = GCViT(arch=TINY, frozen_stages=frozen)
    model.train()
    frozen_prefixes = (['patch_embed.'] if frozen >= 0 else []) + [
        p for i in range(max(frozen, 0)) for p in (f'levels.{i}.', f'norm{i}.')
    ]
    for name, param in model.named_parameters():
        assert param.requires_grad != name.startswith(
            tuple(frozen_prefixes)), name
    for name, module in model.named_modules():
        if name:
            assert module.training != f'{name}.'.startswith(
                tuple(frozen_prefixes)), name
    out = model(torch.randn(1, 3, 64, 64))
    if frozen < 4:
        sum(o.sum() for o in out).backward()


def saved_tensor_bytes(model, x):
    """Bytes of the distinct storages autograd saves for backward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return out, sum(storages.values())


class CountOps(TorchDispatchMode):
    """Counts calls of some aten ops that reach the kernels."""

    def __init__(self, ops):
        super().__init__()
        self.ops, self.calls = set(ops), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func in self.ops
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('device', DEVICES)
def test_with_cp_same_results_less_memory(device):
    """Checkpointed blocks give the same outputs and gradients, saving less
    than half the memory for backward. They recompute their linears and
    norms in backward but, on the CPU, not the attention kernel, whose
    outputs are kept; on a GPU, or with a torch without selective
    checkpointing, they recompute it too (plain checkpointing)."""
    kernels = [
        op for op in map(aten_op, (
            '_scaled_dot_product_flash_attention_for_cpu',
            '_scaled_dot_product_efficient_attention',
            '_scaled_dot_product_flash_attention',
            '_scaled_dot_product_cudnn_attention')) if op is not None
    ]
    x = torch.randn(2, 3, 96, 96, device=device)
    results = {}
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = GCViT(arch=TINY, with_cp=with_cp, drop_path_rate=0.)
        model.init_weights()
        model.to(device).train()
        with CountOps(kernels) as forward_calls:
            outs, saved = saved_tensor_bytes(model, x)
        with CountOps(kernels) as backward_calls:
            sum(o.square().sum() for o in outs).backward()
        grads = {k: p.grad for k, p in model.named_parameters()}
        results[with_cp] = (outs, saved, grads, forward_calls.calls,
                            backward_calls.calls)
    (outs0, saved0, grads0, _, _), (outs1, saved1, grads1, forward,
                                    backward) = results[False], results[True]
    for a, b in zip(outs0, outs1):
        assert torch.allclose(a, b, atol=1e-6)
    for k in grads0:
        assert torch.allclose(grads0[k], grads1[k], atol=1e-6, rtol=1e-5), k
    assert saved1 < saved0 / 2
    if device == 'cpu' and biased_attention.CPU_FLASH is None:
        return  # no kernel to count: CPU SDPA runs its math path
    assert results[False][4] == 0
    assert forward >= sum(len(level.blocks) for level in model.levels)
    selective = device == 'cpu' and bool(gcvit._CHECKPOINT_KWARGS)
    assert backward == (0 if selective else forward)


def clone_attention(cls, fused, dim=32, heads=4, window=7, qkv_bias=True,
                    device='cpu'):
    torch.manual_seed(0)
    attn = cls(dim, heads, window, qkv_bias=qkv_bias,
               fused_attn=fused).to(device)
    # A bias of the scale of q k^T, so that the padded keys' share of the
    # softmax is far from uniform.
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    return attn


@pytest.mark.parametrize('cls', [LocalWindowAttention, GlobalWindowAttention])
@pytest.mark.parametrize(
    'size', [(14, 21), (10, 21), (14, 17), (9, 16), (5, 3)],
    ids=['whole-map', 'partial-rows', 'partial-cols', 'partial', 'small'])
@pytest.mark.parametrize('qkv_bias', [True, False], ids=['bias', 'no-bias'])
@pytest.mark.parametrize('fused', ['_valid_windows', '_padded_windows'])
@pytest.mark.parametrize('device', DEVICES)
def test_fused_matches_reference_attention(cls, size, qkv_bias, fused,
                                           device):
    """Same outputs and gradients on the reference and both fused paths
    (each device runs one; both are checked on each): over the padded
    windows, and on the valid tokens only, where the zero padding of the map
    (7x7 windows) is skipped: its queries, and its keys, counted as one."""
    torch.manual_seed(1)
    x = torch.randn(2, *size, 32, device=device)
    q_global = torch.randn(2, 1, 4, 49, 8, device=device)
    results = []
    # The reference: padded windows, explicit softmax (fused_attn=False).
    for method, fused_attn in ((fused, True), ('_padded_windows', False)):
        attn = clone_attention(cls, fused_attn, qkv_bias=qkv_bias,
                               device=device)
        xi, qi = x.clone().requires_grad_(), q_global.clone().requires_grad_()
        out = attn.proj(getattr(attn, method)(xi, qi))
        assert out.shape == x.shape
        out.square().sum().backward()
        results.append((out, xi.grad, qi.grad,
                        [p.grad for p in attn.parameters()]))
    (o0, gx0, gq0, gp0), (o1, gx1, gq1, gp1) = results
    assert rel_err(o0, o1) < 1e-5
    assert rel_err(gx0, gx1) < 1e-5
    if cls is GlobalWindowAttention:
        assert rel_err(gq0, gq1) < 1e-5
    for a, b in zip(gp0, gp1):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize('cls', [LocalWindowAttention, GlobalWindowAttention])
def test_padding_keys_collapsed_or_each(cls):
    """The padded keys as one collapsed key (no attention dropout) or each
    on its own (dropout drops keys one by one) give the same attention."""
    attn = clone_attention(cls, True)
    torch.manual_seed(2)
    q, k, v = torch.randn(3, 2, 3, 4, 12, 8).unbind(0)
    bias = attn.relative_position_bias().view(4, 7, 7, 49)[:, :3, :4]
    bias = bias.reshape(4, 12, 49)
    outs = []
    for collapse in (True, False):
        ki, vi, b = attn._add_padding_keys(k, v, bias, 3, 4, collapse)
        assert ki.shape[3] == vi.shape[3] == b.shape[-1] == (
            13 if collapse else 49)
        # attn_drop=0 (clone_attention's default): no dropout.
        outs.append(attn._attend(q, ki, vi, b))
    assert rel_err(outs[0], outs[1]) < 1e-5


@requires_cpu_flash
def test_biased_flash_attention_matches_explicit(monkeypatch):
    """The CPU flash path for a learned bias: outputs and the gradients of
    q, k, v and the bias as the explicit softmax gives them, also when the
    bias gradient is accumulated over chunks that do not divide the
    windows, for head-strided operands as the qkv projection gives, and for
    fewer queries than keys (padded queries skipped)."""
    monkeypatch.setattr(biased_attention, '_CHUNK_ELEMENTS', 2 * 3 * 30 * 49)
    torch.manual_seed(0)
    q, k, v = torch.randn(5, 49, 3, 3, 8).permute(3, 0, 2, 1, 4)
    q = q[:, :, :30]
    bias = torch.randn(1, 3, 30, 49)
    weights = torch.randn(5, 3, 30, 8)
    results = []
    for explicit in (True, False):
        qi, ki, vi, bi = (t.detach().requires_grad_() for t in (q, k, v, bias))
        if explicit:
            out = ((qi @ ki.transpose(-2, -1)) * 0.3 + bi).softmax(-1) @ vi
        else:
            assert biased_attention.use_biased_flash(qi, bi, 0.)
            out = biased_attention.biased_flash_attention(qi, ki, vi, bi, 0.3)
        (out * weights).sum().backward()
        results.append((out, qi.grad, ki.grad, vi.grad, bi.grad))
    for a, b in zip(*results):
        assert rel_err(b, a) < 1e-5


@requires_cpu_flash
def test_biased_flash_only_where_it_applies():
    q = torch.randn(2, 1, 4, 8)
    bias = torch.randn(1, 1, 4, 4, requires_grad=True)
    assert biased_attention.use_biased_flash(q, bias, 0.)
    assert not biased_attention.use_biased_flash(q, bias.detach(), 0.)
    assert not biased_attention.use_biased_flash(q, bias, 0.1)
    assert not biased_attention.use_biased_flash(q.bfloat16(), bias, 0.)
    with torch.no_grad():
        assert not biased_attention.use_biased_flash(q, bias, 0.)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not biased_attention.use_biased_flash(q, bias, 0.)


@requires_cpu_flash
def test_fused_training_keeps_no_attention_matrices():
    """Training with the learned bias on the fused path must not store the
    windows' attention matrices for backward, as the reference path does
    (nor materialise the bias gradient per window, as CPU SDPA's math path
    would)."""
    x = torch.randn(1, 96, 96, 64)
    peaks = {}
    for fused in (True, False):
        attn = clone_attention(LocalWindowAttention, fused, dim=64, heads=2,
                               window=24).train()

        def step():
            attn(x).sum().backward()

        peaks[fused] = peak_memory_mib(step, torch.device('cpu'))
    attention_matrices_mib = 16 * 2 * 576 * 576 * 4 / 2**20
    assert peaks[False] > attention_matrices_mib
    assert peaks[True] < 0.6 * peaks[False], peaks


def test_attention_dropout_in_both_paths():
    x = torch.randn(1, 9, 10, 32)
    for fused in (True, False):
        attn = LocalWindowAttention(32, 4, 7, attn_drop=0.5, fused_attn=fused)
        attn.train()
        assert not torch.equal(attn(x), attn(x))
        attn.eval()
        assert torch.equal(attn(x), attn(x))


def test_bias_cache_refreshes():
    attn = LocalWindowAttention(32, 4, 7).eval()
    with torch.no_grad():
        first = attn.relative_position_bias()
        assert attn.relative_position_bias() is first
        state = attn.state_dict()
        state['relative_position_bias_table'] = torch.ones(169, 4)
        attn.load_state_dict(state)
        assert torch.equal(attn.relative_position_bias(), torch.ones(4, 49,
                                                                     49))
    attn.train()
    assert attn._bias_cache is None
    bias = attn.relative_position_bias()
    assert bias.requires_grad and attn._bias_cache is None


def test_relative_position_index_not_in_state_dict():
    keys = GCViT(arch=TINY).state_dict().keys()
    assert not any('relative_position_index' in k for k in keys)
    assert 'levels.0.blocks.1.attn.relative_position_bias_table' in keys
    assert 'patch_embed.conv_down.conv.2.fc.0.weight' in keys
    assert 'levels.0.q_global_gen.to_q_global.2.conv.3.weight' in keys


def test_default_init_is_official_scheme():
    model = GCViT(arch=TINY)
    model.init_weights()
    qkv = model.levels[0].blocks[0].attn.qkv
    assert qkv.bias.abs().sum() == 0
    assert 0.015 < qkv.weight.std() < 0.025
    assert torch.equal(model.norm0.weight, torch.ones(16))
    table = model.levels[0].blocks[0].attn.relative_position_bias_table
    assert 0.01 < table.std() < 0.03


def test_feature_info_describes_the_outputs():
    """Channels and strides as the outputs of a real arch have them at an
    odd size, and as timm describes the same stages of its GC ViT."""
    timm_info = timm.create_model('gcvit_xxtiny', pretrained=False,
                                  features_only=True).feature_info
    model = GCViT(arch='xxtiny', window_size=24, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 333, 517))
    assert [info['module'] for info in model.feature_info] == ['norm1',
                                                               'norm3']
    for info, out, i in zip(model.feature_info, outs, (1, 3)):
        assert out.shape == (1, info['num_chs'],
                             math.ceil(333 / info['reduction']),
                             math.ceil(517 / info['reduction']))
        assert (info['num_chs'], info['reduction']) == (
            timm_info.channels()[i], timm_info.reduction()[i])


def saved_backbone(path, prefix='', **kwargs):
    """A checkpoint at ``path`` as stock mmengine writes one (numpy values
    in ``meta`` and the message hub) whose weights are a random GC ViT's,
    minus the output norms as in ImageNet weights; returns the weights."""
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in GCViT(**kwargs).state_dict().items()
             if not k.startswith('norm')}
    hub = MessageHub.get_instance('saved_backbone')
    hub.update_scalar('train/loss', np.float64(0.5))
    torch.save(dict(meta=dict(seed=np.int64(0), epoch=1),
                    message_hub=hub.state_dict(),
                    state_dict={prefix + k: v for k, v in state.items()}),
               path)
    return state


def assert_loaded(model, state):
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())


def test_list_init_cfg_with_map_location(tmp_path, monkeypatch):
    """A list init_cfg, as BaseModule takes it: mmengine's initializers
    first, then the backbone of a detector's checkpoint (read with the
    entry's map_location), which overwrites what it holds and leaves the
    rest (the output norms)."""
    state = saved_backbone(tmp_path / 'w.pth', 'backbone.', arch=TINY)
    locations = []

    def recording_load(source, map_location):
        locations.append(map_location)
        return load_checkpoint(source, map_location=map_location)

    monkeypatch.setattr(gcvit, 'load_checkpoint', recording_load)
    model = GCViT(arch=TINY, init_cfg=[
        dict(type='Pretrained', checkpoint=str(tmp_path / 'w.pth'),
             prefix='backbone.', map_location='cpu'),
        dict(type='Constant', layer='LayerNorm', val=2., bias=0.)])
    model.init_weights()
    assert locations == ['cpu']
    assert_loaded(model, state)
    assert torch.equal(model.norm3.weight, torch.full((128, ), 2.))
    # Without a Pretrained entry mmengine's initializers alone apply.
    model = GCViT(arch=TINY, init_cfg=dict(type='Constant', layer='Linear',
                                           val=0.5, bias=0.))
    model.init_weights()
    assert torch.equal(model.levels[0].blocks[0].mlp.fc1.weight,
                       torch.full((48, 16), 0.5))


def test_mmseg_model_pretrained_reaches_the_backbone(tmp_path):
    """mmseg's EncoderDecoder hands ``model.pretrained`` to the backbone:
    deprecated, it replaces the config's ImageNet URL (nothing is
    downloaded) and loads the file."""
    from mmseg.registry import MODELS
    cfg = Config.fromfile(REPO / 'configs/segmentation/'
                          'upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py')
    backbone = {k: v for k, v in cfg.model.backbone.items()
                if k not in ('type', 'init_cfg')}
    state = saved_backbone(tmp_path / 'w.pth', **backbone)
    cfg.model.pretrained = str(tmp_path / 'w.pth')
    init_default_scope('mmseg')
    with pytest.warns(FutureWarning, match='pretrained=.* is deprecated'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    assert_loaded(model.backbone, state)


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(pretrained=3), TypeError, 'must be a path'),
    (dict(init_cfg='w.pth'), TypeError, 'a dict with a type'),
    (dict(init_cfg=[dict(type='Pretrained', checkpoint='w.pth', url='x')]),
     ValueError, r"unknown keys \['url'\]"),
    (dict(init_cfg=dict(type='Pretrained')), ValueError, 'checkpoint=PATH'),
])
def test_bad_init_arguments_name_the_fix(kwargs, error, message):
    with pytest.raises(error, match=message):
        GCViT(arch=TINY, **kwargs)
