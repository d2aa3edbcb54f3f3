"""Generate a small, learnable dataset in the COCO, ADE20K or mmseg custom
segmentation format (mmgcvit/dataset_tools/synthetic.py), e.g. to try the
custom-data configs:

    python tools/misc/generate_dataset.py custom_seg data/my_seg_dataset \\
        --classes background road grass
"""
import argparse
import sys

from mmgcvit.dataset_tools import (generate_ade20k, generate_coco,
                                   generate_custom_seg)

GENERATORS = dict(coco=generate_coco, ade20k=generate_ade20k,
                  custom_seg=generate_custom_seg)
parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
parser.add_argument('kind', choices=sorted(GENERATORS))
parser.add_argument('root', help='target folder (a former output is '
                    'replaced)')
parser.add_argument('--num-train', type=int, default=16)
parser.add_argument('--num-val', type=int, default=8)
parser.add_argument('--img-size', type=int, default=256)
parser.add_argument('--classes', nargs='+', help='ade20k: ADE20K names')

if __name__ == '__main__':
    args = parser.parse_args()
    try:
        data = GENERATORS[args.kind](
            args.root, args.num_train, args.num_val, args.img_size,
            **dict(classes=args.classes) if args.classes else {})
    except (ValueError, FileExistsError) as error:
        sys.exit(f'generate_dataset.py: error: {error}')
    print(f'data_root = {str(data.data_root) + "/"!r}\nclasses = '
          f'{data.classes!r}')
