"""Config handling and run set-up shared by ``tools/train.py`` and
``tools/test.py``.

Both tools serve mmdet and mmseg configs alike: the config's
``default_scope`` picks the registries. ``load_config`` applies the
command-line flags researchers know from the upstream tools and our config
additions (exact resume, the load report, the CPU fallbacks);
``run_context`` applies, for the run only, what we change in mmengine
itself (atomic checkpoint writes, safe checkpoint loading, the CPU gloo
launch) and removes what killed checkpoint writes left behind.
"""
import json
import logging
import os
import os.path as osp
import sys
from contextlib import ExitStack, contextmanager

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS

from mmgcvit.checkpoint import CheckpointError, safe_checkpoint_loading
from mmgcvit.engine.atomic_checkpoint import atomic_checkpoint_writes
from mmgcvit.registry import scoped
from mmgcvit.utils.fileio import atomic_open, remove_stale_temporaries
from .cpu import cpu_gloo_launch, setup_cpu_fallbacks
from .image_loading import one_line_image_errors
from .preflight import (DataError, PreflightError, PreflightRunner,
                        check_checkpoint_flags)


class FlagError(ValueError):
    """A command-line flag the config cannot serve."""


# Errors about the user's input that the tools report in one line.
ONE_LINE_ERRORS = (PreflightError, CheckpointError, DataError, FlagError)


def add_common_args(parser):
    """Flags shared by ``tools/train.py`` and ``tools/test.py``."""
    parser.add_argument(
        '--work-dir', help='the dir to save logs, checkpoints and metrics')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs, e.g. '
        'train_cfg.max_epochs=1 model.backbone.arch=small')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_args_with_common(parser):
    """Parse, exporting ``LOCAL_RANK`` for launchers that only pass a flag;
    from here on the errors of ``ONE_LINE_ERRORS`` end the tool with their
    one-line message (as argparse reports bad flags) instead of a
    traceback."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    sys.excepthook = _one_line_errors(sys.excepthook, parser.prog)
    return args


def _one_line_errors(excepthook, prog):

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, ONE_LINE_ERRORS):
            print(f'{prog}: error: {exc}', file=sys.stderr)
        else:
            excepthook(exc_type, exc, tb)

    return hook


def load_config(path,
                cfg_options=None,
                launcher='none',
                work_dir=None,
                amp=False):
    """Read a config and apply the flags common to training and testing."""
    if not osp.isfile(path):
        raise PreflightError(
            f'config file {path!r} does not exist: pass the path of an '
            'mmdet/mmseg config, e.g. configs/detection/...')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    if amp:
        enable_amp(cfg)
    setup_cpu_fallbacks(cfg)
    enable_exact_resume(cfg)
    add_custom_hook(cfg, dict(type=scoped('LoadReportHook')))
    return cfg


def add_custom_hook(cfg, hook):
    """Append ``hook`` (a config dict) to ``cfg.custom_hooks`` unless a hook
    of its type is there."""
    hooks = list(cfg.get('custom_hooks') or [])
    names = (hook['type'], hook['type'].split('.')[-1])
    if not any(isinstance(h, dict) and h.get('type') in names
               for h in hooks):
        cfg.custom_hooks = hooks + [hook]


_RESUMABLE_LOOPS = ('EpochBasedTrainLoop', 'IterBasedTrainLoop')


def enable_exact_resume(cfg):
    """Train with ``mmgcvit.Resumable*TrainLoop`` and ``RNGStateHook``
    (``mmgcvit.engine.resume``), in place; loops of other types are left
    alone."""
    train_cfg = cfg.get('train_cfg')
    if not train_cfg:
        return
    if 'type' not in train_cfg and 'by_epoch' in train_cfg:
        # mmengine's shorthand: dict(by_epoch=True, max_epochs=12).
        train_cfg['type'] = ('EpochBasedTrainLoop' if train_cfg.pop('by_epoch')
                             else 'IterBasedTrainLoop')
    if train_cfg.get('type') in _RESUMABLE_LOOPS:
        train_cfg['type'] = scoped(f'Resumable{train_cfg["type"]}')
    add_custom_hook(cfg, dict(type=scoped('RNGStateHook')))


@contextmanager
def run_context(cfg):
    """What our tools change in mmengine for one run, undone on leaving:
    atomic checkpoint writes, safe checkpoint loading, one-line errors for
    images that cannot be loaded and, on a machine without CUDA, the CPU
    (gloo) launch of distributed runs. On entry, the partial files of
    checkpoint writes that were killed are removed from the work dir."""
    for path in remove_stale_temporaries(cfg.work_dir):
        print_log(f'Removed {path}, left by a checkpoint write that was '
                  'killed.', logger='current', level=logging.WARNING)
    with ExitStack() as stack:
        stack.enter_context(atomic_checkpoint_writes())
        stack.enter_context(safe_checkpoint_loading())
        stack.enter_context(one_line_image_errors(cfg))
        if cfg.get('launcher', 'none') != 'none' and \
                not torch.cuda.is_available():
            stack.enter_context(cpu_gloo_launch())
        yield


def enable_amp(cfg):
    """``--amp``: train with mmengine's mixed-precision optimizer wrapper."""
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in the config.',
                  logger='current', level=logging.WARNING)
        return
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_auto_scale_lr(cfg):
    """``--auto-scale-lr``: scale the LR by total batch / base batch."""
    auto_scale_lr = cfg.get('auto_scale_lr')
    if not auto_scale_lr or 'base_batch_size' not in auto_scale_lr:
        raise FlagError(
            '--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
            'base_batch_size=N)` in the config (N: the total batch size the '
            'learning rate was tuned for)')
    cfg.auto_scale_lr.enable = True


def build_runner(cfg):
    """The config's runner (``runner_type``), else mmengine's ``Runner`` with
    pre-flight checks of the data and checkpoints (``PreflightRunner``)."""
    check_checkpoint_flags(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return PreflightRunner.from_cfg(cfg)


def write_json_atomic(obj, path):
    """Write ``obj`` as JSON so that readers never see a partial file."""
    with atomic_open(path, 'w') as f:
        json.dump(obj, f, indent=2, default=float)


def enable_tta(cfg):
    """``--tta``: wrap the model in the config's test-time augmentation."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise FlagError(
            '--tta needs `tta_model` and `tta_pipeline` in the config; use '
            'a config that defines them (e.g. one inheriting a dataset base '
            'with multi-scale + flip testing)')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def enable_visualization(cfg, show=False, show_dir=None, wait_time=2):
    """``--show`` / ``--show-dir``: draw predictions during testing.

    As mmdet's and mmseg's ``tools/test.py`` describe it, a relative
    ``show_dir`` is a folder of the run's log folder
    (``<work_dir>/<timestamp>/<show_dir>``), an absolute one is used as it
    is. mmdet's ``DetVisualizationHook`` joins its ``test_out_dir`` to the
    log folder itself. mmseg's ``SegVisualizationHook`` paints through the
    visualizer, whose ``LocalVisBackend`` saves images to its
    ``img_save_dir`` under ``<log folder>/vis_data``, hence the ``..``.
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise FlagError(
            '--show/--show-dir need a `visualization` entry in '
            '`default_hooks` (DetVisualizationHook or SegVisualizationHook)')
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        # Paint every test image (mmseg's hook defaults to every 50th).
        hook['interval'] = 1
        if 'Seg' not in hook['type']:
            hook['test_out_dir'] = show_dir
            return
        backends = cfg.visualizer.setdefault('vis_backends', [])
        local = [b for b in backends
                 if b.get('type', '').endswith('LocalVisBackend')]
        if not local:
            backends.append(dict(type='LocalVisBackend'))
            local = backends[-1:]
        for backend in local:
            backend['img_save_dir'] = osp.join('..', show_dir)


def enable_dump(cfg, out):
    """``--out``: also save the predictions.

    ``FILE.pkl``: the raw predictions in a pickle (mmdet's ``--out``). Any
    other ``out`` of a segmentation config is a folder that receives one
    label PNG per test image (mmseg's ``--out``: ``IoUMetric``'s
    ``output_dir``; values as in the dataset's label files, i.e. shifted
    back by one under ``reduce_zero_label``).
    """
    if not out.endswith(('.pkl', '.pickle')):
        if cfg.get('default_scope') != 'mmseg':
            raise FlagError(
                f'--out must name a .pkl file for a detection config, got '
                f'{out!r}')
        evaluators = cfg.test_evaluator
        ious = [e for e in (evaluators if isinstance(evaluators, (list, tuple))
                            else [evaluators])
                if e.get('type', '').endswith('IoUMetric')]
        if not ious:
            raise FlagError(
                f'--out {out}: a folder of prediction PNGs needs an IoUMetric '
                'in test_evaluator; name a .pkl file to pickle the '
                'predictions instead')
        for evaluator in ious:
            evaluator['output_dir'] = out
        return
    dump = dict(
        type='DumpDetResults' if cfg.get('default_scope') == 'mmdet' else
        'DumpResults',
        out_file_path=out)
    evaluator = cfg.test_evaluator
    if isinstance(evaluator, (list, tuple)):
        cfg.test_evaluator = [*evaluator, dump]
    elif 'metrics' in evaluator:
        evaluator.metrics = [*evaluator.metrics, dump]
    else:
        cfg.test_evaluator = [evaluator, dump]
