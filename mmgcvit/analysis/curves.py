"""Training-loss and validation-metric curves of a run, from the
``vis_data/scalars.json`` that mmengine's ``LocalVisBackend`` writes into
every log folder (``<work_dir>/<timestamp>/``)."""
import json
import os
import os.path as osp

from matplotlib.figure import Figure

from mmgcvit.utils.fileio import atomic_open

SCALARS = osp.join('vis_data', 'scalars.json')
# What a validation record holds besides its metrics.
_NOT_METRICS = ('step', 'epoch', 'iter', 'time', 'data_time', 'memory', 'lr')
# The summary metrics plotted when none are asked for: mmdet's COCO
# (``coco/bbox_mAP``, ``coco/segm_mAP_50``, ...) and mmseg's IoU metrics.
_SUMMARY_SUFFIXES = ('_mAP', '_mAP_50', 'mIoU', 'mAcc', 'aAcc')


class CurvesError(ValueError):
    """A work dir without the records to plot; the message says why."""


def read_scalars(log_dir):
    """``(train, val)``: the training records (those with a ``loss``) and
    the validation records of ``log_dir``'s ``scalars.json``."""
    with open(osp.join(log_dir, SCALARS)) as f:
        records = [json.loads(line) for line in f if line.strip()]
    train = [r for r in records if 'loss' in r]
    val = [r for r in records if 'loss' not in r]
    return train, val


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


def summary_metrics(val):
    """The summary metrics found in the validation records, in order of
    appearance."""
    keys = [k for r in val for k in r if k not in _NOT_METRICS]
    return list(dict.fromkeys(k for k in keys
                              if k.endswith(_SUMMARY_SUFFIXES)))


def plot_curves(train, val, path, metrics=None):
    """Write the training loss per logged iteration and the validation
    ``metrics`` (default: ``summary_metrics``) to the PNG ``path``."""
    available = {k for r in val for k in r if k not in _NOT_METRICS}
    metrics = summary_metrics(val) if metrics is None else list(metrics)
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise CurvesError(
            f'no validation records of {", ".join(unknown)}: choose among '
            f'{", ".join(sorted(available)) or "none (no validation ran)"}')
    by_epoch = bool(train) and 'epoch' in train[0]
    # A bare Figure (no pyplot): no display backend, no global state.
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_metric = fig.subplots(1, 2)
    ax_loss.plot([r['step'] for r in train], [r['loss'] for r in train])
    ax_loss.set(xlabel='iteration', ylabel='training loss',
                title='training loss')
    if not train:
        _note(ax_loss, 'no loss logged:\nthe run was shorter than\n'
              "the logger's interval")
    for metric in metrics:
        points = [(r['step'], r[metric]) for r in val if metric in r]
        ax_metric.plot(*zip(*points), marker='o', label=metric)
    ax_metric.set(xlabel='epoch' if by_epoch else 'iteration',
                  title='validation')
    ax_metric.xaxis.get_major_locator().set_params(integer=True)
    if metrics:
        ax_metric.legend()
    else:
        _note(ax_metric, 'no validation in this run')
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=100)
    return metrics


def _note(ax, text):
    ax.text(0.5, 0.5, text, ha='center', va='center',
            transform=ax.transAxes)
