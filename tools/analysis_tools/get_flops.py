"""FLOPs and parameters of a model from an mmdet 3.x / mmseg 1.x config.

    python tools/analysis_tools/get_flops.py CONFIG --shape H W \
        [--cfg-options KEY=VALUE ...] [--show-table]

FLOPs are multiply-adds of one H x W image through mmengine's
``get_model_complexity_info`` (see ``mmgcvit/utils/complexity.py`` for what
is counted).
"""
import argparse

from mmengine.config import Config, DictAction

from mmgcvit.analysis.complexity import complexity_report, model_complexity


def parse_args():
    parser = argparse.ArgumentParser(
        description='FLOPs and parameters of a detector / segmentor')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        required=True,
        help='input image size: H W, or S for S x S')
    parser.add_argument(
        '--show-table',
        action='store_true',
        help="also print mmengine's per-module FLOPs / parameter table")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs as in '
        'tools/train.py')
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    result = model_complexity(cfg, args.shape, show_table=args.show_table)
    print(complexity_report(args.config, result))


if __name__ == '__main__':
    main()
