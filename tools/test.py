"""Evaluate a checkpoint with an mmdet 3.x / mmseg 1.x config.

Prints the config's evaluator results (COCO box/mask mAP, mIoU, ...) and
saves them as ``metrics.json`` in the run's log folder. Same flags as
mmdet's and mmseg's ``tools/test.py``.
"""
import argparse
import math
import numbers
import os.path as osp
import sys

from mmgcvit.cli.launch import (add_common_args, build_runner, enable_dump,
                                enable_tta, enable_visualization,
                                load_config, parse_args_with_common,
                                run_context, write_json_atomic)
from mmgcvit.cli.preflight import PreflightError
from mmgcvit.registry import scoped


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        help='a .pkl file for the raw predictions, or, for a segmentation '
        'config, a folder for one prediction PNG per test image')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='folder for the painted predictions; a relative one is made in '
        "the run's log folder (work_dir/<timestamp>/), as mmdet and mmseg "
        'do')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation')
    parser.add_argument(
        '--allow-partial-checkpoint',
        action='store_true',
        help='evaluate even when the checkpoint leaves model weights at '
        'their initialisation (by default that is an error)')
    add_common_args(parser)
    return parse_args_with_common(parser)


def main():
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise PreflightError(
            f'checkpoint {args.checkpoint!r} does not exist: pass the .pth '
            'written by tools/train.py (e.g. work_dirs/<config>/epoch_12.pth)')
    cfg = load_config(args.config, args.cfg_options, args.launcher,
                      args.work_dir)
    cfg.load_from = args.checkpoint
    for hook in cfg.custom_hooks:
        if hook.get('type') == scoped('LoadReportHook'):
            hook['missing_is_error'] = not args.allow_partial_checkpoint
    if args.tta:
        enable_tta(cfg)
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    if args.out:
        enable_dump(cfg, args.out)
    with run_context(cfg):
        runner = build_runner(cfg)
        metrics = runner.test()
    if runner.rank == 0:
        path = osp.join(runner.log_dir, 'metrics.json')
        write_json_atomic(metrics, path)
        print('\n'.join([f'{key}: {value}' for key, value in metrics.items()] +
                        [f'metrics saved to {path}']))
        if args.show_dir:
            print('painted predictions in '
                  f'{osp.join(runner.log_dir, args.show_dir)}')
        if not _measured(metrics):
            sys.exit(f'{sys.argv[0]}: error: the evaluation produced no '
                     f'metrics ({metrics!r}): the model predicted nothing '
                     'the evaluator could score; check the checkpoint '
                     'against the config (see the log above).')


def _measured(metrics):
    """Whether the evaluator returned at least one finite number (mmseg's
    are numpy float32, which is no ``float``)."""
    return any(isinstance(v, numbers.Real) and math.isfinite(v)
               for v in metrics.values())


if __name__ == '__main__':
    main()
