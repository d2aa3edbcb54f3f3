"""Export a GC ViT segmentor or two-stage detector to ONNX (with
``--dynamic``, its height and width and a segmentor's batch free), and
check it in onnxruntime.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx \\
        [--shape H W] [--dynamic] [--opset N] [--check H W [H W ...]] \\
        [--cfg-options KEY=VALUE ...]

Inputs, outputs and the check: docs/deployment.md. The TorchScript exporter
traces the model (torch.export specialises the window grid to the traced
size); this tool adds an ONNX form of ``adaptive_avg_pool2d`` for any input
size (UPerNet's pyramid pooling) and, for detectors, mmdet's test-time
post-processing written with torchvision's exportable ``nms`` and
``roi_align``.
"""
import argparse
import os.path as osp
import time
import warnings

import torch
from mmengine.config import Config, DictAction
from mmdet.models.dense_heads import RPNHead
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox
from torch.onnx import symbolic_helper
from torch.utils import benchmark
from torchvision.ops import batched_nms, box_iou, roi_align

from mmgcvit.analysis.complexity import build_model as build_from_config
from mmgcvit.checkpoint import state_dict_of
from mmgcvit.checkpoint.loading import load_from_mmgcvit
from mmgcvit.engine import PreflightError, check_weights_fit, one_line_errors

OPSET = 17
IMAGE = {2: 'height', 3: 'width'}
BATCH = {0: 'batch', **IMAGE}


def _ints(g, values):
    return g.op('Constant', value_t=torch.tensor(values, dtype=torch.int64))


def adaptive_avg_pool2d(g, input, output_size):
    """Bin i of s along an axis of length L averages [floor(i L / s),
    ceil((i + 1) L / s)), as PyTorch's kernel; the 2-D mean is the mean
    along H of the means along W (each bin is a rectangle)."""
    x, shape = input, g.op('Shape', input)
    for axis, bins in zip((2, 3), symbolic_helper._parse_arg(output_size,
                                                             'is')):
        length = g.op('Gather', shape, _ints(g, [axis]), axis_i=0)
        means = []
        for i in range(bins):
            # Non-negative operands: ONNX's integer Div is then a floor.
            start = g.op('Div', g.op('Mul', length, _ints(g, [i])),
                         _ints(g, [bins]))
            end = g.op('Div', g.op('Add', g.op('Mul', length,
                                               _ints(g, [i + 1])),
                                   _ints(g, [bins - 1])), _ints(g, [bins]))
            means.append(g.op('ReduceMean',
                              g.op('Slice', x, start, end, _ints(g, [axis])),
                              axes_i=[axis], keepdims_i=1))
        x = g.op('Concat', *means, axis_i=axis) if bins > 1 else means[0]
    return x


class Segmentor(torch.nn.Module):
    """``encode_decode`` of a normalised batch, logits at the input size."""

    input_axes, outputs = BATCH, {'seg_logits': BATCH}

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input):
        size = input.shape[2:]
        return self.model.encode_decode(
            input, [dict(img_shape=size, pad_shape=size, ori_shape=size)])


def _decode(coder, priors, deltas, size):
    # Not coder.decode: in an export it takes onnx_delta2bbox, which imports
    # the mmdet.core of mmdet 2 (mmdet 3.3). 16 / 1000: decode's default.
    return delta2bbox(priors, deltas, coder.means, coder.stds, size,
                      16 / 1000, coder.clip_border, coder.add_ctr_clamp,
                      coder.ctr_clamp)


class Detector(torch.nn.Module):
    """mmdet's ``predict`` of a two-stage detector on one normalised image
    (``rescale=False``), its post-processing in traceable form."""

    input_axes = IMAGE

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.outputs = {'dets': {1: 'dets'}, 'labels': {1: 'dets'}}
        if model.roi_head.with_mask:
            self.outputs['masks'] = {1: 'dets'}

    @staticmethod
    def _roi_feats(extractor, feats, rois):
        # Every level aligns every RoI and each RoI keeps its level's: a
        # trace would keep only the levels holding RoIs when traced, as
        # mmdet's extractor skips empty levels in Python.
        levels = extractor.map_roi_levels(rois, len(extractor.roi_layers))
        out = 0
        for i, layer in enumerate(extractor.roi_layers):
            aligned = roi_align(feats[i], rois, layer.output_size,
                                layer.spatial_scale, layer.sampling_ratio,
                                layer.aligned)
            out = out + torch.where(levels[:, None, None, None] == i,
                                    aligned, 0)
        return out

    def _proposals(self, feats, size):
        """RPNHead.predict_by_feat: top scores per level, decoded, NMS per
        level."""
        rpn, cfg = self.model.rpn_head, self.model.test_cfg.rpn
        cls_scores, bbox_preds = rpn(feats)
        priors = rpn.prior_generator.grid_priors(
            [s.shape[2:] for s in cls_scores], device=feats[0].device)
        boxes, scores, levels = [], [], []
        for level, (score, delta, prior) in enumerate(
                zip(cls_scores, bbox_preds, priors)):
            score = score[0].permute(1, 2, 0).reshape(-1).sigmoid()
            # A traced count: at most nms_pre, whatever the level's size.
            k = torch.clamp(torch.as_tensor(score.shape[0]), max=cfg.nms_pre)
            score, top = score.topk(k)
            delta = delta[0].permute(1, 2, 0).reshape(-1, 4)[top]
            boxes.append(_decode(rpn.bbox_coder, prior[top], delta, size))
            scores.append(score)
            levels.append(torch.full_like(top, level))
        boxes, scores, levels = (torch.cat(t) for t in (boxes, scores,
                                                         levels))
        valid = (boxes[:, 2:] - boxes[:, :2] > cfg.min_bbox_size).all(1)
        boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        keep = batched_nms(boxes, scores, levels,
                           cfg.nms.iou_threshold)[:cfg.max_per_img]
        boxes = boxes[keep]
        # zeros_like, not new_zeros(len(keep), 1): len() is a constant in a
        # trace, the number of boxes traced.
        return torch.cat([torch.zeros_like(boxes[:, :1]), boxes], 1)

    def forward(self, input):
        size = input.shape[2:]
        feats = self.model.extract_feat(input)
        rois = self._proposals(feats, size)
        head, cfg = self.model.roi_head, self.model.test_cfg.rcnn
        cls_score, bbox_pred = head.bbox_head(
            self._roi_feats(head.bbox_roi_extractor, feats, rois))
        # multiclass_nms: every (box, class) above score_thr, NMS per class.
        scores = cls_score.softmax(-1)[:, :-1]
        boxes = _decode(head.bbox_head.bbox_coder, rois[:, 1:], bbox_pred,
                        size).view(*scores.shape, 4)
        labels = torch.arange(scores.shape[1]).expand_as(scores)
        valid = scores > cfg.score_thr
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        keep = batched_nms(boxes, scores, labels,
                           cfg.nms.iou_threshold)[:cfg.max_per_img]
        boxes, labels = boxes[keep], labels[keep]
        outputs = (torch.cat([boxes, scores[keep, None]], 1)[None],
                   labels[None])
        if head.with_mask:
            mask_rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], 1)
            masks = head.mask_head(
                self._roi_feats(head.mask_roi_extractor, feats, mask_rois))
            masks = masks.gather(1, labels[:, None, None, None].expand(
                -1, 1, *masks.shape[2:]))[:, 0].sigmoid()
            outputs += (masks[None], )
        return outputs


def build_model(config, checkpoint, cfg_options=None):
    """The config's model, its weights all from the checkpoint (a partial
    fit is refused in one line), in its export wrapper in eval mode."""
    if not osp.isfile(config):
        raise PreflightError(f'config file {config!r} does not exist: pass '
                             'the config the model was trained with')
    cfg = Config.fromfile(config)  # which imports its custom_imports
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in ('mmseg', 'mmdet'):
        raise PreflightError(f'config {config} has default_scope={scope!r}: '
                             'pass an mmseg or mmdet config')
    # Built, never initialised: the checkpoint brings every weight.
    model = build_from_config(cfg)
    if scope == 'mmdet' and not (
            isinstance(getattr(model, 'rpn_head', None), RPNHead)
            and isinstance(getattr(model, 'roi_head', None),
                           StandardRoIHead)):
        raise PreflightError(
            f'config {config}: only two-stage detectors with one RoI head '
            '(Mask R-CNN, Faster R-CNN) export; Cascade Mask R-CNN and DINO '
            'do not yet (docs/deployment.md)')
    # The loader every tool gets: a file without a dict of weights, or with
    # NaN/Inf ones, refused in one line.
    state_dict = state_dict_of(load_from_mmgcvit(checkpoint))
    check_weights_fit(state_dict, model, source=checkpoint)
    model.load_state_dict(state_dict)
    wrapper = Segmentor if scope == 'mmseg' else Detector
    # No parameter needs a gradient: attention takes its inference kernels.
    return wrapper(model).eval().requires_grad_(False)


def export(model, out, shape, dynamic=False, opset=OPSET):
    torch.onnx.register_custom_op_symbolic(
        'aten::adaptive_avg_pool2d', adaptive_avg_pool2d, opset)
    with warnings.catch_warnings():
        # GCViT's input check compares sizes in Python: a constant in the
        # trace, true for every valid size.
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(
            model, (torch.zeros(1, 3, *shape), ), out, dynamo=False,
            input_names=['input'], output_names=list(model.outputs),
            opset_version=opset,
            dynamic_axes=dict(model.outputs, input=model.input_axes)
            if dynamic else None)


def _seconds(fn, repeat):
    return benchmark.Timer('fn()', globals={'fn': fn}).timeit(repeat).mean


def _detection_diff(got, expected):
    """1 - the lowest IoU of a box with its best match of its class, or the
    largest difference of matched scores (and masks): near-equal scores
    may come in another order."""
    dets, labels = got[0][0], got[1][0]
    if not len(dets):
        return 0.
    iou = box_iou(dets[:, :4], expected[0][0, :, :4])
    iou[labels[:, None] != expected[1][0, None]] = 0
    best, match = iou.max(1)
    diffs = [1 - best.min(), (dets[:, 4] - expected[0][0, match, 4]).abs()]
    if len(got) > 2:
        diffs.append((got[2][0] - expected[2][0, match]).abs())
    return max(d.max().item() for d in diffs)


def check(model, onnx_file, shapes, repeat=3):
    """Per ``(H, W)``, on one random image: the difference of onnxruntime's
    outputs to PyTorch's (of logits the largest relative one, of detections
    :func:`_detection_diff`'s) and the mean seconds of each over ``repeat``
    calls."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    # As many threads as PyTorch's, for a fair comparison.
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(onnx_file, options,
                                   providers=['CPUExecutionProvider'])
    results = []
    for h, w in shapes:
        image = torch.randn(1, 3, h, w)
        with torch.no_grad():
            expected = model(image)
            torch_s = _seconds(lambda: model(image), repeat)
        if isinstance(expected, torch.Tensor):
            expected = (expected, )
        feed = {'input': image.numpy()}
        got = [torch.from_numpy(out) for out in session.run(None, feed)]
        for name, want, out in zip(model.outputs, expected, got):
            if out.shape != want.shape:
                raise AssertionError(f'{onnx_file} at {h}x{w}: {name} '
                                     f'{tuple(out.shape)}, PyTorch '
                                     f'{tuple(want.shape)}')
        if isinstance(model, Segmentor):
            err = ((got[0] - expected[0]).abs().max() /
                   expected[0].abs().max().clamp_min(1e-12)).item()
        else:
            err = _detection_diff(got, expected)
        ort_s = _seconds(lambda: session.run(None, feed), repeat)
        results.append((h, w, err, ort_s, torch_s))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the config the model was trained with')
    parser.add_argument('checkpoint', help='checkpoint file or http(s) URL')
    parser.add_argument('--out', required=True, help='the .onnx file written')
    parser.add_argument('--shape', nargs=2, type=int, default=(512, 512),
                        metavar=('H', 'W'),
                        help='input size traced (default 512 512)')
    parser.add_argument('--dynamic', action='store_true',
                        help='height and width (and a segmentor\'s batch) '
                        'free: one file serves every size')
    parser.add_argument('--opset', type=int, default=OPSET,
                        help=f'ONNX opset (default {OPSET})')
    parser.add_argument('--check', nargs='+', type=int, metavar='H W',
                        help='sizes to compare with PyTorch in onnxruntime '
                        '(and time)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    args = parser.parse_args()
    if args.check and len(args.check) % 2:
        parser.error('--check takes sizes as H W pairs, e.g. --check 256 320 '
                     '384 256')
    sizes = list(zip(args.check[::2], args.check[1::2])) if args.check else []
    for h, w in [tuple(args.shape)] + sizes:
        if h % 32 or w % 32 or min(h, w) < 32:
            parser.error(f'size {h}x{w}: height and width must be multiples '
                         'of 32 (the total stride), at least 32')
    if not args.dynamic and set(sizes) - {tuple(args.shape)}:
        parser.error('--check at sizes other than --shape needs --dynamic '
                     '(without it the file takes the traced size only)')
    with one_line_errors(parser.prog):
        model = build_model(args.config, args.checkpoint, args.cfg_options)
        start = time.perf_counter()
        export(model, args.out, args.shape, args.dynamic, args.opset)
        print(f'{args.out}: exported in {time.perf_counter() - start:.1f} s')
    if sizes:
        print('size      difference  onnxruntime  PyTorch  ratio')
        for h, w, err, ort_s, torch_s in check(model, args.out, sizes):
            print(f'{h}x{w:<6}{err:>10.2e}  {ort_s * 1e3:>8.0f} ms  '
                  f'{torch_s * 1e3:>5.0f} ms  {ort_s / torch_s:>5.2f}')


if __name__ == '__main__':
    main()
