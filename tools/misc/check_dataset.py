"""Check the dataset of an mmdet or mmseg config as their own dataset
classes load it.

Prints images and instances (or pixels) per class, what the dataset class
drops from the data and why, and every image or annotation a run would fail
on or mislabel (undecodable images, EXIF turns, NaN boxes, class order,
label values).  Exit status: 0 clean (warnings allowed), 1 errors found, 2
the config points at missing data or data the class cannot load.
docs/data_checks.md lists the checks; mmdet's / mmseg's
tools/analysis_tools/browse_dataset.py paints the ground truth.

Example::

    python tools/misc/check_dataset.py configs/detection/xxx.py --split val
"""
import argparse
import sys

from mmengine.config import DictAction

from mmgcvit.dataset_tools.check import DatasetConfigError, check_dataset


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument('--split', default='train',
                        choices=['train', 'val', 'test'],
                        help='checks <split>_dataloader.dataset')
    parser.add_argument('--workers', type=int,
                        help='threads decoding images (default: one per '
                        'CPU, at most 8)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. '
                        'train_dataloader.dataset.data_root=data/coco/')
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        report = check_dataset(args.config, args.split, args.cfg_options,
                               args.workers)
    except (DatasetConfigError, FileNotFoundError) as error:
        print(f'check_dataset.py: error: {error}', file=sys.stderr)
        sys.exit(2)
    print(report.format())
    sys.exit(0 if report.ok else 1)


if __name__ == '__main__':
    main()
