"""FLOPs (multiply-adds) and parameters of a model on one H x W image:

    python tools/analysis_tools/get_flops.py CONFIG --shape H W \
        [--cfg-options ...]

mmdet's own script averages over a dataset's images, and mmseg 1.2.2's
stops with a ValueError under mmengine 0.10, hence this one."""
import argparse

from mmengine.config import DictAction

from mmgcvit.analysis.complexity import load_config, model_complexity


def main():
    parser = argparse.ArgumentParser(description=__doc__.split(':')[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs='+', required=True,
                        help='input image size: H W, or S for S x S')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    try:
        flops, params, (height, width) = model_complexity(
            load_config(args.config, args.cfg_options), args.shape)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    print(f'Config: {args.config}\n'
          f'Input shape: 3 x {height} x {width} (after padding)\n'
          f'FLOPs: {flops / 1e9:.1f} G (multiply-adds)\n'
          f'Params: {params / 1e6:.2f} M')


if __name__ == '__main__':
    main()
