"""Speed, memory and FLOPs of the backbones of configs, next to the last
config's: forward, forward+backward, peak training memory (a GCViT fused,
with the reference attention, and fused with activation checkpointing).

    python tools/analysis_tools/benchmark.py [CONFIG ...] [--shape H W ...]
        [--batch-size N] [--arch NAME] [--compile] [--out JSON]

Defaults: Mask R-CNN GC ViT-T against mmdet's Swin-T, 1 x 3 x 800 x 1216.
A whole detector's training iteration time is in the logs of
``tools/train.py`` (mmdet's ``analyze_logs.py cal_train_time``)."""
import argparse
import os.path as osp

import torch
from mmengine import dump

from mmgcvit.analysis.benchmark import benchmark_backbone, table
from mmgcvit.analysis.complexity import build_model, load_config, parse_shape

CONFIGS = ['configs/detection/mask-rcnn_gcvit-t_fpn_1x_coco.py',
           'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
GCVIT_VARIANTS = (('fused', {}), ('reference', dict(fused_attn=False)),
                  ('fused, with_cp', dict(with_cp=True)))


def variants(name, backbone, arch):
    """``(row name, backbone config)``: a GCViT three ways (``arch`` if
    given), others as configured."""
    if backbone.type.split('.')[-1] != 'GCViT':
        return [(name, backbone)]
    backbone = dict(backbone, **(dict(arch=arch) if arch else {}))
    return [(f'{name} {label}', dict(backbone, **extra))
            for label, extra in GCVIT_VARIANTS]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split(':')[0])
    parser.add_argument('configs', nargs='*', default=CONFIGS)
    parser.add_argument('--shape', type=int, nargs='+', action='append',
                        help='input size H W (or S), repeatable')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--arch', help='GC ViT arch override, e.g. xxtiny')
    parser.add_argument('--min-run-time', type=float, default=5.,
                        help='seconds of timed runs per figure')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--device', help='default: cuda if available')
    parser.add_argument('--compile', action='store_true',
                        help='add the backbones under torch.compile')
    parser.add_argument('--compile-mode', help="e.g. 'reduce-overhead'")
    parser.add_argument('--out', help='write the rows as JSON here')
    args = parser.parse_args()
    try:
        shapes = [parse_shape(s) for s in args.shape or [[800, 1216]]]
        cfgs = [load_config(config) for config in args.configs]
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    compile_kwargs = dict(mode=args.compile_mode, dynamic=False)
    rows, names = [], []
    for config, cfg in zip(args.configs, cfgs):
        rows_of = variants(osp.splitext(osp.basename(config))[0],
                           cfg.model.backbone, args.arch)
        names.append(rows_of[0][0])
        for label, model_cfg in rows_of:
            torch.manual_seed(0)
            model = build_model(cfg, model_cfg).to(device)
            for shape in shapes:
                x = torch.randn(args.batch_size, 3, *shape, device=device)
                for kwargs in [None] + [compile_kwargs] * args.compile:
                    print(f'{label} at {shape}...', flush=True)
                    rows.append(dict(
                        name=label + (', compiled' if kwargs else ''),
                        **benchmark_backbone(model, x, args.min_run_time,
                                             kwargs)))
    print(f'\nDevice: {device}, {torch.get_num_threads()} threads.\n')
    print(table(rows, names[-1]))
    if args.out:
        dump(dict(device=str(device), rows=rows), args.out)


if __name__ == '__main__':
    main()
