"""Train a detector or segmentor from an mmdet 3.x / mmseg 1.x config.

One tool for both libraries: the config's ``default_scope`` decides which
registries are used. Same flags as mmdet's and mmseg's ``tools/train.py``.
"""
import argparse

from mmgcvit.cli.launch import (add_common_args, build_runner,
                                enable_auto_scale_lr, load_config,
                                parse_args_with_common, run_context)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic mixed precision training (GPU)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate with the total batch size, from the '
        "config's auto_scale_lr.base_batch_size")
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or, without a path, from the '
        'latest checkpoint in the work dir')
    add_common_args(parser)
    return parse_args_with_common(parser)


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.launcher,
                      args.work_dir, args.amp)
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    with run_context(cfg):
        build_runner(cfg).train()


if __name__ == '__main__':
    main()
