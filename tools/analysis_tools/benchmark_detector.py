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

from mmgcvit.cli.launch import write_json_atomic
from mmgcvit.analysis.benchmark import (add_run_args, benchmark_detectors,
                                     config_name, detector_table, parse_shape,
                                     run_device)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--shape', type=parse_shape, default=(2, 3, 800, 1216),
                        help='batch shape NxCxHxW (default: %(default)s)')
    add_run_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = run_device(args)
    configs = [(config_name(c), c)
               for c in (args.gcvit_config, args.swin_config)]
    result = benchmark_detectors(configs, args.shape, device, args.repeats,
                                 args.warmup)
    print(detector_table(result))
    if args.out:
        write_json_atomic(result, args.out)


if __name__ == '__main__':
    main()
