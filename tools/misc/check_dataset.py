"""Check the dataset of an mmdet or mmseg config as their own classes load
it: instances (or pixels) per class, what the class drops and why, and
every image or annotation a run would fail on or mislabel (see
docs/data_checks.md). Exit status: 0 clean (warnings allowed), 1 errors,
2 the config names missing data or data the class cannot load.

    python tools/misc/check_dataset.py configs/detection/xxx.py --split val
"""
import argparse
import sys

from mmengine.config import DictAction

from mmgcvit.dataset_tools.check import DatasetConfigError, check_dataset

parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
parser.add_argument('config', help='mmdet or mmseg config file')
parser.add_argument('--split', default='train', choices=['train', 'val',
                                                         'test'])
parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                    help='override config keys, as in tools/train.py')

if __name__ == '__main__':
    args = parser.parse_args()
    try:
        report = check_dataset(args.config, args.split, args.cfg_options)
    except (DatasetConfigError, FileNotFoundError) as error:
        print(f'check_dataset.py: error: {error}', file=sys.stderr)
        sys.exit(2)
    print(report.format())
    sys.exit(0 if report.ok else 1)
