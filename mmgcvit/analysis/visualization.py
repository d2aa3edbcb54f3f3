"""Where GC ViT's global queries look. While recording, the global blocks
take their explicit attention path (``fused_attn=False``, the same
function), where the input of the attention dropout is exactly
softmax(q_global k^T * scale + bias): one row per global query token over
the keys of one window."""
from collections import namedtuple
from contextlib import contextmanager

import mmcv
import torch
import torch.nn.functional as F
from mmengine.visualization.utils import convert_overlay_heatmap
from torchvision.utils import make_grid

from mmgcvit.models.backbones.gcvit import GCViT, GlobalWindowAttention

# weights: (B, windows, heads, N, N) over the padded stage map, windows
# row-major; feat_size: (H, W) of the map before padding; 0-based indices.
Record = namedtuple('Record', 'stage block weights feat_size window_size')


@contextmanager
def record_global_attention(backbone):
    """Yields a list that each global block of ``backbone`` appends its
    ``Record`` to whenever it runs; restores the blocks on exit."""
    if not isinstance(backbone, GCViT):
        raise ValueError(f'record_global_attention needs a GCViT backbone, '
                        f'got {type(backbone).__name__}: use a config whose '
                        "model.backbone.type is 'GCViT'.")
    records, handles, flags = [], [], {}
    for stage, level in enumerate(backbone.levels):
        for index, block in enumerate(level.blocks):
            attn = block.attn
            if not isinstance(attn, GlobalWindowAttention):
                continue
            sizes = []

            def record(module, args, output, key=(stage, index), attn=attn,
                       sizes=sizes):
                records.append(Record(*key, args[0].detach(), sizes.pop(),
                                      attn.window_size))

            handles += [attn.register_forward_pre_hook(
                lambda m, args, sizes=sizes: sizes.append(args[0].shape[1:3])),
                attn.attn_drop.register_forward_hook(record)]
            flags[attn] = attn.fused_attn
            attn.fused_attn = False
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()
        for attn, flag in flags.items():
            attn.fused_attn = flag


def attention_maps(record, query=None):
    """``(B, heads, H, W)``: where the global queries look inside each
    window of the stage map (summing to 1 per window), averaged over the
    query tokens, or of the token at ``query=(row, col)`` of the ``w x w``
    global token grid."""
    w = record.window_size
    if query is None:
        rows = record.weights.mean(3)
    elif 0 <= query[0] < w and 0 <= query[1] < w:
        rows = record.weights[:, :, :, query[0] * w + query[1]]
    else:
        raise ValueError(
            f'query token {tuple(query)} is outside the {w}x{w} global '
            f'token grid of stage {record.stage + 1}: pick row and column '
            f'in 0..{w - 1}.')
    B, _, heads, _ = rows.shape
    H, W = record.feat_size
    nh, nw = -(-H // w), -(-W // w)
    maps = rows.view(B, nh, nw, heads, w, w).permute(0, 3, 1, 4, 2, 5)
    return maps.reshape(B, heads, nh * w, nw * w)[:, :, :H, :W]


def attention_grids(records, metainfo, image, query=None, longer_side=256):
    """``{stage: (3, H, W) float grid}`` over the RGB ``image`` of the
    batch's first sample (``metainfo``: its shapes in the network input): a
    row per global block, a column per head, each heat map scaled to its
    own range (mmengine's JET overlay: blue low, red high)."""
    small = mmcv.imrescale(image, (longer_side, longer_side),
                           interpolation='area')
    img_h, img_w = metainfo['img_shape'][:2]
    padded = metainfo.get('batch_input_shape', (img_h, img_w))
    tiles = {}
    for record in records:
        maps = F.interpolate(attention_maps(record, query)[:1].float(),
                             padded, mode='bilinear')[..., :img_h, :img_w]
        maps = F.interpolate(maps, small.shape[:2], mode='bilinear')[0]
        tiles.setdefault(record.stage, []).extend(
            torch.from_numpy(convert_overlay_heatmap(heat, small, 0.5))
            for heat in maps.numpy())
    heads = {r.stage: r.weights.shape[2] for r in records}
    return {stage: make_grid(torch.stack(t).permute(0, 3, 1, 2) / 255.,
                             nrow=heads[stage], padding=4, pad_value=1.)
            for stage, t in tiles.items()}
