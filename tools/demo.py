"""Train and evaluate GC ViT on a laptop CPU in minutes, on generated data.

    python tools/demo.py              # Mask R-CNN, box and mask mAP
    python tools/demo.py --task seg   # UPerNet, mIoU

Generates a small learnable dataset in the stock COCO / ADE20K format
(reused on later runs), trains the demo config from scratch with
``tools/train.py``, evaluates the last checkpoint with ``tools/test.py``
and prints the metrics and times. Under ``--work-dir``: ``data/``,
``train/`` (checkpoints, logs), ``test/<timestamp>/`` (``metrics.json``,
prediction pictures in ``vis_data/vis_image/``), ``curves.png`` and
``demo.json`` (metrics, times, paths).
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from pathlib import Path

from mmengine.config import Config
from mmengine.runner import find_latest_checkpoint

from mmgcvit.dataset_tools import generate_ade20k, generate_coco
from mmgcvit.utils.fileio import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
# Per task: the demo config, its dataset generator and the metrics to report
# and plot.
TASKS = dict(
    det=dict(
        config='configs/detection/mask-rcnn_gcvit-xxt_fpn_demo-shapes.py',
        generate=generate_coco,
        metrics=('coco/bbox_mAP_50', 'coco/bbox_mAP', 'coco/segm_mAP_50',
                 'coco/segm_mAP')),
    seg=dict(
        config='configs/segmentation/'
        'upernet_gcvit-xxt_demo-ade20k-128x128.py',
        generate=generate_ade20k,
        metrics=('mIoU', 'aAcc', 'mAcc')),
)
NUM_TRAIN, NUM_VAL, IMG_SIZE = 256, 32, 128


def parse_args():
    parser = argparse.ArgumentParser(
        description='Train and evaluate a GC ViT model on generated data '
        '(CPU, minutes)')
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


def data_options(task, data_root):
    """``--cfg-options`` pointing the demo config at the generated data."""
    options = []
    for split in ('train', 'val', 'test'):
        options.append(f'{split}_dataloader.dataset.data_root={data_root}/')
    if task == 'det':
        ann = f'{data_root}/annotations/instances_val2017.json'
        options += [f'val_evaluator.ann_file={ann}',
                    f'test_evaluator.ann_file={ann}']
    return options


def run(*cmd):
    """Run a tool, its output streamed to ours."""
    code = subprocess.call([sys.executable, *map(str, cmd)],
                           env=dict(os.environ, PYTHONUNBUFFERED='1'))
    if code:
        raise SystemExit(f'{cmd[0]} failed (exit code {code}); its output '
                         'is above.')


def main():
    args = parse_args()
    task = TASKS[args.task]
    work_dir = osp.abspath(args.work_dir or f'work_dirs/demo-{args.task}')
    config = REPO / task['config']
    cfg = Config.fromfile(config)
    start = time.perf_counter()

    data = task['generate'](
        osp.join(work_dir, 'data'), NUM_TRAIN, NUM_VAL, IMG_SIZE,
        classes=cfg.metainfo['classes'])
    options = ['--cfg-options', *data_options(args.task, data.data_root),
               *args.cfg_options]
    generated = time.perf_counter()

    train_dir = osp.join(work_dir, 'train')
    run(REPO / 'tools/train.py', config, '--work-dir', train_dir, *options)
    checkpoint = find_latest_checkpoint(train_dir)
    trained = time.perf_counter()

    # Draw every test image through the visualizer's PNG backend.
    draw = ['default_hooks.visualization.draw=True',
            'default_hooks.visualization.interval=1']
    test_dir = osp.join(work_dir, 'test')
    run(REPO / 'tools/test.py', config, checkpoint, '--work-dir', test_dir,
        *options, *draw)
    tested = time.perf_counter()
    # This run's log folder is the newest (mmgcvit.TestMetricsHook's file).
    metrics_path = max(glob.glob(osp.join(test_dir, '*', 'metrics.json')),
                       key=osp.getmtime)
    with open(metrics_path) as f:
        metrics = json.load(f)
    pictures = osp.join(osp.dirname(metrics_path), 'vis_data', 'vis_image')

    curves = osp.join(work_dir, 'curves.png')
    run(REPO / 'tools/analysis_tools/plot_curves.py', train_dir, '--out',
        curves, '--metrics', *task['metrics'])
    end = time.perf_counter()

    times = dict(data=generated - start, train=trained - generated,
                 test=tested - trained, total=end - start)
    summary = dict(
        task=args.task, config=str(config),
        metrics={k: metrics[k] for k in task['metrics']}, seconds=times,
        data=str(data.data_root), checkpoint=checkpoint,
        pictures=pictures, curves=curves)
    write_json_atomic(summary, osp.join(work_dir, 'demo.json'))
    print('\n' + '=' * 60)
    print(f'GC ViT demo ({args.task}), validation split of the generated '
          'data:')
    for key, value in summary['metrics'].items():
        print(f'  {key}: {value:.4g}')
    print('time: ' + ', '.join(f'{k} {v:.0f} s' for k, v in times.items()) +
          f' ({times["total"] / 60:.1f} min)')
    print(f'prediction pictures: {pictures}')
    print(f'loss and metric curves: {curves}')
    print(f'summary: {osp.join(work_dir, "demo.json")}')


if __name__ == '__main__':
    main()
