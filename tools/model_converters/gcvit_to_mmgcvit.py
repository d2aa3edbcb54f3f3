"""Convert NVlabs or timm GC ViT weights to an mmgcvit backbone checkpoint.

Example::

    python tools/model_converters/gcvit_to_mmgcvit.py \\
        gcvit_1k_tiny.pth.tar checkpoints/gcvit_tiny_mmgcvit.pth

The output (``{'state_dict', 'meta'}``) loads with
``init_cfg=dict(type='Pretrained', checkpoint=DST)``; the backbone also
reads the NVlabs and timm files directly, so converting is optional.
"""
import argparse
import sys

from mmgcvit.models.backbones.gcvit_checkpoint import (CheckpointFormatError,
                                                       save_converted)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='NVlabs .pth.tar, timm .pth or '
                        '.safetensors, or an mmgcvit checkpoint')
    parser.add_argument('dst', help='output .pth (written atomically)')
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        meta = save_converted(args.src, args.dst)
    except (CheckpointFormatError, FileNotFoundError) as error:
        sys.exit(f'error: {error}')
    print(f'Wrote {args.dst}: {meta}')


if __name__ == '__main__':
    main()
