"""Speed, memory and FLOPs of the GC ViT detection backbone: fused vs
reference attention, activation checkpointing, and mmdet's Swin-T; with
``--compile``, eager vs ``torch.compile`` instead.

Examples (docs/speed.md's numbers)::

    python tools/analysis_tools/benchmark_backbone.py --threads 2 \
        --out work_dirs/benchmark_backbone.json --profile
    python tools/analysis_tools/benchmark_backbone.py --threads 2 --compile \
        --out work_dirs/benchmark_compile.json

Prints a Markdown table and the speed/memory goals with PASS/FAIL marks.
On a GPU the same command runs under fp16 autocast.
"""
import argparse

import torch

from mmgcvit.analysis.benchmark import (DEFAULT_SHAPES, add_run_args,
                                        backbone_table, benchmark_backbones,
                                        benchmark_compiled, build_backbone,
                                        compile_table, compile_variants,
                                        default_variants, find_row,
                                        goal_lines, parse_shape,
                                        profile_forward, run_device,
                                        shape_str)
from mmgcvit.cli.launch import write_json_atomic

# Goals of the speed work on CPUs: the fused attention and activation
# checkpointing against the reference, and torch.compile against eager.
FUSED_FORWARD_SPEEDUP = 2.0
FUSED_TRAIN_SPEEDUP = 1.6
FUSED_MEMORY_RATIO = 0.6
CP_MEMORY_SAVING = 0.4
CP_MAX_SLOWDOWN = 0.35
COMPILED_FORWARD_SPEEDUP = 1.2
COMPILED_TRAIN_SPEEDUP = 1.1
COMPILED_MEMORY_RATIO = 1.0
GPU_GOALS_NOTE = (
    'The speed goals were set for CPUs. At these sizes a GPU mostly waits '
    'for the host to launch GC ViT\'s many small kernels (docs/speed.md, '
    '"On a GPU").')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--shapes', nargs='+', type=parse_shape,
        default=list(DEFAULT_SHAPES),
        help='input shapes NxCxHxW; the forward goals are checked at the '
        'first, the training goals at the last (default: %(default)s)')
    add_run_args(parser)
    parser.add_argument('--arch', help='GC ViT arch override, e.g. xxtiny')
    parser.add_argument('--no-flops', action='store_true',
                        help='skip FLOP counting (it traces one forward)')
    parser.add_argument(
        '--profile', action='store_true',
        help='also print the top ops of the fused forward at the first shape')
    parser.add_argument(
        '--compile', action='store_true',
        help='eager vs torch.compile of GC ViT (fused) and Swin-T, with the '
        'ATen ops each dispatches per eager forward')
    parser.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend (default: %(default)s)')
    parser.add_argument(
        '--compile-mode', default=None,
        help="torch.compile mode, e.g. 'reduce-overhead' (CUDA graphs) on "
        'a GPU (default: none)')
    return parser.parse_args(argv)


def backbone_goals(result):
    """(description, value, passed) of each fused / with_cp goal the
    measured rows allow: forward at the first shape, training at the
    last."""
    rows = result['rows']
    if not rows:
        return []
    first, last = rows[0]['shape'], rows[-1]['shape']
    fused_f, ref_f = (find_row(rows, role, first)
                      for role in ('fused', 'reference'))
    fused_t, ref_t, cp_t = (find_row(rows, role, last)
                            for role in ('fused', 'reference', 'cp'))
    goals = []
    if fused_f and ref_f:
        speedup = ref_f['forward_s'] / fused_f['forward_s']
        goals.append((f'fused forward speedup at {shape_str(first)} '
                      f'>= {FUSED_FORWARD_SPEEDUP}x', f'{speedup:.2f}x',
                      speedup >= FUSED_FORWARD_SPEEDUP))
    if fused_t and ref_t:
        speedup = ref_t['train_s'] / fused_t['train_s']
        goals.append((f'fused forward+backward speedup at {shape_str(last)} '
                      f'>= {FUSED_TRAIN_SPEEDUP}x', f'{speedup:.2f}x',
                      speedup >= FUSED_TRAIN_SPEEDUP))
        ratio = fused_t['train_peak_mib'] / ref_t['train_peak_mib']
        goals.append((f'fused peak training memory at {shape_str(last)} '
                      f'<= {FUSED_MEMORY_RATIO}x reference', f'{ratio:.2f}x',
                      ratio <= FUSED_MEMORY_RATIO))
    if fused_t and cp_t:
        saving = 1 - cp_t['train_peak_mib'] / fused_t['train_peak_mib']
        slowdown = cp_t['train_s'] / fused_t['train_s'] - 1
        goals.append((f'with_cp memory saving at {shape_str(last)} '
                      f'>= {CP_MEMORY_SAVING:.0%}', f'{saving:.0%}',
                      saving >= CP_MEMORY_SAVING))
        goals.append((f'with_cp slowdown at {shape_str(last)} '
                      f'<= {CP_MAX_SLOWDOWN:.0%}', f'{slowdown:.0%}',
                      slowdown <= CP_MAX_SLOWDOWN))
    return goals


def compile_goals(result):
    """(description, value, passed) of the compiled GC ViT against eager:
    forward at the first shape, training and its memory at the last."""
    rows = [row for row in result['rows'] if row['role'] == 'fused']
    if not rows:
        return []
    forward, train = rows[0], rows[-1]
    first, last = shape_str(forward['shape']), shape_str(train['shape'])
    forward_speedup = (forward['eager_forward_s'] /
                       forward['compiled_forward_s'])
    train_speedup = train['eager_train_s'] / train['compiled_train_s']
    memory_ratio = train['compiled_peak_mib'] / train['eager_peak_mib']
    return [
        (f'compiled forward speedup at {first} >= '
         f'{COMPILED_FORWARD_SPEEDUP}x', f'{forward_speedup:.2f}x',
         forward_speedup >= COMPILED_FORWARD_SPEEDUP),
        (f'compiled forward+backward speedup at {last} >= '
         f'{COMPILED_TRAIN_SPEEDUP}x', f'{train_speedup:.2f}x',
         train_speedup >= COMPILED_TRAIN_SPEEDUP),
        (f'compiled peak training memory at {last} <= '
         f'{COMPILED_MEMORY_RATIO}x eager', f'{memory_ratio:.2f}x',
         memory_ratio <= COMPILED_MEMORY_RATIO),
    ]


def report(table, goals, device):
    """The table, the GPU caveat off the CPU, and the goal lines."""
    parts = [table]
    if not device.startswith('cpu'):
        parts.append(GPU_GOALS_NOTE)
    return '\n\n'.join(parts + [goal_lines(goals)])


def main(argv=None):
    args = parse_args(argv)
    device = run_device(args)
    if args.compile:
        variants = compile_variants(args.gcvit_config, args.swin_config,
                                    args.arch)
        # One graph per input size (dynamic=False): a dynamic-shape graph
        # would attend padded windows, not the eager CPU path's.
        result = benchmark_compiled(
            variants, args.shapes, device, args.repeats, args.warmup,
            dict(backend=args.compile_backend, mode=args.compile_mode,
                 dynamic=False))
        print(report(compile_table(result), compile_goals(result),
                     result['device']))
    else:
        variants = default_variants(args.gcvit_config, args.swin_config,
                                    args.arch)
        result = benchmark_backbones(
            variants, args.shapes, device, args.repeats, args.warmup,
            with_flops=not args.no_flops)
        print(report(backbone_table(result), backbone_goals(result),
                     result['device']))
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
