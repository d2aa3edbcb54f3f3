"""``tools/analysis_tools/plot_curves.py WORK_DIR``: the loss and metric
curves of any run, from the ``scalars.json`` mmengine leaves in its log
folders (records written here in mmengine's format: training records
carry ``loss``, validation records the evaluator's keys)."""
import json

import pytest
from helpers import REPO, run_tool

from mmgcvit.analysis.curves import (CurvesError, find_log_dir, plot_curves,
                                     read_scalars)

TOOL = REPO / 'tools' / 'analysis_tools' / 'plot_curves.py'


def write_log(log_dir, records):
    (log_dir / 'vis_data').mkdir(parents=True)
    (log_dir / 'vis_data' / 'scalars.json').write_text(
        ''.join(json.dumps(r) + '\n' for r in records))
    return log_dir


def detection_records(loss):
    """Two epochs of 2 logged iterations, validation after each."""
    records = []
    for epoch in (1, 2):
        for i in (1, 2):
            step = 2 * (epoch - 1) + i
            records.append(dict(lr=1e-4, data_time=0.1, loss=loss / step,
                                loss_cls=0.5, time=1.0, epoch=epoch,
                                iter=step, memory=100, step=step))
        records.append({'coco/bbox_mAP': 0.1 * epoch,
                        'coco/bbox_mAP_50': 0.2 * epoch,
                        'coco/bbox_mAP_75': 0.05, 'coco/bbox_mAP_s': 0.0,
                        'coco/segm_mAP': 0.08 * epoch,
                        'coco/widget_precision': 0.3,
                        'data_time': 0.01, 'time': 0.2, 'step': epoch})
    return records


@pytest.fixture
def det_work_dir(tmp_path):
    """A work dir with an older training run, the newest training run and a
    later test run (whose log folder has no scalars.json)."""
    work_dir = tmp_path / 'work'
    write_log(work_dir / '20261201_100000', detection_records(9.0))
    write_log(work_dir / '20261201_110000', detection_records(3.0))
    test_run = work_dir / '20261201_120000'
    test_run.mkdir()
    (test_run / '20261201_120000.json').write_text(
        json.dumps({'coco/bbox_mAP': 0.2, 'step': 0}) + '\n')
    return work_dir


def lines(fig):
    """``{label: (x, y)}`` of each plotted line, the loss as ``'loss'``."""
    ax_loss, ax_metric = fig.axes
    data = {'loss': tuple(map(list, ax_loss.lines[0].get_data()))}
    for line in ax_metric.lines:
        data[line.get_label()] = tuple(map(list, line.get_data()))
    return data


def test_newest_training_run_and_summary_metrics(det_work_dir):
    log_dir = find_log_dir(str(det_work_dir))
    assert log_dir == str(det_work_dir / '20261201_110000')
    assert find_log_dir(log_dir) == log_dir
    fig, metrics = plot_curves(*read_scalars(log_dir))
    assert metrics == ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP']
    assert lines(fig) == {
        'loss': ([1, 2, 3, 4], [3.0, 1.5, 1.0, 0.75]),
        'coco/bbox_mAP': ([1, 2], [0.1, 0.2]),
        'coco/bbox_mAP_50': ([1, 2], [0.2, 0.4]),
        'coco/segm_mAP': ([1, 2], [0.08, 0.16]),
    }
    assert fig.axes[1].get_xlabel() == 'epoch'


def test_chosen_metrics_and_iteration_runs(tmp_path):
    records = [dict(lr=1e-4, loss=2.0 + i, iter=i, step=i) for i in (10, 20)]
    records += [dict(aAcc=80.0, mIoU=40.0 + i, mAcc=50.0, step=i)
                for i in (10, 20)]
    train, val = read_scalars(write_log(tmp_path / 'seg', records))
    fig, metrics = plot_curves(train, val)
    assert metrics == ['aAcc', 'mIoU', 'mAcc']
    assert fig.axes[1].get_xlabel() == 'iteration'
    fig, metrics = plot_curves(train, val, ['mIoU'])
    assert lines(fig) == {'loss': ([10, 20], [12.0, 22.0]),
                          'mIoU': ([10, 20], [50.0, 60.0])}
    with pytest.raises(CurvesError, match=r'no validation records of '
                       r'mAP: choose among aAcc, mAcc, mIoU$'):
        plot_curves(train, val, ['mAP'])
    # A run without validation, and one shorter than the logger's interval.
    fig, metrics = plot_curves(train, [])
    assert metrics == [] and fig.axes[1].get_title() == 'no validation'
    fig, _ = plot_curves([], val)
    assert lines(fig)['loss'] == ([], [])
    assert fig.axes[0].get_title().startswith('no training loss')


def test_work_dir_without_training_records(det_work_dir, tmp_path):
    for name in ('20261201_100000', '20261201_110000'):
        (det_work_dir / name / 'vis_data' / 'scalars.json').unlink()
    with pytest.raises(CurvesError, match='has no <timestamp>/vis_data/'
                       'scalars.json: pass the work dir of a training run'):
        find_log_dir(str(det_work_dir))
    with pytest.raises(CurvesError, match='does not exist'):
        find_log_dir(str(tmp_path / 'nothing'))


def test_tool(det_work_dir):
    rc, output = run_tool([TOOL, det_work_dir], cwd=det_work_dir)
    assert rc == 0, output[-3000:]
    assert output.strip().splitlines()[-1] == (
        f'{det_work_dir}/curves.png: training loss (4 records) and '
        'coco/bbox_mAP, coco/bbox_mAP_50, coco/segm_mAP of '
        f'{det_work_dir}/20261201_110000')
    assert (det_work_dir / 'curves.png').is_file()
    rc, output = run_tool([TOOL, det_work_dir, '--metrics', 'mIoU'],
                          cwd=det_work_dir)
    assert rc == 1 and 'Traceback' not in output
    assert output.strip().splitlines()[-1].startswith(
        'plot_curves.py: error: no validation records of mIoU: choose '
        'among coco/bbox_mAP, ')
