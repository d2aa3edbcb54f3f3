"""Export a GC ViT segmentor to ONNX and check it in onnxruntime.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx \\
        [--shape H W] [--dynamic] [--opset N] [--check H W [H W ...]] \\
        [--cfg-options KEY=VALUE ...]

Segmentors (mmseg): input ``input`` N x 3 x H x W, the normalised image as
after the data preprocessor; output ``seg_logits`` N x C x H x W, what
``encode_decode`` returns. ``--dynamic`` leaves N, H and W free (H and W
multiples of 32): one file serves every size. ``--check`` runs the file in
onnxruntime (CPU) on random images of each size and prints its largest
relative difference to PyTorch and both latencies (docs/deployment.md).

The TorchScript exporter traces the model itself: torch.export (dynamo)
specialises the window grid to the traced size. Its one addition is an
ONNX form of ``adaptive_avg_pool2d`` for any input size (UPerNet's pyramid
pooling), which torch's exporter has only for static sizes.
"""
import argparse
import os.path as osp
import statistics
import time
import warnings

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings
from torch.onnx import symbolic_helper

from mmgcvit.checkpoint import load_checkpoint, state_dict_of
from mmgcvit.engine import PreflightError, check_weights_fit, one_line_errors

OPSET = 17
DYNAMIC_AXES = {'input': {0: 'batch', 2: 'height', 3: 'width'},
                'seg_logits': {0: 'batch', 2: 'height', 3: 'width'}}


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

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input):
        size = input.shape[2:]
        return self.model.encode_decode(
            input, [dict(img_shape=size, pad_shape=size, ori_shape=size)])


def build_model(config, checkpoint, cfg_options=None):
    """The config's segmentor in eval mode with the checkpoint's weights
    (all of them: a partial fit is refused in one line)."""
    if not osp.isfile(config):
        raise PreflightError(f'config file {config!r} does not exist: pass '
                             'the config the model was trained with')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('default_scope') != 'mmseg':
        raise PreflightError(
            f'config {config} has default_scope='
            f"{cfg.get('default_scope')!r}: pass an mmseg segmentor config "
            '(detector export is not supported yet, docs/deployment.md)')
    import_modules_from_strings(**cfg.get('custom_imports', {}))
    init_default_scope(cfg.default_scope)
    model_cfg = cfg.model.copy()
    # The checkpoint brings every weight: no pre-trained download.
    model_cfg.backbone = dict(model_cfg.backbone, init_cfg=None)
    model_cfg.pop('pretrained', None)
    model = MODELS.build(model_cfg)
    state_dict = state_dict_of(load_checkpoint(checkpoint))
    check_weights_fit(state_dict, model, source=checkpoint)
    model.load_state_dict(state_dict)
    # No parameter needs a gradient: attention takes its inference kernels.
    return Segmentor(model).eval().requires_grad_(False)


def export(model, out, shape, dynamic=False, opset=OPSET):
    torch.onnx.register_custom_op_symbolic(
        'aten::adaptive_avg_pool2d', adaptive_avg_pool2d, opset)
    with warnings.catch_warnings():
        # The input checks and the global query's resize compare sizes in
        # Python: constants in the trace, right for every size (the resize
        # to the window is the identity where sizes already match).
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(
            model, (torch.zeros(1, 3, *shape), ), out, dynamo=False,
            input_names=['input'], output_names=['seg_logits'],
            opset_version=opset,
            dynamic_axes=DYNAMIC_AXES if dynamic else None)


def _median_seconds(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check(model, onnx_file, shapes, repeat=3):
    """Per ``(H, W)``: (largest |ORT - PyTorch| / largest |PyTorch|, median
    seconds of onnxruntime, of PyTorch eager), on one random image."""
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
            torch_s = _median_seconds(lambda: model(image), repeat)
        feed = {'input': image.numpy()}
        got = torch.from_numpy(session.run(None, feed)[0])
        if got.shape != expected.shape:
            raise AssertionError(f'{onnx_file} at {h}x{w}: seg_logits '
                                 f'{tuple(got.shape)}, PyTorch '
                                 f'{tuple(expected.shape)}')
        err = ((got - expected).abs().max() /
               expected.abs().max().clamp_min(1e-12)).item()
        ort_s = _median_seconds(lambda: session.run(None, feed), repeat)
        results.append((h, w, err, ort_s, torch_s))
    return results


def build_parser():
    parser = argparse.ArgumentParser(
        description='Export a GC ViT segmentor to ONNX (and check it in '
        'onnxruntime)')
    parser.add_argument('config', help='the config the model was trained with')
    parser.add_argument('checkpoint', help='checkpoint file or http(s) URL')
    parser.add_argument('--out', required=True, help='the .onnx file written')
    parser.add_argument('--shape', nargs=2, type=int, default=(512, 512),
                        metavar=('H', 'W'),
                        help='input size traced (fixed unless --dynamic; '
                        'default 512 512)')
    parser.add_argument('--dynamic', action='store_true',
                        help='batch, height and width free')
    parser.add_argument('--opset', type=int, default=OPSET,
                        help=f'ONNX opset (default {OPSET})')
    parser.add_argument('--check', nargs='+', type=int, metavar='H W',
                        help='sizes to compare with PyTorch in onnxruntime '
                        '(and time)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    return parser


def main():
    parser = build_parser()
    args = parser.parse_args()
    if args.check and len(args.check) % 2:
        parser.error('--check takes sizes as H W pairs, e.g. --check 256 320 '
                     '384 256')
    sizes = list(zip(args.check[::2], args.check[1::2])) if args.check else []
    for h, w in [tuple(args.shape)] + sizes:
        if h % 32 or w % 32 or min(h, w) < 32:
            parser.error(f'size {h}x{w}: height and width must be multiples '
                         'of 32 (the total stride), at least 32')
    if not args.dynamic and any(s != tuple(args.shape) for s in sizes):
        parser.error('--check at sizes other than --shape needs --dynamic')
    with one_line_errors(parser.prog):
        model = build_model(args.config, args.checkpoint, args.cfg_options)
        start = time.perf_counter()
        export(model, args.out, args.shape, args.dynamic, args.opset)
        print(f'{args.out}: exported in {time.perf_counter() - start:.1f} s')
    if sizes:
        print('size      max rel diff  onnxruntime  PyTorch  ratio')
        for h, w, err, ort_s, torch_s in check(model, args.out, sizes):
            print(f'{h}x{w:<6}{err:>12.2e}  {ort_s * 1e3:>8.0f} ms  '
                  f'{torch_s * 1e3:>5.0f} ms  {ort_s / torch_s:>5.2f}')


if __name__ == '__main__':
    main()
