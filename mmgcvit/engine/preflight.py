"""Pre-flight checks: a file a run needs but cannot find is named in one line
(the path, the config key or flag to fix) before any data is loaded, not
from deep inside the dataset class or the loader after COCO has loaded.
The resumable train loops call :func:`check_training_files`;
``CheckedTestLoop`` checks the test data and checkpoint, and the metrics.
Whether the data itself is usable is the dataset checker's job.
"""
import math
import numbers
import os.path as osp

from mmengine.runner import TestLoop

from mmgcvit.dataset_tools.check import split_dataset_cfgs
from mmgcvit.registry import LOOPS
from .errors import EvaluationError, PreflightError


def _is_local(path):
    return isinstance(path, str) and '://' not in path


def _require(path, key):
    if _is_local(path) and not osp.exists(path):
        raise PreflightError(f'{path} does not exist: fix {key} in the config '
                             '(or --cfg-options).')


def check_data(cfg, split):
    """The data root, annotation file and data folders of every dataset of
    ``{split}_dataloader``, and the ``ann_file`` of ``{split}_evaluator``
    (COCO metrics read it), exist."""
    for ds_split, ds_cfg, key in split_dataset_cfgs(cfg):
        if ds_split != split or ds_cfg.get('backend_args') is not None:
            continue  # another split, or files behind a storage backend
        data_root = ds_cfg.get('data_root') or ''
        if data_root:
            _require(data_root, f'{key}.data_root')
        if ds_cfg.get('ann_file'):
            _require(osp.join(data_root, ds_cfg.ann_file), f'{key}.ann_file')
        for name, prefix in (ds_cfg.get('data_prefix') or {}).items():
            if prefix:
                _require(osp.join(data_root, prefix),
                         f'{key}.data_prefix.{name}')
    evaluators = cfg.get(f'{split}_evaluator') or []
    single = isinstance(evaluators, dict)
    for i, evaluator in enumerate([evaluators] if single else evaluators):
        if evaluator.get('ann_file'):
            _require(evaluator['ann_file'], f'{split}_evaluator' +
                     ('' if single else f'[{i}]') + '.ann_file')


def unloadable_data(cfg, split, error):
    """One line for an error that building ``split``'s dataloader raised:
    the error, the annotation files, the checker's command."""
    files = [osp.join(ds_cfg.get('data_root') or '', ds_cfg['ann_file'])
             for ds_split, ds_cfg, _ in split_dataset_cfgs(cfg)
             if ds_split == split and ds_cfg.get('ann_file')]
    text = (str(error).strip().splitlines() or [''])[0][:200]
    return (f'the {split} data ({", ".join(files) or "its dataset"}) cannot '
            f'be loaded ({type(error).__name__}: {text}): fix it, and find '
            'every problem with: python tools/misc/check_dataset.py '
            f'{cfg.filename or "CONFIG"}' +
            ('' if split == 'train' else f' --split {split}'))


def check_checkpoint_flags(cfg):
    """``load_from`` / ``--resume PATH`` name existing checkpoints, and
    ``--resume`` alone finds the one ``last_checkpoint`` names (mmengine
    would read a damaged one as a path, or fail to decode it)."""
    load_from = cfg.get('load_from')
    source = 'load_from (the checkpoint argument of tools/test.py)'
    fix = 'pass an existing .pth (or --cfg-options load_from=...)'
    if cfg.get('resume') and load_from is None:
        last = osp.join(cfg.work_dir, 'last_checkpoint')
        if not osp.isfile(last):
            return  # mmengine starts from scratch and says so
        source = f'{last} (read by --resume without a path)'
        fix = ('pass --resume with an existing checkpoint of '
               f'{cfg.work_dir}, or delete {last} to start afresh')
        with open(last, 'rb') as f:
            try:
                load_from = f.read().decode().strip()
            except UnicodeDecodeError:
                raise PreflightError(f'{source} is not the text path of a '
                                     f'checkpoint: {fix}.') from None
    elif cfg.get('resume'):
        source = '--resume'
        fix = ('pass an existing .pth, or --resume alone to continue '
               "from the work dir's last_checkpoint")
    if _is_local(load_from) and not osp.isfile(load_from):
        raise PreflightError(
            f'checkpoint {load_from} named by {source} does not exist: '
            f'{fix}.')


def check_training_files(runner):
    """What ``runner.train()`` reads: checkpoints, train and val data (a
    missing pre-trained checkpoint is named by the loader)."""
    check_checkpoint_flags(runner.cfg)
    check_data(runner.cfg, 'train')
    if runner.cfg.get('val_cfg'):
        check_data(runner.cfg, 'val')


@LOOPS.register_module()
class CheckedTestLoop(TestLoop):
    """mmengine's ``TestLoop`` that first checks that the checkpoint and the
    test data exist, and fails when the evaluation produced no number (an
    empty result, e.g. CocoMetric's without detections, used to exit 0).
    The metrics are mmengine's ``LoggerHook``'s ``<log dir>/<timestamp>.json``.
    """

    def __init__(self, runner, dataloader, *args, **kwargs):
        check_checkpoint_flags(runner.cfg)
        check_data(runner.cfg, 'test')
        super().__init__(runner, dataloader, *args, **kwargs)

    def run(self):
        metrics = super().run()
        # mmseg's metrics are numpy float32, which is no float.
        if not any(isinstance(v, numbers.Real) and math.isfinite(v)
                   for v in metrics.values()):
            raise EvaluationError(
                f'the evaluation produced no metrics ({metrics!r}): the '
                'model predicted nothing the evaluator could score; check '
                'the checkpoint against the config (see the log above).')
        return metrics
