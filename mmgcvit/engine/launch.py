"""Config handling shared by ``tools/train.py`` and ``tools/test.py``.

Both tools serve mmdet and mmseg configs alike: the config's
``default_scope`` picks the registries, these helpers only apply the
command-line flags researchers know from the upstream tools.
"""
import json
import logging
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS

from .atomic_checkpoint import atomic_open, install_atomic_checkpoints
from .cpu import setup_cpu_fallbacks
from .load_report import enable_load_report
from .preflight import PreflightError, PreflightRunner, check_checkpoint_flags
from .resume import enable_exact_resume


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
    from here on a ``PreflightError`` ends the tool with its one-line
    message (as argparse reports bad flags) instead of a traceback."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    sys.excepthook = _one_line_preflight_errors(sys.excepthook, parser.prog)
    return args


def _one_line_preflight_errors(excepthook, prog):

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, PreflightError):
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
    enable_load_report(cfg)
    install_atomic_checkpoints()
    return cfg


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
        raise ValueError(
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
        raise ValueError(
            '--tta needs `tta_model` and `tta_pipeline` in the config; use '
            'a config that defines them (e.g. one inheriting a dataset base '
            'with multi-scale + flip testing)')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def enable_visualization(cfg, show=False, show_dir=None, wait_time=2):
    """``--show`` / ``--show-dir``: draw predictions during testing.

    mmdet's ``DetVisualizationHook`` writes into its ``test_out_dir``;
    mmseg's ``SegVisualizationHook`` writes through the visualizer's
    ``save_dir``.
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ValueError(
            '--show/--show-dir need a `visualization` entry in '
            '`default_hooks` (DetVisualizationHook or SegVisualizationHook)')
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        # Paint every test image (mmseg's hook defaults to every 50th).
        hook['interval'] = 1
        show_dir = osp.abspath(show_dir)
        if 'Seg' in hook['type']:
            cfg.visualizer['save_dir'] = show_dir
        else:
            hook['test_out_dir'] = show_dir


def enable_dump(cfg, out):
    """``--out FILE.pkl``: also dump the raw predictions to a pickle."""
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must name a .pkl file, got {out!r}')
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
