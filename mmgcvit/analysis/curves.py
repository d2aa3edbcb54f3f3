"""Training-loss and validation-metric curves of a run, from the
``vis_data/scalars.json`` that mmengine's ``LocalVisBackend`` writes into
every log folder (``<work_dir>/<timestamp>/``).

mmdet's and mmseg's ``tools/analysis_tools/analyze_logs.py`` read the same
file, each in its own task's layout (mmdet's by epoch, mmseg's by step),
given its path, and need seaborn: this one reads both, finds the newest
run of a work dir and draws the loss beside the summary metrics (the demo
calls it).
"""
import json
import os
import os.path as osp

from matplotlib.figure import Figure

SCALARS = osp.join('vis_data', 'scalars.json')
# What a validation record holds besides its metrics.
_NOT_METRICS = ('step', 'epoch', 'iter', 'time', 'data_time', 'memory', 'lr')
# The summary metrics plotted when none are asked for: mmdet's COCO
# (``coco/bbox_mAP``, ``coco/segm_mAP_50``, ...) and mmseg's IoU metrics.
_SUMMARY_SUFFIXES = ('_mAP', '_mAP_50', 'mIoU', 'mAcc', 'aAcc')


class CurvesError(ValueError):
    """A work dir without the records to plot; the message says why."""


def find_log_dir(path):
    """``path`` if it is a log folder, else the newest log folder of the
    work dir ``path`` with a ``scalars.json`` (training runs write one,
    test runs in the same work dir do not)."""
    if osp.isfile(osp.join(path, SCALARS)):
        return path
    if not osp.isdir(path):
        raise CurvesError(f'{path} does not exist: pass the work dir of a '
                          'run (or one of its <timestamp> log folders)')
    for name in sorted(os.listdir(path), reverse=True):
        if osp.isfile(osp.join(path, name, SCALARS)):
            return osp.join(path, name)
    raise CurvesError(
        f'{path} has no <timestamp>/{SCALARS}: pass the work dir of a '
        'training run (its config needs LocalVisBackend in '
        'visualizer.vis_backends, as the mmdet and mmseg defaults have)')


def read_scalars(log_dir):
    """``(train, val)``: the training records (those with a ``loss``) and
    the validation records of ``log_dir``'s ``scalars.json``."""
    with open(osp.join(log_dir, SCALARS)) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return ([r for r in records if 'loss' in r],
            [r for r in records if 'loss' not in r])


def plot_curves(train, val, metrics=None):
    """``(figure, metrics)``: the training loss per logged iteration and the
    validation ``metrics`` (default: the summary metrics found)."""
    available = list(dict.fromkeys(k for r in val for k in r
                                   if k not in _NOT_METRICS))
    if metrics is None:
        metrics = [k for k in available if k.endswith(_SUMMARY_SUFFIXES)]
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise CurvesError(
            f'no validation records of {", ".join(unknown)}: choose among '
            f'{", ".join(sorted(available)) or "none (no validation ran)"}')
    # A bare Figure (no pyplot): no display backend, no global state.
    fig = Figure(figsize=(10, 3.6), layout='tight')
    ax_loss, ax_metric = fig.subplots(1, 2)
    ax_loss.plot([r['step'] for r in train], [r['loss'] for r in train])
    ax_loss.set(xlabel='iteration', title='training loss' if train else
                "no training loss: the run was shorter than the logger's "
                'interval')
    for metric in metrics:
        points = [(r['step'], r[metric]) for r in val if metric in r]
        ax_metric.plot(*zip(*points), marker='o', label=metric)
    by_epoch = bool(train) and 'epoch' in train[0]
    ax_metric.set(xlabel='epoch' if by_epoch else 'iteration',
                  title='validation' if metrics else 'no validation')
    if metrics:
        ax_metric.legend()
    return fig, metrics
