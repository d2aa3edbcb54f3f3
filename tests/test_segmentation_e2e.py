"""A real GC ViT UPerNet config end to end on generated ADE20K data.

The shipped XXT config is shrunk by ``--cfg-options`` only (``scaled_down``):
64x64 crops, 4 iterations of 2 images in fp32, narrower heads, 4 test
images, no ImageNet checkpoint. Our
``tools/train.py`` / ``tools/test.py`` (single scale and ``--tta``),
``tools/dist_train.sh`` on two CPU processes, and mmseg's own upstream
``tools/train.py`` (loading GC ViT through the config's ``custom_imports``)
must all run it.
"""
import os
import subprocess
import sys
from pathlib import Path

import mmseg
import pytest
import torch
from test_tools import last_checkpoint, run, test_metrics, train

import mmgcvit  # noqa: F401  (weights_only allow-list for torch.load below)

REPO = Path(__file__).resolve().parents[1]
CONFIG = (REPO / 'configs' / 'segmentation' /
          'upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py')
UPSTREAM_TRAIN = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
ITERS = 4


def scaled_down(data_root):
    """``--cfg-options`` turning the 8-GPU 512x512 160k recipe into a few
    CPU iterations on ``data_root`` (128x128 generated images)."""
    loader = dict(num_workers=0, persistent_workers=False)
    options = {
        'model.backbone.init_cfg': None,
        # fp32: CPU autocast (bf16) makes an iteration ~13x slower here.
        'optim_wrapper.type': 'OptimWrapper',
        'model.data_preprocessor.size': (64, 64),
        # UPerNet's 512-channel fusion dominates CPU time; the backbone
        # stays as configured.
        'model.decode_head.channels': 64,
        'model.auxiliary_head.channels': 32,
        # ade20k.py's train pipeline: [2] RandomResize, [3] RandomCrop.
        'train_dataloader.dataset.pipeline.2.scale': (256, 64),
        'train_dataloader.dataset.pipeline.3.crop_size': (64, 64),
        'train_dataloader.batch_size': 2,
        'train_cfg.max_iters': ITERS,
        'train_cfg.val_interval': ITERS,
        # Warm-up then decay, in the recipe's order, over the short run.
        'param_scheduler.0.end': ITERS // 2,
        'param_scheduler.1.begin': ITERS // 2,
        'param_scheduler.1.end': ITERS,
        'default_hooks.checkpoint.interval': ITERS,
        'default_hooks.logger.interval': 1,
    }
    for split in ('train', 'val', 'test'):
        options[f'{split}_dataloader.dataset.data_root'] = data_root
        options.update(
            {f'{split}_dataloader.{k}': v
             for k, v in loader.items()})
    for split in ('val', 'test'):
        # The test pipeline's [1] Resize.
        options[f'{split}_dataloader.dataset.pipeline.1.scale'] = (256, 64)
        # 4 images: TTA runs 12 passes on each.
        options[f'{split}_dataloader.dataset.indices'] = 4
    return ['--cfg-options'] + [
        f'{key}={value}'.replace(' ', '') for key, value in options.items()
    ]


@pytest.fixture(scope='module')
def trained(ade20k_root, tmp_path_factory):
    """Work dir and checkpoint of one ``tools/train.py`` run."""
    work_dir = tmp_path_factory.mktemp('seg_e2e') / 'work'
    train(CONFIG, work_dir, *scaled_down(ade20k_root))
    return work_dir, last_checkpoint(work_dir)


@pytest.mark.slow
def test_train_checkpoints(trained):
    work_dir, ckpt = trained
    assert ckpt == work_dir / f'iter_{ITERS}.pth'
    state = torch.load(ckpt, map_location='cpu')
    assert state['meta']['iter'] == ITERS
    assert any(k.startswith('backbone.levels.') for k in state['state_dict'])


@pytest.mark.slow
@pytest.mark.parametrize('tta', [False, True], ids=['single-scale', 'tta'])
def test_test_reports_miou(trained, ade20k_root, tta, tmp_path):
    _, ckpt = trained
    args = scaled_down(ade20k_root) + (['--tta'] if tta else [])
    metrics, output = test_metrics(CONFIG, ckpt, tmp_path / 'work', *args)
    # The stock IoUMetric's summary keys.
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics), metrics
    assert 0.0 <= metrics['mIoU'] <= 100.0, metrics
    if tta:
        assert 'SegTTAModel' in output or 'TestTimeAug' in output, \
            output[-3000:]


@pytest.mark.slow
def test_dist_train_two_cpu_processes(ade20k_root, tmp_path):
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable,
               PORT=str(29600 + os.getpid() % 1000))
    result = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(CONFIG), '2',
         '--work-dir', str(work_dir), *scaled_down(ade20k_root)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert 'GPU number: 2' in output, output[-3000:]
    assert last_checkpoint(work_dir) == work_dir / f'iter_{ITERS}.pth'


@pytest.mark.slow
def test_upstream_mmseg_train(ade20k_root, tmp_path):
    """mmseg's own tools/train.py knows nothing of mmgcvit: the config's
    ``custom_imports`` must register GCViT."""
    assert UPSTREAM_TRAIN.is_file(), f'mmseg ships no {UPSTREAM_TRAIN}'
    work_dir = tmp_path / 'work'
    run([sys.executable, UPSTREAM_TRAIN, CONFIG, '--work-dir', work_dir,
         *scaled_down(ade20k_root)], cwd=tmp_path)
    assert last_checkpoint(work_dir) == work_dir / f'iter_{ITERS}.pth'
