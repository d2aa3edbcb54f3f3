"""Speed, memory and FLOPs of the backbones (or, with ``--detector``, the
whole detectors' training iterations) of configs, next to the last config's.

    python tools/analysis_tools/benchmark.py [CONFIG ...] [--shape H W ...]
        [--batch-size N] [--detector] [--compile] [--out JSON]

Defaults: Mask R-CNN GC ViT-T against mmdet's Mask R-CNN Swin-T (1x). A
GCViT backbone is measured three ways: fused attention, the reference
attention, and fused with activation checkpointing. ``--compile`` adds each
backbone compiled. Prints a Markdown table of figures and of the times
over the last config's; docs/speed.md holds measured ones.
"""
import argparse
import os.path as osp

import torch
from mmengine import dump

from mmgcvit.analysis.benchmark import (backbone_variants,
                                        benchmark_backbone,
                                        benchmark_detector, table)
from mmgcvit.analysis.complexity import build_model, load_config, parse_shape

CONFIGS = ['configs/detection/mask-rcnn_gcvit-t_fpn_1x_coco.py',
           'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='*', default=CONFIGS,
                        help='configs; the last is the reference of the '
                        'ratios (default: GC ViT-T and Swin-T Mask R-CNN)')
    parser.add_argument('--shape', type=int, nargs='+', action='append',
                        help='input size H W (or S), repeatable '
                        '(default: 800 1216)')
    parser.add_argument('--batch-size', type=int,
                        help='images per batch (default: 1, detectors 2)')
    parser.add_argument('--detector', action='store_true',
                        help='time training iterations of the detectors')
    parser.add_argument('--arch', help='GC ViT arch override, e.g. xxtiny')
    parser.add_argument('--min-run-time', type=float, default=5.,
                        help='seconds of timed runs per figure')
    parser.add_argument('--threads', type=int,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--device',
                        help='cpu or cuda[:i] (default: cuda if available)')
    parser.add_argument('--compile', action='store_true',
                        help='add each backbone under torch.compile')
    parser.add_argument('--compile-backend', default='inductor')
    parser.add_argument('--compile-mode',
                        help="e.g. 'reduce-overhead' (CUDA graphs) on a GPU")
    parser.add_argument('--out', help='write the rows as JSON here')
    args = parser.parse_args(argv)
    try:
        args.shapes = [parse_shape(s) for s in args.shape or [[800, 1216]]]
        args.cfgs = [load_config(config) for config in args.configs]
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    batch = args.batch_size or (2 if args.detector else 1)
    compile_kwargs = dict(backend=args.compile_backend, mode=args.compile_mode,
                          dynamic=False)  # one graph per input size
    rows, names = [], []
    for config, cfg in zip(args.configs, args.cfgs):
        name = osp.splitext(osp.basename(config.split('::')[-1]))[0]
        if args.detector:
            names.append(name)
            rows += [dict(name=name, **benchmark_detector(
                cfg, (batch, 3, *shape), device, args.min_run_time))
                for shape in args.shapes]
            continue
        variants = backbone_variants(name, cfg, args.arch)
        names.append(variants[0][0])
        for label, backbone in variants:
            torch.manual_seed(0)
            model = build_model(cfg, backbone).to(device)
            for shape in args.shapes:
                x = torch.randn(batch, 3, *shape, device=device)
                print(f'{label} at {shape}...', flush=True)
                rows.append(dict(name=label, **benchmark_backbone(
                    model, x, args.min_run_time)))
                if args.compile:
                    rows.append(dict(name=f'{label}, compiled',
                                     **benchmark_backbone(
                                         model, x, args.min_run_time,
                                         compile_kwargs)))
    print(f'\nDevice: {device}, {torch.get_num_threads()} threads'
          + (f'; torch.compile({compile_kwargs})' if args.compile else '')
          + '.\n')
    print(table(rows, names[-1]))
    if args.out:
        dump(dict(device=str(device), threads=torch.get_num_threads(),
                  rows=rows), args.out)


if __name__ == '__main__':
    main()
