"""Training-iteration time of a GC ViT detector vs a Swin one (default:
Mask R-CNN GC ViT-T vs mmdet's Mask R-CNN Swin-T, 1x configs).

Both detectors are built from their configs without pretrained weights and
train on the same generated batch (images, boxes, masks) through their data
preprocessors; one iteration is forward, backward and optimizer step.

Example::

    python tools/analysis_tools/benchmark_detector.py --threads 2 \
        --shape 2x3x800x1216
"""
import argparse

from mmgcvit.analysis.benchmark import (add_run_args, benchmark_detectors,
                                        config_name, detector_table,
                                        goal_lines, parse_shape, run_device)
from mmgcvit.cli.launch import write_json_atomic

# Goal on CPUs: a GC ViT detector's iteration no slower than Swin's (at most
# this many times its time).
MAX_ITERATION_RATIO = 1.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--shape', type=parse_shape, default=(2, 3, 800, 1216),
                        help='batch shape NxCxHxW (default: %(default)s)')
    add_run_args(parser)
    return parser.parse_args(argv)


def detector_goals(result):
    """(description, value, passed): the first detector's iteration
    against the last's."""
    rows = result['rows']
    if len(rows) < 2:
        return []
    ratio = rows[0]['iter_s'] / rows[-1]['iter_s']
    return [(f'{rows[0]["name"]} iteration no slower than '
             f'{rows[-1]["name"]}', f'{ratio:.2f}x',
             ratio <= MAX_ITERATION_RATIO)]


def main(argv=None):
    args = parse_args(argv)
    device = run_device(args)
    configs = [(config_name(c), c)
               for c in (args.gcvit_config, args.swin_config)]
    result = benchmark_detectors(configs, args.shape, device, args.repeats,
                                 args.warmup)
    print(detector_table(result))
    print()
    print(goal_lines(detector_goals(result)))
    if args.out:
        write_json_atomic(result, args.out)


if __name__ == '__main__':
    main()
