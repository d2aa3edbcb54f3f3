"""Config handling shared by ``tools/train.py`` and ``tools/test.py``.

Both tools serve mmdet and mmseg configs alike: the config's
``default_scope`` picks the registries, these helpers only apply the
command-line flags researchers know from the upstream tools.
"""
import json
import logging
import os
import os.path as osp
import tempfile

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .cpu import setup_cpu_fallbacks


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
    """Parse, exporting ``LOCAL_RANK`` for launchers that only pass a flag."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(path,
                cfg_options=None,
                launcher='none',
                work_dir=None,
                amp=False):
    """Read a config and apply the flags common to training and testing."""
    if not osp.isfile(path):
        raise FileNotFoundError(
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
    """The config's runner (``runner_type``), mmengine's ``Runner`` else."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def write_json_atomic(obj, path):
    """Write ``obj`` as JSON so that readers never see a partial file."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.json', dir=directory)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f, indent=2, default=float)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
