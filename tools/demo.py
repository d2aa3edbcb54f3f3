"""Train and evaluate GC ViT on a laptop CPU in minutes, on generated data.

    python tools/demo.py              # Mask R-CNN, box and mask mAP
    python tools/demo.py --task seg   # UPerNet, mIoU

Generates a small learnable dataset in the stock COCO / ADE20K format
(made anew on each run) in ``data/``, trains the demo config from scratch
with ``tools/train.py`` in ``train/``, evaluates the last checkpoint with
``tools/test.py`` in ``test/<timestamp>/`` (mmengine's ``<timestamp>.json``
metrics, prediction pictures in ``vis_data/vis_image/``), all under
``--work-dir``, and prints the metrics.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import time
from pathlib import Path

from mmengine.config import Config
from mmengine.runner import find_latest_checkpoint

from mmgcvit.dataset_tools import generate_ade20k, generate_coco

REPO = Path(__file__).resolve().parents[1]
# Per task: the demo config, its dataset generator and the metrics printed.
TASKS = dict(
    det=('configs/detection/mask-rcnn_gcvit-xxt_fpn_demo-shapes.py',
         generate_coco, ('coco/bbox_mAP_50', 'coco/bbox_mAP',
                         'coco/segm_mAP_50', 'coco/segm_mAP')),
    seg=('configs/segmentation/upernet_gcvit-xxt_demo-ade20k-128x128.py',
         generate_ade20k, ('mIoU', 'aAcc', 'mAcc')),
)
NUM_TRAIN, NUM_VAL, IMG_SIZE = 256, 32, 128


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--task', choices=sorted(TASKS), default='det',
        help='det: Mask R-CNN on COCO-format shapes (box/mask mAP); seg: '
        'UPerNet on ADE20K-format textures (mIoU)')
    parser.add_argument(
        '--work-dir', help='where everything is written (default: '
        'work_dirs/demo-<task>)')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
        help='more overrides of the demo config for training and testing, '
        'e.g. train_cfg.max_epochs=1')
    return parser.parse_args()


def run(*cmd):
    """Run a tool, its output streamed to ours."""
    code = subprocess.call([sys.executable, *map(str, cmd)])
    if code:
        raise SystemExit(f'{cmd[0]} failed (exit code {code}); its output '
                         'is above.')


def main():
    args = parse_args()
    config, generate, metric_names = TASKS[args.task]
    config = REPO / config
    work_dir = osp.abspath(args.work_dir or f'work_dirs/demo-{args.task}')
    start = time.perf_counter()
    data_root = generate(
        osp.join(work_dir, 'data'), NUM_TRAIN, NUM_VAL, IMG_SIZE,
        classes=Config.fromfile(config).metainfo['classes']).data_root
    # The demo config pointed at the generated data.
    options = [f'{split}_dataloader.dataset.data_root={data_root}/'
               for split in ('train', 'val', 'test')]
    if args.task == 'det':
        ann = f'{data_root}/annotations/instances_val2017.json'
        options += [f'val_evaluator.ann_file={ann}',
                    f'test_evaluator.ann_file={ann}']
    options = ['--cfg-options', *options, *args.cfg_options]

    train_dir, test_dir = osp.join(work_dir, 'train'), osp.join(work_dir,
                                                                 'test')
    run(REPO / 'tools/train.py', config, '--work-dir', train_dir, *options)
    # Every test image drawn through the visualizer's PNG backend.
    run(REPO / 'tools/test.py', config, find_latest_checkpoint(train_dir),
        '--work-dir', test_dir, *options,
        'default_hooks.visualization.draw=True',
        'default_hooks.visualization.interval=1')
    # mmengine's LoggerHook saves them to <timestamp>/<timestamp>.json; this
    # run's log folder is the newest.
    metrics_file = max((p for p in Path(test_dir).glob('*/*.json')
                        if p.stem == p.parent.name), key=osp.getmtime)
    with open(metrics_file) as f:
        metrics = json.load(f)
    print('\n' + '=' * 60)
    print(f'GC ViT demo ({args.task}), validation split of the generated '
          f'data ({metrics_file}):')
    for name in metric_names:
        print(f'  {name}: {metrics[name]:.4g}')
    print(f'total time: {(time.perf_counter() - start) / 60:.1f} min')
    print('prediction pictures: ' +
          osp.join(osp.dirname(metrics_file), 'vis_data', 'vis_image'))


if __name__ == '__main__':
    main()
