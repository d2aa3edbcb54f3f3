"""Where GC ViT's global queries look, on one image.

Writes ``attention_stage{1..4}.png`` into ``--out-dir``: the attention of
the stage's global query tokens inside every window, overlaid on the image
(averaged over the tokens, or the token of ``--query-token``), a row per
global block of the stage and a column per head. Each window's weights sum
to 1; each tile is scaled to its own range (JET: blue low, red high).
Without ``--checkpoint`` the model is randomly initialised.

Example::

    python tools/analysis_tools/visualize_gcvit.py \\
        configs/detection/mask-rcnn_gcvit-xxt_fpn_demo-shapes.py IMAGE.jpg \\
        --checkpoint work_dirs/demo-det/train/epoch_12.pth \\
        --out-dir work_dirs/vis
"""
import argparse
import os
import os.path as osp

import mmcv
from mmengine.config import DictAction
from torchvision.utils import save_image

from mmgcvit.analysis.visualization import (attention_grids, load_model,
                                            prepare_image)


def main():
    parser = argparse.ArgumentParser(
        description="GC ViT's global-query attention maps on one image")
    parser.add_argument('config', help='mmdet/mmseg config with a GCViT')
    parser.add_argument('image', help='image file')
    parser.add_argument('--checkpoint',
                        help='model checkpoint (default: random init)')
    parser.add_argument('--out-dir', default='work_dirs/visualize_gcvit',
                        help='folder for the PNGs')
    parser.add_argument(
        '--query-token', type=int, nargs=2, metavar=('ROW', 'COL'),
        help='draw the attention of this global query token (position in '
        "the stage's window-sized token grid) instead of the mean")
    parser.add_argument('--tile-size', type=int, default=256,
                        help='longer side of each tile in pixels')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    args = parser.parse_args()
    for kind, path in (('image', args.image),
                       ('checkpoint', args.checkpoint)):
        if path is not None and not osp.isfile(path):
            parser.error(f'{kind} {path!r} does not exist: pass the path of '
                         f'an existing {kind} file.')
    image = mmcv.imread(args.image, channel_order='rgb')
    query = tuple(args.query_token) if args.query_token else None
    try:
        model = load_model(args.config, args.checkpoint, args.cfg_options)
        grids = attention_grids(model, prepare_image(model, args.image),
                                image, query, args.tile_size)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    os.makedirs(args.out_dir, exist_ok=True)
    for stage, grid in grids.items():
        path = osp.join(args.out_dir, f'attention_stage{stage + 1}.png')
        save_image(grid, path)
        print(f'stage {stage + 1} global-query attention: {path}')


if __name__ == '__main__':
    main()
