"""Training loss and validation metrics of a run, as one PNG.

    python tools/analysis_tools/plot_curves.py WORK_DIR \
        [--out PNG] [--metrics KEY ...]

Reads ``<timestamp>/vis_data/scalars.json`` (mmengine writes it for every
run of our or the upstream tools) of the newest log folder of WORK_DIR that
holds training losses, or WORK_DIR itself when it is such a folder. Without
``--metrics`` the summary metrics are plotted (COCO ``*_mAP``,
``*_mAP_50``; mIoU, mAcc, aAcc). Writes ``WORK_DIR/curves.png`` unless
``--out`` says otherwise.
"""
import argparse
import os.path as osp

from mmgcvit.analysis.curves import (CurvesError, find_log_dir, plot_curves,
                                     read_scalars)


def main():
    parser = argparse.ArgumentParser(
        description='Plot the training loss and validation metrics of a run')
    parser.add_argument('work_dir', help='work dir (or log folder) of a run')
    parser.add_argument('--out',
                        help='PNG to write (default: WORK_DIR/curves.png)')
    parser.add_argument(
        '--metrics', nargs='+', metavar='KEY',
        help='validation metrics to plot, as named in scalars.json (e.g. '
        'coco/bbox_mAP mIoU)')
    args = parser.parse_args()
    out = args.out or osp.join(args.work_dir, 'curves.png')
    try:
        log_dir = find_log_dir(args.work_dir)
        train, val = read_scalars(log_dir)
        fig, metrics = plot_curves(train, val, args.metrics)
    except CurvesError as err:
        parser.exit(1, f'{parser.prog}: error: {err}\n')
    fig.savefig(out, dpi=100)
    print(f'{out}: training loss ({len(train)} records) and '
          f'{", ".join(metrics) or "no validation metrics"} of {log_dir}')


if __name__ == '__main__':
    main()
