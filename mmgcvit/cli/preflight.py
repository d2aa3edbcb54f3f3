"""Pre-flight checks: missing files and unusable COCO jsons are reported
before any work starts.

Without them a missing annotation file surfaces after the model is built,
from deep inside the dataset class; a missing pre-trained checkpoint after
the dataset is loaded (COCO: tens of seconds), and a wrong ``--resume`` path
as a loader error. Each check raises ``PreflightError`` with one line that
names the missing path, the config key or flag to fix, and how.

COCO jsons are read once more, for what mmdet's ``CocoDataset`` reports
unclearly: no image left to train on ("need at least one array to
concatenate") and, hours in, annotations with an empty segmentation that the
mask loader cannot load (``KeyError: 'mask'``). They raise ``DataError``,
one line naming the problem, the fix and the dataset checker's command.

Which files are needed depends on what runs: ``PreflightRunner`` checks the
train (and val) data and the ``init_cfg`` checkpoints in ``train()``, the
test data in ``test()``, the val data in ``val()``, before mmengine builds
any dataloader or loads any weight; ``check_checkpoint_flags`` checks
``load_from`` / ``--resume`` before the model is built.
"""
import os.path as osp

from mmengine.runner import Runner

from ..dataset_tools.check import (DatasetConfigError, _check_paths,
                                   _dataset_cfgs, read_coco_run_problems)


class PreflightError(FileNotFoundError):
    """A file the config or command line names does not exist."""


class DataError(ValueError):
    """The data a config names cannot be used by the run (one line naming
    the problem and the fix)."""


def checker_command(cfg, split='train'):
    """The command that checks the dataset of ``split`` as this run sees
    it: with the config that mmengine's ``Runner`` dumps into the work dir,
    which holds the ``--cfg-options`` too, once it is there."""
    config = cfg.filename or 'CONFIG'
    dumped = osp.join(cfg.get('work_dir') or '', osp.basename(config))
    if cfg.filename and osp.isfile(dumped):
        config = dumped
    flag = '' if split == 'train' else f' --split {split}'
    return f'python tools/misc/check_dataset.py {config}{flag}'


def _is_local(path):
    return isinstance(path, str) and '://' not in path


def check_data(cfg, split):
    """The data of ``{split}_dataloader`` and the ``ann_file`` of
    ``{split}_evaluator`` (COCO metrics read it) exist, and the COCO jsons
    of the dataloader leave images to load and masks the loader can
    load."""
    loader = cfg.get(f'{split}_dataloader')
    if not loader or 'dataset' not in loader:
        return
    key = f'{split}_dataloader'
    local = []
    try:
        for ds_cfg, ds_key in _dataset_cfgs(cfg, key):
            if ds_cfg.get('backend_args') is None and _is_local(
                    ds_cfg.get('data_root') or ''):
                _check_paths(ds_cfg, ds_key)
                local.append((ds_cfg, ds_key))
    except DatasetConfigError as error:
        raise PreflightError(str(error)) from None
    for ds_cfg, ds_key in local:
        problems = read_coco_run_problems(ds_cfg, ds_key)
        if problems:
            raise DataError(f'{problems[0]}; then check the whole dataset '
                            f'with: {checker_command(cfg, split)}')
    evaluators = cfg.get(f'{split}_evaluator') or []
    if isinstance(evaluators, dict):
        evaluators = [(f'{split}_evaluator', evaluators)]
    else:
        evaluators = [(f'{split}_evaluator[{i}]', e)
                      for i, e in enumerate(evaluators)]
    for key, evaluator in evaluators:
        ann_file = evaluator.get('ann_file')
        if _is_local(ann_file) and not osp.isfile(ann_file):
            raise PreflightError(
                f'{ann_file} does not exist: fix {key}.ann_file in the '
                'config (or --cfg-options).')


def _pretrained_checkpoints(node, key):
    """``(key of the path, key that disables the loading, path)`` of every
    pre-trained checkpoint the model's ``init_cfg`` (or mmseg's
    ``pretrained=``) loads."""
    if isinstance(node, dict):
        init_cfg = node.get('init_cfg')
        items = init_cfg if isinstance(init_cfg, list) else [init_cfg]
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get('type') == 'Pretrained':
                init_key = f'{key}.init_cfg' + (
                    f'[{i}]' if isinstance(init_cfg, list) else '')
                yield (f'{init_key}.checkpoint', init_key,
                       item.get('checkpoint'))
        if isinstance(node.get('pretrained'), str):
            yield (f'{key}.pretrained', f'{key}.pretrained',
                   node['pretrained'])
        for name, value in node.items():
            if name != 'init_cfg':
                yield from _pretrained_checkpoints(value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _pretrained_checkpoints(value, f'{key}[{i}]')


def check_pretrained(cfg):
    """The local checkpoints of ``init_cfg=dict(type='Pretrained', ...)``
    exist (loaded by ``Runner.train`` when it initialises the weights)."""
    for key, disable, path in _pretrained_checkpoints(
            cfg.get('model'), 'model'):
        if _is_local(path) and not osp.isfile(path):
            raise PreflightError(
                f'pre-trained checkpoint {path} does not exist: put it '
                f'there, set {key} to its path, or train from scratch with '
                f'--cfg-options {disable}=None.')


def check_checkpoint_flags(cfg):
    """``load_from`` / ``--resume PATH`` name existing checkpoints, and
    ``--resume`` alone finds the one ``last_checkpoint`` points to."""
    load_from = cfg.get('load_from')
    if cfg.get('resume'):
        if load_from is None:
            last = osp.join(cfg.work_dir, 'last_checkpoint')
            if not osp.isfile(last):
                return  # mmengine starts from scratch and says so
            fix = ('pass --resume with an existing checkpoint of '
                   f'{cfg.work_dir}, or delete {last} to start afresh')
            with open(last, 'rb') as f:
                try:
                    load_from = f.read().decode().strip()
                except UnicodeDecodeError:
                    raise PreflightError(
                        f'{last} (read by --resume without a path) is not '
                        f'the text path of a checkpoint: {fix}.') from None
            source = f'{last} (written by --resume without a path)'
        else:
            source = '--resume'
            fix = ('pass an existing .pth, or --resume alone to continue '
                   "from the work dir's last_checkpoint")
    else:
        source = 'load_from'
        fix = 'fix load_from (or --cfg-options load_from=...)'
    if _is_local(load_from) and not osp.isfile(load_from):
        raise PreflightError(
            f'checkpoint {load_from} named by {source} does not exist: '
            f'{fix}.')


class PreflightRunner(Runner):
    """mmengine's ``Runner`` that checks the files a run needs first."""

    def train(self):
        check_pretrained(self.cfg)
        check_data(self.cfg, 'train')
        if self._val_loop is not None:
            check_data(self.cfg, 'val')
        return super().train()

    def val(self):
        check_data(self.cfg, 'val')
        return super().val()

    def test(self):
        check_data(self.cfg, 'test')
        return super().test()
