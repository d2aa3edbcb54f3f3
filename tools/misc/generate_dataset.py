"""Generate a small, learnable dataset in the COCO, ADE20K or custom
segmentation on-disk format (see ``mmgcvit/dataset_tools/synthetic.py``).

Example::

    python tools/misc/generate_dataset.py coco data/coco-tiny
    python tools/misc/generate_dataset.py ade20k data/ade-tiny \\
        --num-train 64 --num-val 16 --img-size 256
    python tools/misc/generate_dataset.py custom_seg data/my-seg \\
        --classes background road grass
"""
import argparse
import json
import sys

from mmgcvit.dataset_tools import (generate_ade20k, generate_coco,
                                   generate_custom_seg)

GENERATORS = dict(coco=generate_coco, ade20k=generate_ade20k,
                  custom_seg=generate_custom_seg)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('kind', choices=sorted(GENERATORS))
    parser.add_argument('root', help='target folder; re-running with the '
                        'same parameters reuses it, others regenerate it')
    parser.add_argument('--num-train', type=int, default=16)
    parser.add_argument('--num-val', type=int, default=8)
    parser.add_argument('--img-size', type=int, nargs='+', default=[256],
                        metavar='N', help='side, or height width')
    parser.add_argument('--classes', nargs='+', help='class names (coco: '
                        'any; ade20k: ADE20K names; custom_seg: any)')
    parser.add_argument('--objects-per-image', type=int, nargs=2,
                        metavar=('MIN', 'MAX'), help='coco only')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    if len(args.img_size) > 2:
        sys.exit('--img-size takes one side or "height width".')
    kwargs = dict(num_train=args.num_train, num_val=args.num_val,
                  img_size=tuple(args.img_size) * (3 - len(args.img_size)),
                  seed=args.seed)
    if args.classes:
        kwargs['classes'] = args.classes
    if args.objects_per_image:
        if args.kind != 'coco':
            sys.exit('--objects-per-image applies to the coco kind only.')
        kwargs['objects_per_image'] = args.objects_per_image
    try:
        result = GENERATORS[args.kind](args.root, **kwargs)
    except (ValueError, FileExistsError) as error:
        sys.exit(f'error: {error}')
    print(f'data_root: {result.data_root}')
    print(f'classes: {list(result.classes)}')
    print(json.dumps(result.counts, indent=2))


if __name__ == '__main__':
    main()
