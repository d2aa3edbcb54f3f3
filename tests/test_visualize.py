"""Global-query attention maps (``mmgcvit.analysis.visualization`` and
``tools/analysis_tools/visualize_gcvit.py``): the attention drawn is the
model's own (softmax rows equal to a recomputation from the block's inputs
and weights, outputs unchanged, local to the windows whose content changes,
the checkpoint's), in pictures of the image's aspect ratio."""
import math
import sys

import mmcv
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, run, run_tool
from mmdet.apis import inference_detector, init_detector
from mmengine.runner import save_checkpoint

from mmgcvit.analysis.visualization import (attention_grids, attention_maps,
                                            record_global_attention)
from mmgcvit.dataset_tools import generate_coco
from mmgcvit.models.backbones.gcvit import GCViT

TOOL = REPO / 'tools' / 'analysis_tools' / 'visualize_gcvit.py'
DET_CONFIG = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_demo-shapes.py'
SEG_CONFIG = (REPO / 'configs/segmentation/'
              'upernet_gcvit-xxt_demo-ade20k-128x128.py')
# Not square, so that a transposed or stretched picture shows.
HEIGHT, WIDTH = 96, 160


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    model = GCViT('xxtiny', drop_path_rate=0., window_size=(8, 8, 8, 4),
                  pretrain_img_size=128, pretrained_window_size=(8, 8, 8, 4))
    model.init_weights()
    return model.eval()


def record(backbone, x):
    with record_global_attention(backbone) as records, torch.no_grad():
        out = backbone(x)
    return records, out


def test_records_softmax_rows_of_every_global_block(backbone):
    x = torch.randn(2, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        plain = backbone(x)
    records, recorded = record(backbone, x)
    # XXT depths (2, 2, 6, 2): every second block is global.
    assert [(r.stage, r.block) for r in records] == [
        (0, 1), (1, 1), (2, 1), (2, 3), (2, 5), (3, 1)]
    for r in records:
        w = r.window_size
        h, wd = r.feat_size
        assert (h, wd) == (HEIGHT // 4 // 2**r.stage, WIDTH // 4 // 2**r.stage)
        assert r.weights.shape == (2, math.ceil(h / w) * math.ceil(wd / w),
                                   2 * 2**r.stage, w * w, w * w)
        assert (r.weights >= 0).all()
        torch.testing.assert_close(r.weights.sum(-1),
                                   torch.ones(r.weights.shape[:-1]))
    # Recording changes no output and leaves no hook or flag behind.
    for a, b in zip(plain, recorded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for block in (b for level in backbone.levels for b in level.blocks):
        assert block.attn.fused_attn and not block.attn._forward_pre_hooks
        assert not block.attn.attn_drop._forward_hooks
    with pytest.raises(ValueError, match='needs a GCViT backbone'):
        with record_global_attention(torch.nn.Linear(2, 2)):
            pass


def test_weights_equal_recomputation_from_block_inputs(backbone):
    """softmax(q_global k^T * scale + bias) from the attention module's own
    inputs and parameters, computed here independently."""
    attn = backbone.levels[1].blocks[1].attn
    inputs = []
    handle = attn.register_forward_pre_hook(
        lambda module, args: inputs.append(args))
    try:
        records, _ = record(backbone, torch.randn(1, 3, HEIGHT, WIDTH))
    finally:
        handle.remove()
    (x, q_global), = inputs
    B, H, W, C = x.shape
    w = attn.window_size
    nh, nw = -(-H // w), -(-W // w)
    x = F.pad(x, (0, 0, 0, nw * w - W, 0, nh * w - H))
    x = x.view(B, nh, w, nw, w, C).transpose(2, 3).reshape(B, -1, w * w, C)
    N = w * w
    k = attn.qkv(x)[..., :C].view(B, nh * nw, N, attn.num_heads, -1)
    bias = attn.relative_position_bias_table[
        attn.relative_position_index].view(N, N, -1).permute(2, 0, 1)
    logits = (q_global * attn.scale) @ k.permute(0, 1, 3, 4, 2) + bias
    got = next(r for r in records if (r.stage, r.block) == (1, 1)).weights
    torch.testing.assert_close(got, logits.softmax(-1).detach(), rtol=1e-4,
                               atol=1e-6)


def test_maps_are_local_to_the_windows(backbone):
    """Stage 1 (stride 4, window 8) tiles the image in 32-pixel windows:
    new content in window (1, 2) changes the attention there, and barely
    anywhere else (the global queries change a little everywhere)."""
    x = torch.randn(1, 3, HEIGHT, WIDTH)
    y = x.clone()
    y[..., 32:64, 64:96] = 3 * torch.randn(1, 3, 32, 32)
    r = record(backbone, x)[0][0]
    before = attention_maps(r)
    after = attention_maps(record(backbone, y)[0][0])
    assert before.shape == (1, 2, HEIGHT // 4, WIDTH // 4)
    change = (before - after).abs().mean((0, 1)).view(3, 8, 5, 8).mean((1, 3))
    assert change.argmax() == 1 * 5 + 2
    assert change[1, 2] > 10 * change.median()
    # The mean over the 64 query tokens; token (2, 3) in window (0, 0).
    tokens = [attention_maps(r, (i // 8, i % 8)) for i in range(64)]
    torch.testing.assert_close(torch.stack(tokens).mean(0), before)
    torch.testing.assert_close(tokens[2 * 8 + 3][0, :, :8, :8],
                               r.weights[0, 0, :, 2 * 8 + 3].view(2, 8, 8))


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    data = generate_coco(tmp_path_factory.mktemp('vis'), 1, 1,
                         (HEIGHT, WIDTH), classes=('rectangle', 'ellipse'))
    return str(next((data.data_root / 'val2017').glob('*.jpg')))


def grids(model, image, query):
    with record_global_attention(model.backbone) as records:
        sample = inference_detector(model, image)
    return attention_grids(records, sample.metainfo,
                           mmcv.imread(image, 'color', 'rgb'), query)


def test_tool_draws_the_checkpoint_attention(image, tmp_path):
    torch.manual_seed(1)
    ckpt = tmp_path / 'model.pth'
    save_checkpoint(dict(state_dict=init_detector(
        str(DET_CONFIG), device='cpu').state_dict()), str(ckpt))
    out = run([sys.executable, TOOL, DET_CONFIG, image, '--checkpoint', ckpt,
               '--out-dir', tmp_path, '--query-token', 1, 2], cwd=REPO)
    tile = (154, 256)  # 96 x 160 at the default longer side, 256
    # XXT: a row per global block, a column per head, 4-pixel gaps.
    for stage, (blocks, heads) in enumerate([(1, 2), (1, 4), (3, 8),
                                             (1, 16)]):
        png = tmp_path / f'attention_stage{stage + 1}.png'
        assert f'stage {stage + 1} global-query attention: {png}' in out
        assert mmcv.imread(png).shape[:2] == (blocks * (tile[0] + 4) + 4,
                                              heads * (tile[1] + 4) + 4)
    png = torch.from_numpy(mmcv.imread(png, channel_order='rgb')).float()
    loaded = init_detector(str(DET_CONFIG), str(ckpt), device='cpu')
    torch.manual_seed(2)
    fresh = init_detector(str(DET_CONFIG), device='cpu')
    for model, query, same in ((loaded, (1, 2), True), (loaded, None, False),
                               (fresh, (1, 2), False)):
        drawn = (grids(model, image, query)[3].permute(1, 2, 0) * 255).round()
        assert torch.allclose(png, drawn, atol=1) == same


@pytest.mark.parametrize('config, args, message', [
    (DET_CONFIG, ['--checkpoint', 'missing.pth'],
     "checkpoint 'missing.pth' does not exist"),
    (SEG_CONFIG, ['--query-token', '9', '0'],
     'query token (9, 0) is outside the 8x8'),
])
def test_tool_names_bad_input(image, config, args, message):
    rc, output = run_tool([TOOL, config, image, *args], cwd=REPO)
    assert rc == 2 and 'Traceback' not in output
    assert message in output.strip().splitlines()[-1]
