"""Where GC ViT's global queries look: the attention maps of its global
blocks.

``record_global_attention`` captures the softmax weights of every global
attention block of a ``GCViT`` backbone as the model computes them: it
switches those blocks to the explicit attention path (``fused_attn=False``,
numerically the same function) and hooks the attention dropout, whose input
is exactly ``softmax(q_global k^T * scale + bias)``, one row per global query
token over the keys of one window. ``GlobalAttention.maps`` turns those rows
back into image-shaped maps; ``attention_grids`` draws them over the image
(mmengine's heat-map overlay, torchvision's grid).
"""
from contextlib import contextmanager
from dataclasses import dataclass

import mmcv
import torch
import torch.nn.functional as F
from mmengine.dataset import Compose
from mmengine.runner import load_checkpoint
from mmengine.visualization.utils import convert_overlay_heatmap
from torchvision.utils import make_grid

from mmgcvit.models.backbones.gcvit import GCViT, GlobalWindowAttention
from .complexity import build_model, load_config, quiet_logger

# White pixels between the tiles of a grid.
GAP = 4


@dataclass
class GlobalAttention:
    """The attention weights of one global block for a batch.

    Attributes:
        stage, block: 0-based indices of the stage and of the block in it.
        weights: ``(B, num_windows, heads, N, N)`` softmax weights: for each
            window (row-major over the padded stage map), head and global
            query token, a distribution over the window's ``N = w*w`` keys.
        feat_size: ``(H, W)`` of the stage's feature map (before padding to
            whole windows).
        window_size: ``w``.
    """
    stage: int
    block: int
    weights: torch.Tensor
    feat_size: tuple
    window_size: int

    def maps(self, query=None):
        """``(B, heads, H, W)`` attention over the stage map: each window's
        part is where the global queries look inside that window (summing
        to 1 per window). ``query=None`` averages over the global query
        tokens; ``query=(row, col)`` takes the token at that position of the
        ``w x w`` global token grid (which pools the whole image)."""
        w = self.window_size
        if query is None:
            rows = self.weights.mean(3)
        else:
            row, col = query
            if not (0 <= row < w and 0 <= col < w):
                raise ValueError(
                    f'query token {query} is outside the {w}x{w} global '
                    f'token grid of stage {self.stage + 1}: pick row and '
                    f'column in 0..{w - 1}.')
            rows = self.weights[:, :, :, row * w + col]
        B, _, heads, _ = rows.shape
        H, W = self.feat_size
        nh, nw = -(-H // w), -(-W // w)
        maps = rows.view(B, nh, nw, heads, w, w).permute(0, 3, 1, 4, 2, 5)
        return maps.reshape(B, heads, nh * w, nw * w)[:, :, :H, :W]


@contextmanager
def record_global_attention(backbone):
    """Record the global attention weights of ``backbone`` (a ``GCViT``)
    during the forward passes inside the ``with`` block.

    Yields a list that every global block appends a ``GlobalAttention`` to
    when it runs, in execution order. The blocks run their explicit
    attention path meanwhile; their ``fused_attn`` flags and the hooks are
    restored on exit.
    """
    if not isinstance(backbone, GCViT):
        raise TypeError(f'record_global_attention needs a GCViT backbone, '
                        f'got {type(backbone).__name__}: use a config whose '
                        "model.backbone.type is 'GCViT'.")
    records, handles, fused = [], [], {}
    for stage, level in enumerate(backbone.levels):
        for index, block in enumerate(level.blocks):
            if not isinstance(block.attn, GlobalWindowAttention):
                continue
            sizes = []

            def remember_size(module, args, sizes=sizes):
                sizes.append(tuple(args[0].shape[1:3]))

            def record(module, args, output, stage=stage, index=index,
                       sizes=sizes, window=block.window_size):
                records.append(GlobalAttention(
                    stage, index, args[0].detach(), sizes.pop(), window))

            handles += [
                block.register_forward_pre_hook(remember_size),
                # The dropout's input is the softmax itself.
                block.attn.attn_drop.register_forward_hook(record),
            ]
            fused[block.attn] = block.attn.fused_attn
            block.attn.fused_attn = False
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()
        for attn, flag in fused.items():
            attn.fused_attn = flag


def load_model(config, checkpoint=None, cfg_options=None):
    """An mmdet detector or mmseg segmentor with a GCViT backbone, in eval
    mode on the CPU: weights from ``checkpoint`` (mmengine's loading), or
    the model's own random initialisation when it is None."""
    cfg = load_config(str(config), cfg_options)
    # Random weights without a checkpoint, not ImageNet's.
    cfg.merge_from_dict({'model.backbone.init_cfg': None})
    model = build_model(cfg)
    if not isinstance(model.backbone, GCViT):
        raise ValueError(f'{config} has a {type(model.backbone).__name__} '
                        'backbone: pass a GC ViT config.')
    if checkpoint is None:
        with quiet_logger():
            model.init_weights()
    else:
        load_checkpoint(model, str(checkpoint), map_location='cpu',
                        logger='silent')
    model.cfg = cfg
    return model.eval()


def prepare_image(model, image):
    """The model's input for one image file through the config's test
    pipeline (without annotation loading), after its data preprocessor:
    ``dict(inputs=(1, 3, H, W) tensor, data_samples=[sample])``."""
    steps = [t for t in model.cfg.test_dataloader.dataset.pipeline
             if not t['type'].endswith('LoadAnnotations')]
    data = Compose(steps)(dict(img_path=str(image), img_id=0))
    batch = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
    return model.data_preprocessor(batch, False)


def to_image_space(maps, data_sample, size):
    """Maps over the network input's feature grid ``(..., h, w)`` as
    ``(..., height, width)`` arrays over the image itself: resized to the
    (padded) input, cropped to the resized image, resized to ``size``."""
    *lead, h, w = maps.shape
    pad_h, pad_w = data_sample.metainfo.get(
        'batch_input_shape', data_sample.metainfo['img_shape'])
    img_h, img_w = data_sample.metainfo['img_shape'][:2]
    maps = F.interpolate(maps.reshape(1, -1, h, w).float(), (pad_h, pad_w),
                         mode='bilinear')[..., :img_h, :img_w]
    maps = F.interpolate(maps, size, mode='bilinear')
    return maps.reshape(*lead, *size).numpy()


def attention_grids(model, batch, image, query=None, longer_side=256):
    """Global-query attention of ``model``'s backbone on one prepared image
    (``prepare_image``) over the RGB ``image``: ``{stage: (3, H, W) float
    grid}`` (0-based stages) with a row per global block of the stage and
    a column per head, tiles at the image's aspect ratio, each heat map
    scaled to its own range (JET: blue low, red high)."""
    small = mmcv.imrescale(image, (longer_side, longer_side),
                           interpolation='area')
    with record_global_attention(model.backbone) as records, \
            torch.no_grad():
        model.backbone(batch['inputs'])
    tiles = {}
    for record in records:
        maps = to_image_space(record.maps(query)[0], batch['data_samples'][0],
                              small.shape[:2])
        tiles.setdefault(record.stage, []).extend(
            torch.from_numpy(convert_overlay_heatmap(heat, small, 0.5))
            for heat in maps)
    heads = model.backbone.arch_settings['num_heads']
    return {stage: make_grid(torch.stack(t).permute(0, 3, 1, 2) / 255.,
                             nrow=heads[stage], padding=GAP, pad_value=1.)
            for stage, t in tiles.items()}
