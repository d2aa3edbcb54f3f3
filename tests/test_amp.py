"""Mixed precision: the configs train in fp32 and mmdet's / mmseg's
``--amp`` switches to mmengine's ``AmpOptimWrapper`` (GPUs only); the
detector under its autocast really computes in half precision, and GC
ViT's attention stays accurate there."""
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.runner.amp import autocast
from helpers import (DEVICES, REPO, TINY, TRAIN, assert_one_line_error,
                     build_without_pretrained, rel_err, run_tool,
                     skip_without_autocast, with_custom_imports)

from mmgcvit.models import GCViT
from mmgcvit.models.backbones.window_attention import LocalWindowAttention

XXT = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_1x_coco.py'


def small_detector(device):
    cfg = with_custom_imports(Config.fromfile(XXT), MODELS)
    cfg.model.roi_head.bbox_head.num_classes = 3
    cfg.model.roi_head.mask_head.num_classes = 3
    return build_without_pretrained(cfg, MODELS).to(device), cfg


def dtypes_seen(model, run):
    """The dtypes of the backbone's and the neck's outputs during ``run``."""
    seen = []
    hooks = [m.register_forward_hook(
        lambda module, args, outputs: seen.extend(o.dtype for o in outputs))
        for m in (model.backbone, model.neck)]
    result = run()
    for hook in hooks:
        hook.remove()
    return seen, result


def test_detector_features_follow_mmengine_autocast():
    """Under the autocast that ``AmpOptimWrapper.optim_context`` enters
    (mmengine's ``autocast``; bf16 on CPUs), the backbone and the FPN
    return bf16 maps; without it fp32: autocast is not a no-op here."""
    model, _ = small_detector('cpu')
    x = torch.randn(1, 3, 96, 128)
    for enabled, expected in ((True, torch.bfloat16), (False, torch.float32)):
        with torch.no_grad(), autocast(device_type='cpu',
                                       dtype=torch.bfloat16,
                                       enabled=enabled):
            seen, _ = dtypes_seen(model, lambda: model.extract_feat(x))
        assert seen and set(seen) == {expected}, (enabled, seen)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only machines')
def test_amp_flag_on_a_cpu_is_one_line(tmp_path):
    rc, output = run_tool([TRAIN, XXT, '--amp'], cwd=tmp_path)
    assert_one_line_error(rc, output, '--amp', 'needs a GPU',
                          'train without --amp')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_amp_optim_wrapper_trains_the_detector_in_fp16():
    """What ``--amp`` builds: mmengine's ``AmpOptimWrapper`` with the
    config's optimizer; one Mask R-CNN training step computes the features
    in fp16 and updates the weights with finite losses."""
    model, cfg = small_detector('cuda')
    wrapper = build_optim_wrapper(model, dict(
        cfg.optim_wrapper, type='AmpOptimWrapper', loss_scale='dynamic'))
    data = demo_mm_inputs(2, (3, 128, 128), num_classes=3, with_mask=True,
                          device='cuda')
    before = model.backbone.patch_embed.proj.weight.detach().clone()
    seen, losses = dtypes_seen(
        model, lambda: model.train_step(data, wrapper))
    assert set(seen) == {torch.float16}, seen
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    assert not torch.equal(before, model.backbone.patch_embed.proj.weight)


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
            if fused_attn:
                # The fused paths assemble their output map in SDPA's dtype,
                # not in the fp32 of the normalised input (twice the memory).
                assert attn._valid_windows(x, None).dtype == dtype
                assert attn._padded_windows(x, None).dtype == dtype
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


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('with_cp', [False, True])
def test_autocast_training_step_matches_fp32(device, with_cp):
    """A backbone training step under fp16 autocast (bf16 on CPU, where fp16
    matmuls are emulated) gives the fp32 step's gradients to autocast
    precision, on the fused path as on the reference, which agree in fp32;
    odd map sizes, so the fused path adds padding keys."""
    dtype = torch.float16 if device == 'cuda' else torch.bfloat16
    x = torch.randn(2, 3, 72, 88, device=device)
    grads = {}
    for fused in (True, False):
        for amp in (False, True):
            torch.manual_seed(0)
            model = GCViT(arch=TINY, fused_attn=fused, with_cp=with_cp,
                          window_size=(8, 8, 4, 2), drop_path_rate=0.)
            model.init_weights()
            model.to(device).train()
            with torch.autocast(device, dtype=dtype, enabled=amp):
                outs = model(x)
            # A no-op autocast would pass the comparison below.
            assert outs[0].dtype == (dtype if amp else torch.float32)
            torch.manual_seed(1)
            sum((o.float() * torch.randn_like(o.float())).sum()
                for o in outs).backward()
            grads[fused, amp] = torch.cat(
                [p.grad.flatten() for p in model.parameters()])
    assert torch.isfinite(grads[True, True]).all()
    assert rel_err(grads[True, False], grads[False, False]) < 1e-4
    # Measured on CPU in bf16: 0.009.
    tolerance = 0.01 if dtype == torch.float16 else 0.03
    for fused in (True, False):
        error = (grads[fused, True] - grads[fused, False]).norm() / grads[
            fused, False].norm()
        assert error < tolerance, (fused, error)
