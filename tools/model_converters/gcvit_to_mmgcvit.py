"""Convert NVlabs or timm GC ViT weights to an mmgcvit backbone checkpoint.

    python tools/model_converters/gcvit_to_mmgcvit.py \\
        gcvit_1k_tiny.pth.tar checkpoints/gcvit_tiny_mmgcvit.pth

SRC may be a local file or an http(s) URL. The output (``{'state_dict',
'meta'}``) loads with ``init_cfg=dict(type='Pretrained', checkpoint=DST)``;
the backbone also reads the NVlabs and timm files directly, so converting is
optional.
"""
import argparse
import os.path as osp
import sys

import torch

from mmgcvit.checkpoint import CheckpointError, load_checkpoint
from mmgcvit.models.backbones.gcvit_converter import (gcvit_converter,
                                                      infer_arch)
from mmgcvit.utils.fileio import atomic_open


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='NVlabs .pth.tar, timm .pth or '
                        '.safetensors, or an mmgcvit checkpoint (path or URL)')
    parser.add_argument('dst', help='output .pth (written atomically)')
    args = parser.parse_args()
    try:
        state_dict, source_format = gcvit_converter(load_checkpoint(args.src))
        meta = dict(infer_arch(state_dict), source_format=source_format,
                    source=osp.basename(args.src))
    except CheckpointError as error:
        sys.exit(f'error: {error}')
    with atomic_open(args.dst, 'wb') as f:
        torch.save(dict(state_dict=state_dict, meta=meta), f)
    print(f'Wrote {args.dst}: {meta}')


if __name__ == '__main__':
    main()
