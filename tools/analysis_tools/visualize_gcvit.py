"""Look inside a GC ViT detector or segmentor on one image.

Writes into ``--out-dir``:

- ``attention_stage{1..4}.png``: the global-query attention of every global
  block and head of the stage (one tile each, captioned ``block b head h``),
  overlaid on the image: inside every window, where the stage's global query
  tokens look (averaged over the tokens, or the token of ``--query-token``).
  Each window's weights sum to 1; each tile is scaled to its own range.
- ``gradcam.png``: the image and a Grad-CAM of the backbone's last stage (or
  ``--stage``) for the top detection / the most predicted segment class, or
  ``--class``.

Without ``--checkpoint`` the model is randomly initialised.

Example::

    python tools/analysis_tools/visualize_gcvit.py \\
        configs/detection/mask-rcnn_gcvit-xxt_fpn_demo-shapes.py IMAGE.jpg \\
        --checkpoint work_dirs/demo-det/train/epoch_12.pth \\
        --out-dir work_dirs/vis
"""
import argparse
import os.path as osp

import mmcv
from mmengine.config import DictAction

from mmgcvit.analysis.visualization import (load_model, prepare_image,
                                            render_attention,
                                            render_grad_cam, save_png)


def parse_args():
    parser = argparse.ArgumentParser(
        description='GC ViT global-query attention maps and Grad-CAM')
    parser.add_argument('config', help='mmdet/mmseg config with a GCViT')
    parser.add_argument('image', help='image file')
    parser.add_argument(
        '--checkpoint', help='model checkpoint (default: random init)')
    parser.add_argument(
        '--out-dir', default='work_dirs/visualize_gcvit',
        help='folder for the PNGs')
    parser.add_argument(
        '--class', dest='target_class',
        help='class name or index for Grad-CAM (default: the top '
        'detection / the most predicted segment class)')
    parser.add_argument(
        '--stage', type=int, choices=(1, 2, 3, 4),
        help='backbone stage for Grad-CAM (default: the last)')
    parser.add_argument(
        '--query-token', type=int, nargs=2, metavar=('ROW', 'COL'),
        help='draw the attention of this global query token (position in '
        "the stage's window-sized token grid) instead of the mean")
    parser.add_argument(
        '--tile-size', type=int, default=256,
        help='longer side of each tile in pixels')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, key=value pairs')
    return parser.parse_args()


def class_index(name, classes):
    """Index of a class given by name or number."""
    if name in classes:
        return classes.index(name)
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    raise SystemExit(f'--class {name!r} is not one of the model\'s classes '
                     f'{list(classes)}: pass a name or an index.')


def main():
    args = parse_args()
    for kind, path in (('image', args.image),
                       ('checkpoint', args.checkpoint)):
        if path is not None and not osp.isfile(path):
            raise SystemExit(f'{kind} {path!r} does not exist: pass the path '
                             f'of an existing {kind} file.')
    model = load_model(args.config, args.checkpoint, args.cfg_options)
    target = None if args.target_class is None else class_index(
        args.target_class, model.dataset_meta['classes'])
    image = mmcv.imread(args.image, channel_order='rgb')
    batch = prepare_image(model, args.image)

    grids = render_attention(model, batch, image, args.query_token,
                             args.tile_size)
    for stage, grid in grids.items():
        path = osp.join(args.out_dir, f'attention_stage{stage + 1}.png')
        save_png(grid, path)
        print(f'stage {stage + 1} global-query attention: {path}')
    stage = None if args.stage is None else args.stage - 1
    picture, cam = render_grad_cam(model, batch, image, target, stage,
                                   args.tile_size)
    path = osp.join(args.out_dir, 'gradcam.png')
    save_png(picture, path)
    print(f'Grad-CAM of class {model.dataset_meta["classes"][cam.label]} '
          f'(score {cam.score:.3f}): {path}')
    if not cam.cam.any():
        print('The Grad-CAM is zero everywhere: no part of this stage '
              'raises the score (every channel-weighted sum is negative); '
              'try an earlier --stage.')


if __name__ == '__main__':
    main()
