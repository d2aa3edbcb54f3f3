"""Speed, memory and FLOPs of the GC ViT detection backbone: fused vs
reference attention, activation checkpointing, and mmdet's Swin-T.

Example (the README's numbers)::

    python tools/analysis_tools/benchmark_backbone.py --threads 2 \
        --out work_dirs/benchmark_backbone.json --profile

Prints a Markdown table and the speed/memory goals with PASS/FAIL marks.
On a GPU the same command runs under fp16 autocast.
"""
import argparse

import torch

from mmgcvit.cli.launch import write_json_atomic
from mmgcvit.analysis.benchmark import (DEFAULT_SHAPES, add_run_args,
                                     backbone_table, benchmark_backbones,
                                     build_backbone, default_variants,
                                     parse_shape, profile_forward, run_device,
                                     shape_str)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--shapes', nargs='+', type=parse_shape,
        default=list(DEFAULT_SHAPES),
        help='input shapes NxCxHxW; the forward goal is checked at the '
        'first, the training goals at the last (default: %(default)s)')
    add_run_args(parser)
    parser.add_argument('--arch', help='GC ViT arch override, e.g. xxtiny')
    parser.add_argument('--no-flops', action='store_true',
                        help='skip FLOP counting (it traces one forward)')
    parser.add_argument(
        '--profile', action='store_true',
        help='also print the top ops of the fused forward at the first shape')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = run_device(args)
    variants = default_variants(args.gcvit_config, args.swin_config,
                                args.arch)
    result = benchmark_backbones(
        variants, args.shapes, device, args.repeats, args.warmup,
        with_flops=not args.no_flops)
    print(backbone_table(result))
    if args.profile:
        fused = variants[0]
        model = build_backbone(fused.backbone_cfg(), device)
        x = torch.randn(args.shapes[0], device=device)
        print(f'\nTop ops of the {fused.name} forward at '
              f'{shape_str(args.shapes[0])}:')
        print(profile_forward(model, x))
    if args.out:
        write_json_atomic(result, args.out)


if __name__ == '__main__':
    main()
