"""FLOPs and parameters of a model from an mmdet 3.x / mmseg 1.x config.

    python tools/analysis_tools/get_flops.py CONFIG --shape H W \
        [--cfg-options KEY=VALUE ...] [--show-table]

FLOPs are multiply-adds of one H x W image through mmengine's
``get_model_complexity_info`` (``mmgcvit/analysis/complexity.py`` says what
is counted; ``tools/analysis_tools/benchmark.py`` counts the same way).
"""
import argparse

from mmengine.config import DictAction

from mmgcvit.analysis.complexity import load_config, model_complexity


def main():
    parser = argparse.ArgumentParser(
        description='FLOPs and parameters of a detector / segmentor')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs='+', required=True,
                        help='input image size: H W, or S for S x S')
    parser.add_argument(
        '--show-table', action='store_true',
        help="also print mmengine's per-module FLOPs / parameter table")
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value pairs as in '
        'tools/train.py')
    args = parser.parse_args()
    try:
        result = model_complexity(load_config(args.config, args.cfg_options),
                                  args.shape, show_table=args.show_table)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    height, width = result['input_shape']
    line = '=' * 60
    print(f'{line}\nConfig: {args.config}\n'
          f'Input shape: 3 x {height} x {width} (after padding)\n'
          f"FLOPs: {result['flops'] / 1e9:.1f} G (multiply-adds)\n"
          f"Params: {result['params'] / 1e6:.2f} M\n{line}"
          + result['out_table'])


if __name__ == '__main__':
    main()
