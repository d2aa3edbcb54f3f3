"""Looking inside GC ViT: global-query attention maps and Grad-CAM.

``record_global_attention`` captures the softmax weights of every global
attention block of a ``GCViT`` backbone as the model computes them: it
switches those blocks to the explicit attention path (``fused_attn=False``,
numerically the same function) and hooks the attention dropout, whose input
is exactly ``softmax(q_global k^T * scale + bias)``, one row per global query
token over the keys of one window. ``GlobalAttention.maps`` turns those rows
back into image-shaped maps: where the global tokens look inside every
window.

``grad_cam`` computes a Grad-CAM (Selvaraju et al., 2017) of the backbone's
last (or any output) stage for an mmdet detector (score of the top
detection, optionally of one class) or an mmseg segmentor (logits of the top
predicted class over its pixels), through the models' own ``predict``.

``load_model`` / ``prepare_image`` build a model and one test input from any
mmdet/mmseg config, and ``overlay`` / ``make_grid`` / ``save_png`` draw
the maps over the image at the image's aspect ratio.
"""
import copy
import logging
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DATASETS, MODELS, init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.visualization.utils import convert_overlay_heatmap

from mmgcvit.checkpoint import safe_checkpoint_loading
from mmgcvit.models.backbones.gcvit import GCViT, GlobalWindowAttention
from mmgcvit.utils.fileio import atomic_open

# Grid drawing: pixels between tiles, caption font scale.
GAP = 4
FONT_SCALE = 0.4


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


def _global_blocks(backbone):
    for s, level in enumerate(backbone.levels):
        for b, block in enumerate(level.blocks):
            if isinstance(block.attn, GlobalWindowAttention):
                yield s, b, block


@contextmanager
def record_global_attention(backbone):
    """Record the global attention weights of ``backbone`` (a ``GCViT``)
    during the forward passes inside the ``with`` block.

    Yields a list that every global block appends a ``GlobalAttention`` to
    when it runs, in execution order. The blocks run their explicit
    attention path meanwhile (the same function as the fused one); their
    ``fused_attn`` flags and the hooks are restored on exit.
    """
    if not isinstance(backbone, GCViT):
        raise TypeError(f'record_global_attention needs a GCViT backbone, '
                        f'got {type(backbone).__name__}: use a config whose '
                        "model.backbone.type is 'GCViT'.")
    records, handles, fused = [], [], {}
    for stage, index, block in _global_blocks(backbone):
        sizes = []

        def remember_size(module, args, sizes=sizes):
            sizes.append(tuple(args[0].shape[1:3]))

        def record(module, args, output, stage=stage, index=index,
                   sizes=sizes, window=block.window_size):
            records.append(
                GlobalAttention(stage, index, args[0].detach(), sizes.pop(),
                                window))

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


def _metainfo_classes(cfg):
    """Class names of the config's test dataset, without loading it."""
    dataset = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset['lazy_init'] = True
    return tuple(DATASETS.build(dataset).metainfo.get('classes', ()))


def load_model(config, checkpoint=None, cfg_options=None):
    """An mmdet detector or mmseg segmentor with a GCViT backbone, in eval
    mode on the CPU: weights from ``checkpoint``, or the model's own random
    initialisation when it is None (no ImageNet weights are loaded).

    Detectors keep every detection (``score_thr=0``) so that even a random
    model has a top detection to explain.
    """
    cfg = copy.deepcopy(config) if isinstance(config, Config) else \
        Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    cfg.model.backbone.init_cfg = None
    rcnn = cfg.model.get('test_cfg', {}).get('rcnn')
    if rcnn is not None:
        rcnn.score_thr = 0.
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    if not isinstance(model.backbone, GCViT):
        raise TypeError(f'{config} has a {type(model.backbone).__name__} '
                        'backbone: pass a GC ViT config.')
    if checkpoint is None:
        # init_weights logs every parameter's initialiser at INFO.
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
        meta = {}
    else:
        with safe_checkpoint_loading():
            meta = load_checkpoint(model, checkpoint, map_location='cpu',
                                   logger='silent').get('meta', {})
    classes = meta.get('dataset_meta', {}).get('classes') or \
        _metainfo_classes(cfg)
    model.dataset_meta = dict(classes=tuple(classes))
    model.cfg = cfg
    return model.eval()


def prepare_image(model, image):
    """The model's input for one image file through the config's test
    pipeline (without annotation loading), after its data preprocessor:
    ``dict(inputs=(1, 3, H, W) tensor, data_samples=[sample])``."""
    steps = [
        t for t in model.cfg.test_dataloader.dataset.pipeline
        if not t['type'].endswith('LoadAnnotations')
    ]
    data = Compose(steps)(dict(img_path=image, img_id=0))
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
    maps = maps.reshape(1, -1, h, w).float()
    maps = F.interpolate(maps, (pad_h, pad_w), mode='bilinear',
                         align_corners=False)[..., :img_h, :img_w]
    maps = F.interpolate(maps, size, mode='bilinear', align_corners=False)
    return maps.reshape(*lead, *size).numpy()


@dataclass
class GradCAM:
    """``cam``: ``(h, w)`` map over the stage's grid (ReLU of the
    gradient-weighted channels); what it explains: ``label`` (class index),
    ``score`` and, for detectors, ``box`` (xyxy, original image)."""
    cam: torch.Tensor
    label: int
    score: float
    box: tuple = None


def _target(result, target_class):
    """The score to explain in one prediction, with its label and box."""
    if 'pred_instances' in result:
        pred = result.pred_instances
        keep = torch.ones_like(pred.labels, dtype=torch.bool) \
            if target_class is None else pred.labels == target_class
        if not keep.any():
            raise ValueError(
                f'no detection of class {target_class}: pick another '
                'class, or leave it out to explain the top detection.')
        index = torch.where(keep, pred.scores.detach(),
                            torch.tensor(-1.)).argmax()
        score = pred.scores[index]
        return score, int(pred.labels[index]), \
            tuple(pred.bboxes[index].tolist())
    logits = result.seg_logits.data
    pred = logits.detach().argmax(0)
    label = int(pred.flatten().mode().values) \
        if target_class is None else target_class
    if not 0 <= label < logits.shape[0]:
        raise ValueError(f'class {label} is not one of the model\'s '
                         f'{logits.shape[0]} classes.')
    region = pred == label
    if not region.any():
        # Nothing predicted as this class: explain its logit everywhere.
        region = torch.ones_like(region)
    score = logits[label][region].mean()
    return score, label, None


def grad_cam(model, batch, target_class=None, stage=None):
    """Grad-CAM of one backbone stage (default: the last) for one prepared
    image (``prepare_image``): the gradient of the target score, averaged
    per channel, weights the stage's output channels; ReLU keeps what
    raises the score.

    Detectors: the target is the top detection's score (of ``target_class``
    if given). Segmentors: the mean logit of the most predicted class (or
    ``target_class``) over the pixels predicted as it. ``stage`` is 0-based
    and must be one of the backbone's ``out_indices``.
    """
    out_indices = model.backbone.out_indices
    stage = out_indices[-1] if stage is None else stage
    if stage not in out_indices:
        raise ValueError(
            f'stage {stage + 1} is not an output of the backbone '
            f'(out_indices={out_indices}): pick one of '
            f'{[i + 1 for i in out_indices]}.')
    position = out_indices.index(stage)
    outputs = []

    def keep_stage(module, args, output):
        output[position].retain_grad()
        outputs.append(output[position])

    handle = model.backbone.register_forward_hook(keep_stage)
    try:
        with torch.enable_grad():
            result = model.predict(batch['inputs'],
                                   batch['data_samples'])[0]
            score, label, box = _target(result, target_class)
            score.backward()
    finally:
        handle.remove()
    features = outputs[0]
    weights = features.grad.mean((2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(1))[0].detach()
    return GradCAM(cam, label, score.item(), box)


def overlay(image, heat, alpha=0.5):
    """RGB ``image`` with the ``heat`` map (same size; min-max scaled, JET
    colours) blended over it."""
    return convert_overlay_heatmap(np.asarray(heat, np.float32), image,
                                   alpha)


def tile_size(image_shape, longer_side):
    """``(height, width)`` with the image's aspect ratio and the longer side
    ``longer_side``."""
    h, w = image_shape[:2]
    scale = longer_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def caption(tile, text):
    """Write ``text`` in the tile's top-left corner on a dark band."""
    tile = tile.copy()
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX,
                                     FONT_SCALE, 1)
    tile[:th + base + 4, :tw + 4] //= 3
    cv2.putText(tile, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE,
                (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def make_grid(tiles, ncols):
    """Equal-size RGB tiles in rows of ``ncols``, ``GAP`` white pixels
    between them."""
    h, w = tiles[0].shape[:2]
    nrows = -(-len(tiles) // ncols)
    grid = np.full((nrows * h + (nrows - 1) * GAP,
                    ncols * w + (ncols - 1) * GAP, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        grid[r * (h + GAP):r * (h + GAP) + h,
             c * (w + GAP):c * (w + GAP) + w] = tile
    return grid


def save_png(rgb, path):
    """Write an RGB image as PNG; the file appears complete or not at all."""
    ok, data = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f'could not encode {path} as PNG')
    with atomic_open(path, 'wb') as f:
        f.write(data.tobytes())


def _resized(image, size):
    return cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)


def render_attention(model, batch, image, query=None, longer_side=256,
                     max_cols=8):
    """Global-query attention of ``model``'s backbone on one prepared image
    (``prepare_image``) over the RGB ``image``: ``{stage: grid}`` (0-based
    stages), one tile per global block and head, at the image's aspect
    ratio, captioned ``block b head h`` (1-based: the stage's b-th block).
    Each tile is scaled to its own range (JET: blue low, red high)."""
    size = tile_size(image.shape, longer_side)
    small = _resized(image, size)
    sample = batch['data_samples'][0]
    with record_global_attention(model.backbone) as records, \
            torch.no_grad():
        model.backbone(batch['inputs'])
    tiles = {}
    for record in records:
        maps = to_image_space(record.maps(query)[0], sample, size)
        tiles.setdefault(record.stage, []).extend(
            caption(overlay(small, heat),
                    f'block {record.block + 1} head {head + 1}')
            for head, heat in enumerate(maps))
    heads = model.backbone.arch_settings['num_heads']
    return {
        stage: make_grid(stage_tiles, min(max_cols, heads[stage]))
        for stage, stage_tiles in tiles.items()
    }


def render_grad_cam(model, batch, image, target_class=None, stage=None,
                    longer_side=256):
    """``(picture, GradCAM)``: the image and its Grad-CAM overlay side by
    side, captioned with the stage, class and score (detection score, or
    mean logit for segmentors), the explained box drawn for detectors; at
    the image's aspect ratio; ``stage`` as for ``grad_cam``."""
    result = grad_cam(model, batch, target_class, stage)
    size = tile_size(image.shape, longer_side)
    small = _resized(image, size)
    heat = overlay(small,
                   to_image_space(result.cam, batch['data_samples'][0], size))
    if result.box is not None:
        scale = size[1] / image.shape[1], size[0] / image.shape[0]
        x0, y0, x1, y1 = (round(v * scale[i % 2])
                          for i, v in enumerate(result.box))
        cv2.rectangle(heat, (x0, y0), (x1, y1), (255, 255, 255), 1)
    classes = model.dataset_meta['classes']
    name = classes[result.label] if result.label < len(classes) \
        else str(result.label)
    stage_number = (model.backbone.out_indices[-1]
                    if stage is None else stage) + 1
    picture = make_grid([
        caption(small, 'input'),
        caption(heat, f'Grad-CAM S{stage_number}: {name} {result.score:.2f}')
    ], 2)
    return picture, result
