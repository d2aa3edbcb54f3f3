"""Global-query attention maps (``mmgcvit.analysis.visualization`` and
``tools/analysis_tools/visualize_gcvit.py``).

The attention drawn must be the model's own: softmax rows, equal to a
recomputation from the block's inputs and weights, unchanged model outputs,
and local to the windows whose content changes. The pictures must keep the
image's aspect ratio.
"""
import math
import sys

import mmcv
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, run, run_tool
from mmengine.runner import save_checkpoint

from mmgcvit.analysis.visualization import (GAP, attention_grids, load_model,
                                            prepare_image,
                                            record_global_attention)
from mmgcvit.dataset_tools import generate_ade20k, generate_coco
from mmgcvit.models.backbones.gcvit import GCViT

TOOL = REPO / 'tools' / 'analysis_tools' / 'visualize_gcvit.py'
DET_CONFIG = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_demo-shapes.py'
SEG_CONFIG = (REPO / 'configs/segmentation/'
              'upernet_gcvit-xxt_demo-ade20k-128x128.py')
# Not square, so that a transposed or stretched picture shows.
HEIGHT, WIDTH = 96, 160
# The demo geometry: windows 8, 8, 8, 4 over stage maps of stride 4..32.
GEOMETRY = dict(window_size=(8, 8, 8, 4), pretrain_img_size=128,
                pretrained_window_size=(8, 8, 8, 4))


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    model = GCViT('xxtiny', drop_path_rate=0., **GEOMETRY)
    model.init_weights()
    return model.eval()


def record(backbone, x):
    with record_global_attention(backbone) as records, torch.no_grad():
        out = backbone(x)
    return records, out


def test_records_softmax_rows_of_every_global_block(backbone):
    x = torch.randn(2, 3, HEIGHT, WIDTH)
    records, _ = record(backbone, x)
    # XXT depths (2, 2, 6, 2): every second block is global.
    assert [(r.stage, r.block) for r in records] == [
        (0, 1), (1, 1), (2, 1), (2, 3), (2, 5), (3, 1)]
    heads = (2, 4, 8, 16)
    for r in records:
        w = r.window_size
        h, wd = HEIGHT // 4 // 2**r.stage, WIDTH // 4 // 2**r.stage
        assert r.feat_size == (h, wd)
        windows = math.ceil(h / w) * math.ceil(wd / w)
        assert r.weights.shape == (2, windows, heads[r.stage], w * w, w * w)
        assert (r.weights >= 0).all()
        torch.testing.assert_close(
            r.weights.sum(-1), torch.ones(r.weights.shape[:-1]))


def test_weights_equal_recomputation_from_block_inputs(backbone):
    """softmax(q_global k^T * scale + bias) from the attention module's own
    inputs and parameters, computed here independently."""
    inputs = {}

    def keep(module, args):
        inputs[module] = args

    block = backbone.levels[1].blocks[1]
    handle = block.attn.register_forward_pre_hook(keep)
    try:
        records, _ = record(backbone, torch.randn(1, 3, HEIGHT, WIDTH))
    finally:
        handle.remove()
    x, q_global = inputs[block.attn]
    attn = block.attn
    B, H, W, C = x.shape
    w = attn.window_size
    nh, nw = -(-H // w), -(-W // w)
    x = F.pad(x, (0, 0, 0, nw * w - W, 0, nh * w - H))
    x = x.view(B, nh, w, nw, w, C).transpose(2, 3).reshape(B, -1, w * w, C)
    nW, N = nh * nw, w * w
    k = attn.qkv(x)[..., :C].view(B, nW, N, attn.num_heads, -1)
    k = k.permute(0, 1, 3, 2, 4)
    bias = attn.relative_position_bias_table[
        attn.relative_position_index].view(N, N, -1).permute(2, 0, 1)
    logits = (q_global * attn.scale) @ k.transpose(-2, -1) + bias
    expected = logits.softmax(-1)
    got = next(r for r in records if (r.stage, r.block) == (1, 1)).weights
    torch.testing.assert_close(got, expected.detach(), rtol=1e-4,
                               atol=1e-6)


def test_recording_changes_nothing_and_cleans_up(backbone):
    x = torch.randn(1, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        plain = backbone(x)
    _, recorded = record(backbone, x)
    for a, b in zip(plain, recorded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for level in backbone.levels:
        for block in level.blocks:
            assert block.attn.fused_attn
            assert not block._forward_pre_hooks
            assert not block.attn.attn_drop._forward_hooks


def test_changing_one_window_changes_its_maps(backbone):
    """Stage 1 (stride 4, window 8) tiles the image in 32-pixel windows:
    new content in window (1, 2) changes the attention there, and barely
    anywhere else (the global queries change a little everywhere)."""
    x = torch.randn(1, 3, HEIGHT, WIDTH)
    y = x.clone()
    y[..., 32:64, 64:96] = 3 * torch.randn(1, 3, 32, 32)
    before = record(backbone, x)[0][0].maps()
    after = record(backbone, y)[0][0].maps()
    assert before.shape == (1, 2, HEIGHT // 4, WIDTH // 4)
    change = (before - after).abs().mean((0, 1)).view(3, 8, 5, 8).mean(
        (1, 3))
    edited = change[1, 2]
    assert change.argmax() == 1 * 5 + 2
    assert edited > 10 * change.median()


def test_maps_of_one_query_token(backbone):
    r = record(backbone, torch.randn(1, 3, HEIGHT, WIDTH))[0][0]
    tokens = torch.stack(
        [r.maps((i // 8, i % 8)) for i in range(64)])
    torch.testing.assert_close(tokens.mean(0), r.maps())
    # Token (2, 3)'s row of window (0, 0) is its first w x w block.
    torch.testing.assert_close(r.maps((2, 3))[0, :, :8, :8],
                               r.weights[0, 0, :, 2 * 8 + 3].view(2, 8, 8))
    with pytest.raises(ValueError, match='outside the 8x8'):
        r.maps((8, 0))


def test_record_needs_a_gcvit():
    with pytest.raises(TypeError, match='GCViT backbone'):
        with record_global_attention(torch.nn.Linear(2, 2)):
            pass


@pytest.fixture(scope='module')
def det_image(tmp_path_factory):
    root = tmp_path_factory.mktemp('vis') / 'coco'
    data = generate_coco(root, 1, 1, (HEIGHT, WIDTH),
                         classes=('rectangle', 'ellipse', 'triangle'))
    return str(next((data.data_root / 'val2017').glob('*.jpg')))


@pytest.fixture(scope='module')
def seg_image(tmp_path_factory):
    root = tmp_path_factory.mktemp('vis') / 'ade'
    data = generate_ade20k(root, 1, 1, (HEIGHT, WIDTH))
    return str(next(
        (data.data_root / 'images' / 'validation').glob('*.jpg')))


def expected_grid(rows, cols, tile):
    """torchvision's make_grid: GAP pixels around and between tiles."""
    return (rows * (tile[0] + GAP) + GAP, cols * (tile[1] + GAP) + GAP)


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_tool_pictures_keep_the_image_aspect_ratio(task, det_image,
                                                   seg_image, tmp_path):
    config, image = (DET_CONFIG, det_image) if task == 'det' else \
        (SEG_CONFIG, seg_image)
    out = run([sys.executable, TOOL, config, image, '--out-dir', tmp_path,
               '--tile-size', 200], cwd=REPO)
    tile = (120, 200)  # 96 x 160 with the longer side 200
    # XXT: a row per global block, a column per head.
    for stage, (blocks, heads) in enumerate([(1, 2), (1, 4), (3, 8),
                                             (1, 16)]):
        png = tmp_path / f'attention_stage{stage + 1}.png'
        assert f'stage {stage + 1} global-query attention: {png}' in out
        assert mmcv.imread(png).shape[:2] == expected_grid(blocks, heads,
                                                           tile)


def test_tool_loads_a_checkpoint(det_image, tmp_path):
    """A checkpoint's weights are the ones drawn: attention maps of a
    saved model differ from a fresh random model's and match its own."""
    torch.manual_seed(1)
    model = load_model(DET_CONFIG)
    ckpt = tmp_path / 'model.pth'
    save_checkpoint(dict(state_dict=model.state_dict()), str(ckpt))
    loaded = load_model(DET_CONFIG, ckpt)
    batch = prepare_image(loaded, det_image)
    maps = [record(m.backbone, batch['inputs'])[0][0].weights
            for m in (model, loaded, load_model(DET_CONFIG))]
    torch.testing.assert_close(maps[0], maps[1])
    assert not torch.allclose(maps[0], maps[2])
    run([sys.executable, TOOL, DET_CONFIG, det_image, '--checkpoint', ckpt,
         '--out-dir', tmp_path / 'vis', '--query-token', 1, 2], cwd=REPO)
    # The tool drew the saved model's maps of query token (1, 2).
    png = mmcv.imread(tmp_path / 'vis' / 'attention_stage4.png',
                      channel_order='rgb')
    png = torch.from_numpy(png).float()
    image = mmcv.imread(det_image, channel_order='rgb')
    for query, same in (((1, 2), True), (None, False)):
        grid = attention_grids(loaded, batch, image, query)[3]
        drawn = (grid.permute(1, 2, 0) * 255).round()
        assert torch.allclose(png, drawn, atol=1) == same


@pytest.mark.parametrize('args, message', [
    (['--checkpoint', 'missing.pth'], "checkpoint 'missing.pth' does not "
     'exist'),
    (['--query-token', '9', '0'], 'query token (9, 0) is outside the 8x8'),
])
def test_tool_names_bad_input(det_image, args, message):
    rc, output = run_tool([TOOL, DET_CONFIG, det_image, *args], cwd=REPO)
    assert rc == 2 and 'Traceback' not in output
    assert message in output.strip().splitlines()[-1]
