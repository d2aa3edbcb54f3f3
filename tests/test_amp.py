"""Mixed precision on CPU: ``CPUAmpOptimWrapper`` and the real Mask R-CNN
GC ViT-T config trained 30 iterations at fp16 / bf16."""
import json

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper, OptimWrapper, build_optim_wrapper
from helpers import (DEVICES, TINY, TRAIN, mmengine_log, rel_err,
                     requires_cpu_amp, run_tool, skip_without_autocast,
                     small_detection_config)

from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.cli import cpu
from mmgcvit.cli.cpu import setup_cpu_fallbacks
from mmgcvit.engine import CPUAmpOptimWrapper, amp
from mmgcvit.models import GCViT
from mmgcvit.models.backbones.window_attention import LocalWindowAttention
from mmgcvit.utils import torch_compat


def toy_wrapper(**kwargs):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 1))
    wrapper = build_optim_wrapper(model, dict(
        type='mmgcvit.CPUAmpOptimWrapper',
        optimizer=dict(type='SGD', lr=0.1), **kwargs))
    return model, wrapper


def fallback_messages(cfg):
    with mmengine_log() as messages:
        setup_cpu_fallbacks(cfg)
    return [message for _, message in messages]


def amp_config():
    return Config(dict(optim_wrapper=dict(
        type='AmpOptimWrapper', loss_scale='dynamic', dtype='float16',
        optimizer=dict(type='SGD', lr=0.1))))


@requires_cpu_amp
@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU fallback only')
def test_cpu_fallback_keeps_amp():
    cfg = amp_config()
    messages = fallback_messages(cfg)
    assert cfg.optim_wrapper.type == 'mmgcvit.CPUAmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'float16'
    assert any('mixed precision with CPUAmpOptimWrapper' in m
               for m in messages), messages


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU fallback only')
def test_cpu_fallback_trains_fp32_without_cpu_amp(monkeypatch):
    """On a torch without CPU mixed precision a GPU AMP config still trains
    on the CPU, in fp32, and says so."""
    monkeypatch.setattr(cpu, 'has_cpu_amp', lambda: False)
    cfg = amp_config()
    messages = fallback_messages(cfg)
    assert cfg.optim_wrapper == dict(type='OptimWrapper',
                                     optimizer=dict(type='SGD', lr=0.1))
    assert any('training in fp32' in m for m in messages), messages
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    assert type(wrapper) is OptimWrapper


@requires_cpu_amp
@pytest.mark.parametrize('dtype, expected', [
    ('float16', torch.float16), ('bfloat16', torch.bfloat16),
    (None, torch.bfloat16)])
def test_wrapper_autocasts_on_cpu(dtype, expected):
    model, wrapper = toy_wrapper(dtype=dtype)
    assert isinstance(wrapper, CPUAmpOptimWrapper)
    assert isinstance(wrapper, AmpOptimWrapper)  # what mmengine checks
    with wrapper.optim_context(model):
        out = model(torch.randn(4, 8))
    assert out.dtype == expected


@requires_cpu_amp
def test_dynamic_loss_scaling_skips_overflow_and_resumes():
    model, wrapper = toy_wrapper(dtype='float16')
    scale = wrapper.loss_scaler.get_scale()
    before = [p.detach().clone() for p in model.parameters()]
    with wrapper.optim_context(model):
        loss = model(torch.randn(4, 8)).float().mean()
    wrapper.update_params(loss * float('inf'))
    # The overflowing step is skipped and the scale halved.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert wrapper.loss_scaler.get_scale() == scale / 2
    with wrapper.optim_context(model):
        loss = model(torch.randn(4, 8)).float().mean()
    wrapper.update_params(loss)
    assert not all(
        torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # The scaler state travels with the optimizer state (checkpoints).
    state = wrapper.state_dict()
    assert state['loss_scaler']['scale'] == scale / 2
    _, fresh = toy_wrapper(dtype='float16')
    fresh.load_state_dict(state)
    assert fresh.loss_scaler.get_scale() == scale / 2


@requires_cpu_amp
def test_wrapper_rejects_bad_settings():
    with pytest.raises(ValueError, match='float16'):
        toy_wrapper(dtype='float64')
    with pytest.raises(TypeError, match='loss_scale'):
        toy_wrapper(loss_scale='static')
    with pytest.raises(ValueError, match='use_fsdp'):
        toy_wrapper(use_fsdp=True)


def test_cpu_amp_needs_recent_torch(monkeypatch):
    """On a torch without CPU fp16 autocast the wrapper says what to do
    instead of failing inside torch."""
    monkeypatch.setattr(amp, 'has_cpu_amp', lambda: False)
    with pytest.raises(RuntimeError, match=r'torch >= 2\.4.*OptimWrapper'):
        toy_wrapper(dtype='float16')


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('fused_attn', [True, False])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_attention_softmax_precision(fused_attn, dtype, device):
    """Attention logits of +-200 (softmax of them overflows exp() in fp16
    without max subtraction, and rounds badly when summed in fp16) give the
    fp32 result under autocast, on the explicit and the SDPA path."""
    skip_without_autocast(device, dtype)
    torch.manual_seed(0)
    attn = LocalWindowAttention(64, 2, 7, fused_attn=fused_attn).eval()
    with torch.no_grad():
        attn.qkv.weight.mul_(40)
    attn.to(device)
    windows = torch.randn(1, 2, 49, 64, device=device)
    x = windows.view(1, 2, 7, 7, 64).transpose(1, 2).reshape(1, 7, 14, 64)
    with torch.no_grad():
        q, k, _ = attn._qkv(windows, None, 7, 7)
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        assert logits.abs().max() > 100
        reference = attn(x)
        with torch.autocast(device, dtype=dtype):
            out = attn(x)
    assert torch.isfinite(out).all()
    # fp16 on CPU: 0.005 here, 0.010 with an fp16 softmax + bias (the
    # margin is fixed by the seed); on an H200, 0.014 on both paths (its
    # fp16 projections round q and k more). bf16 only has 8 mantissa bits
    # for the logits: 0.07 with torch 2.14, 0.13 on the explicit path with
    # torch 2.1.
    tolerance = {'cpu': 0.008, 'cuda': 0.02}[device] \
        if dtype == torch.float16 else 0.15
    error = (out.float() - reference).norm() / reference.norm()
    assert error < tolerance, error


def losses_from_log(work_dir):
    """Per-iteration training losses from mmengine's scalars json."""
    logs = sorted(work_dir.glob('*/vis_data/scalars.json'))
    assert logs, f'no scalars.json under {work_dir}'
    rows = [json.loads(line) for line in logs[-1].read_text().splitlines()]
    return [row for row in rows if 'loss' in row]


AMP_CASES = [
    # dtype, with_cp. 64 px images: GC ViT-T pads every stage to one window
    # of 24x24 tokens, which keeps each of the 4 x 30 iterations cheap (fp16
    # matmuls and convolutions are emulated on CPUs, about 10x slower than
    # bf16).
    ('bfloat16', False),
    ('bfloat16', True),
    ('float16', False),
    ('float16', True),
]


@pytest.mark.slow
@requires_cpu_amp
@pytest.mark.parametrize('dtype, with_cp', AMP_CASES)
def test_mask_rcnn_gcvit_t_mixed_precision_30_iters(tmp_path, coco_root, dtype,
                                                    with_cp):
    config = small_detection_config(tmp_path / 'amp.py', coco_root,
                                    with_cp=with_cp, size=64, images=15,
                                    epochs=2)
    work_dir = tmp_path / 'work'
    rc, output = run_tool([
        TRAIN, config, '--work-dir', work_dir, '--cfg-options',
        f'optim_wrapper.dtype={dtype}', 'val_cfg=None', 'val_dataloader=None',
        'val_evaluator=None'], cwd=tmp_path)
    assert rc == 0, output[-5000:]
    assert 'mixed precision with CPUAmpOptimWrapper' in output
    assert f'dtype {dtype}' in output

    rows = losses_from_log(work_dir)
    assert len(rows) == 30, len(rows)
    for row in rows:
        losses = {k: v for k, v in row.items() if k.startswith('loss')}
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), \
            row
    checkpoint = load_checkpoint((work_dir / 'last_checkpoint').read_text())
    for name, value in checkpoint['state_dict'].items():
        assert torch.isfinite(value.float()).all(), name
    # Dynamic loss scaling: at most a few of the 30 steps were skipped for
    # overflowing gradients (each halves the initial 2**16 scale).
    scale = checkpoint['optimizer']['loss_scaler']['scale']
    assert scale >= 2.**16 / 2**4, scale


@pytest.mark.parametrize('device', DEVICES)
def test_fused_attention_keeps_the_autocast_dtype(device):
    """The fused path assembles its output map in SDPA's dtype, not in the
    fp32 of the normalised input, which would double its memory."""
    attn = LocalWindowAttention(32, 4, 7).to(device).eval()
    x = torch.randn(1, 9, 10, 32, device=device)
    dtypes = [torch.bfloat16]
    if device == 'cuda' or torch_compat.has_cpu_amp():
        dtypes.append(torch.float16)
    for dtype in dtypes:
        with torch.no_grad(), torch.autocast(device, dtype=dtype):
            assert attn._valid_windows(x, None).dtype == dtype
            assert attn._padded_windows(x, None).dtype == dtype


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('with_cp', [False, True])
def test_autocast_training_step_matches_fp32(device, with_cp):
    """A backbone training step under fp16 autocast (bf16 on CPU, where fp16
    matmuls are emulated) gives the fp32 step's gradients to autocast
    precision, on the fused path as on the reference; odd map sizes, so
    the fused path adds padding keys."""
    dtype = torch.float16 if device == 'cuda' else torch.bfloat16
    x = torch.randn(2, 3, 72, 88, device=device)
    grads = {}
    for fused in (True, False):
        for autocast in (False, True):
            torch.manual_seed(0)
            model = GCViT(arch=TINY, fused_attn=fused, with_cp=with_cp,
                          window_size=(8, 8, 4, 2), drop_path_rate=0.)
            model.init_weights()
            model.to(device).train()
            with torch.autocast(device, dtype=dtype, enabled=autocast):
                outs = model(x)
            torch.manual_seed(1)
            sum((o.float() * torch.randn_like(o.float())).sum()
                for o in outs).backward()
            grads[fused, autocast] = torch.cat(
                [p.grad.flatten() for p in model.parameters()])
    assert torch.isfinite(grads[True, True]).all()
    assert rel_err(grads[True, False], grads[False, False]) < 1e-4
    # Measured on CPU in bf16: 0.009.
    tolerance = 0.01 if dtype == torch.float16 else 0.03
    for fused in (True, False):
        error = (grads[fused, True] - grads[fused, False]).norm() / grads[
            fused, False].norm()
        assert error < tolerance, (fused, error)
