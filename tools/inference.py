"""Predict with a trained detector or segmentor on an image or a folder:
mmdet's ``DetInferencer`` or mmseg's ``MMSegInferencer`` (the config's
``default_scope`` picks), after a check of every image (decoded as the
dataset checker does: Pillow refuses decompression bombs from the header)
and of the checkpoint's fit to the model.
They write ``DIR/vis/`` (painted images) and ``DIR/preds/<stem>.json``
(mmdet) or ``DIR/pred/<index>_pred.png`` (mmseg): docs/inference.md.
"""
import argparse
import os
import os.path as osp

from mmcv.transforms import LoadImageFromFile
from mmengine.config import Config, DictAction

from mmgcvit.checkpoint import state_dict_of
from mmgcvit.dataset_tools.check import decode_image
from mmgcvit.engine import PreflightError, check_weights_fit, one_line_errors

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the config the model was trained with')
    parser.add_argument('checkpoint', help='checkpoint file or http(s) URL')
    parser.add_argument('input', help='an image, or a folder of images')
    parser.add_argument('--out-dir', required=True,
                        help='where the painted images and the predictions '
                        'are written')
    parser.add_argument('--device', help='e.g. cpu, cuda:0 (default: '
                        'cuda:0 if available)')
    parser.add_argument('--score-thr', type=float,
                        help='detection only: lowest score painted (default '
                        '0.3); the json keeps every prediction')
    parser.add_argument('--allow-partial-checkpoint', action='store_true',
                        help='predict even when the checkpoint does not fit '
                        'the model (missing, unused or reshaped weights)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    return parser


def list_images(path):
    """``path`` itself, or the images of the folder ``path``, sorted."""
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise PreflightError(f'input {path!r} does not exist: pass an '
                             'image or a folder of images')
    images = sorted(
        osp.join(path, name) for name in os.listdir(path)
        if name.lower().endswith(IMAGE_SUFFIXES)
        and osp.isfile(osp.join(path, name)))
    if not images:
        raise PreflightError(
            f'input folder {path!r} holds no images '
            f'({", ".join(IMAGE_SUFFIXES)}): pass an image or a folder of '
            'images')
    return images


def check_images(images):
    """Refuse the run in one line naming every unusable image (decoded as
    the inferencers' loader does)."""
    loader = LoadImageFromFile()
    problems = [f'{image} ({shape})' for image in images
                for shape, _ in [decode_image(image, loader)]
                if isinstance(shape, str)]
    if problems:
        raise PreflightError(
            f'{len(problems)} of {len(images)} input images cannot be used: '
            + '; '.join(problems) + '. Replace or remove them.')


def fitting(inferencer_cls, args):
    """``inferencer_cls`` refusing a checkpoint that does not fit the model
    (mmengine's loading only warns of missing and unused weights)."""

    class Fitting(inferencer_cls):

        def _load_weights_to_model(self, model, checkpoint, cfg):
            # mmgcvit's loader scheme has already refused a file that holds
            # no dict.
            check_weights_fit(state_dict_of(checkpoint), model,
                              args.allow_partial_checkpoint,
                              source=f'checkpoint {args.checkpoint}')
            super()._load_weights_to_model(model, checkpoint, cfg)

    return Fitting


def main():
    parser = build_parser()
    args = parser.parse_args()
    with one_line_errors(parser.prog):
        if not osp.isfile(args.config):
            raise PreflightError(
                f'config file {args.config!r} does not exist: pass the '
                'config the model was trained with')
        images = list_images(args.input)
        check_images(images)
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        scope = cfg.get('default_scope')
        if scope not in ('mmdet', 'mmseg'):
            parser.error(f'config {args.config} has default_scope={scope!r}:'
                         " pass an mmdet ('mmdet') or mmseg ('mmseg') config")
        if scope == 'mmseg' and args.score_thr is not None:
            parser.error('--score-thr applies to detection configs only: '
                         'drop it')
        if scope == 'mmdet':
            from mmdet.apis import DetInferencer
            inferencer = fitting(DetInferencer, args)(
                model=cfg, weights=args.checkpoint, device=args.device)
            thr = 0.3 if args.score_thr is None else args.score_thr
            inferencer(images, out_dir=args.out_dir, no_save_pred=False,
                       pred_score_thr=thr)
        else:
            from mmseg.apis import MMSegInferencer
            inferencer = fitting(MMSegInferencer, args)(
                model=cfg, weights=args.checkpoint, device=args.device)
            inferencer(images, out_dir=args.out_dir)
    print(f'{len(images)} images: painted predictions in '
          f'{osp.join(args.out_dir, "vis")}')


if __name__ == '__main__':
    main()
