"""Check the dataset of an mmdet (COCO-style) or mmseg config.

Prints images / instances (or pixels) per class and every annotation the
stock loader would drop or choke on, decodes every image as the config's
pipeline does (truncated / empty / missing files, EXIF orientation against
the annotations), and paints the ground truth of a few images (problematic
ones first).  Exit status: 0 clean (warnings allowed), 1 errors found, 2
the config points at missing data or cannot be built.  docs/data_checks.md
lists the checks.

Example::

    python tools/misc/check_dataset.py configs/detection/xxx.py --split val
"""
import argparse
import sys
from pathlib import Path

from mmengine.config import DictAction

from mmgcvit.dataset_tools.check import DatasetConfigError, check_dataset


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument('--split', default='train',
                        choices=['train', 'val', 'test'],
                        help='checks <split>_dataloader.dataset')
    parser.add_argument('--out-dir', help='where to write the painted PNGs '
                        '(default: work_dirs/check_dataset/<config>_<split>)')
    parser.add_argument('--show-number', type=int, default=4,
                        help='images to paint; 0: none')
    parser.add_argument('--workers', type=int,
                        help='threads decoding images (default: one per '
                        'CPU, at most 8)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. '
                        'train_dataloader.dataset.data_root=data/coco/')
    return parser.parse_args()


def main():
    args = parse_args()
    out_dir = args.out_dir or Path('work_dirs', 'check_dataset',
                                   f'{Path(args.config).stem}_{args.split}')
    try:
        report = check_dataset(args.config, args.split, out_dir,
                               args.show_number, args.cfg_options,
                               args.workers)
    except DatasetConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    print(report.format())
    if report.drawn:
        print(f'painted {len(report.drawn)} images into {out_dir}')
    sys.exit(0 if report.ok else 1)


if __name__ == '__main__':
    main()
