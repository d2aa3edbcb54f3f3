"""Where GC ViT's global queries look, on one image: writes
``attention_stage{1..4}.png`` into ``--out-dir``, the attention of each
stage's global query tokens inside every window over the image (their mean,
or the token of ``--query-token``), a row per global block, a column per
head. Runs mmdet's / mmseg's own inference on the image; without
``--checkpoint`` the model keeps its random initialisation.

    python tools/analysis_tools/visualize_gcvit.py CONFIG IMAGE \\
        [--checkpoint CKPT] [--out-dir DIR] [--query-token ROW COL]
"""
import argparse
import os
import os.path as osp

import mmcv
from mmengine.config import DictAction
from torchvision.utils import save_image

from mmgcvit.analysis.complexity import load_config
from mmgcvit.analysis.visualization import (attention_grids,
                                            record_global_attention)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split(':')[0])
    parser.add_argument('config', help='mmdet/mmseg config with a GCViT')
    parser.add_argument('image', help='image file')
    parser.add_argument('--checkpoint', help='default: random weights')
    parser.add_argument('--out-dir', default='work_dirs/visualize_gcvit')
    parser.add_argument('--query-token', type=int, nargs=2,
                        metavar=('ROW', 'COL'), help="a token's attention "
                        "(position in the stage's window-sized token grid)")
    parser.add_argument('--tile-size', type=int, default=256,
                        help='longer side of each tile in pixels')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    for kind, path in (('image', args.image), ('checkpoint', args.checkpoint)):
        if path is not None and not osp.isfile(path):
            parser.error(f'{kind} {path!r} does not exist: pass the path of '
                         f'an existing {kind} file.')
    try:
        cfg = load_config(args.config, args.cfg_options)
        if cfg.get('default_scope') == 'mmseg':
            from mmseg.apis import inference_model as infer, init_model
        else:
            from mmdet.apis import inference_detector as infer
            from mmdet.apis import init_detector as init_model
        model = init_model(cfg, args.checkpoint, device='cpu')
        with record_global_attention(model.backbone) as records:
            sample = infer(model, args.image)
        grids = attention_grids(
            records, sample.metainfo, mmcv.imread(args.image, 'color', 'rgb'),
            args.query_token, args.tile_size)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    os.makedirs(args.out_dir, exist_ok=True)
    for stage, grid in grids.items():
        path = osp.join(args.out_dir, f'attention_stage{stage + 1}.png')
        save_image(grid, path)
        print(f'stage {stage + 1} global-query attention: {path}')


if __name__ == '__main__':
    main()
