"""Reproducible training and exact resumption after SIGKILL, on CPU, with
the loops and hooks the configs select (``mmgcvit.Resumable*TrainLoop``,
``mmgcvit.RNGStateHook``): ``tools/train.py`` on the real Mask R-CNN GC ViT
config (GC ViT-XXT at 128 px, see ``small_detection_config``) with
``randomness=dict(seed=0, deterministic=True)``.
"""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import (TRAIN, last_checkpoint, run, small_detection_config,
                     train)

from mmgcvit.checkpoint import load_checkpoint

# Every iteration's own loss in the logs (mmengine averages over 50).
PER_ITER_LOG = ['--cfg-options', 'log_processor.window_size=1']


def logged_losses(work_dir):
    """``{iteration: loss}`` from every run's scalars.json in ``work_dir``."""
    losses = {}
    for log in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if 'loss' in row:
                losses[row['step']] = row['loss']
    return losses


def kill_after_first_checkpoint(config, work_dir):
    """Start training; SIGKILL it as soon as ``last_checkpoint`` appears."""
    work_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), str(config), '--work-dir',
         str(work_dir), *PER_ITER_LOG],
        cwd=work_dir.parent, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not (work_dir / 'last_checkpoint').exists():
            assert proc.poll() is None, 'training ended before a checkpoint'
            assert time.time() < deadline, 'no checkpoint within 10 minutes'
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path,
                                                             coco_root):
    """6 iterations per epoch, 2 epochs, validation after epoch 1 and a
    checkpoint every 4 iterations: killed after iter_4 (inside epoch 1),
    resumed with ``--resume``, the run crosses the epoch boundary and its
    validation and must end with the uninterrupted run's weights."""
    config = small_detection_config(tmp_path / 'det.py', coco_root,
                                    arch='xxtiny', batch=2, images=12,
                                    epochs=2, ckpt_every=4)
    reference_dir = tmp_path / 'reference'
    train(config, reference_dir, *PER_ITER_LOG)

    work_dir = tmp_path / 'interrupted'
    kill_after_first_checkpoint(config, work_dir)
    resumed_from = load_checkpoint(last_checkpoint(work_dir))
    assert resumed_from['meta']['iter'] % 6 != 0, 'not killed mid-epoch'
    output = train(config, work_dir, '--resume', *PER_ITER_LOG)
    assert 'Resuming inside epoch 1' in output, output[-3000:]

    reference = load_checkpoint(reference_dir / 'iter_12.pth')
    resumed = load_checkpoint(work_dir / 'iter_12.pth')
    assert resumed['meta']['iter'] == reference['meta']['iter'] == 12
    for name, value in reference['state_dict'].items():
        torch.testing.assert_close(resumed['state_dict'][name], value,
                                   rtol=1e-5, atol=1e-6, msg=name)
    # Every iteration, before the kill (same seed, same losses) and after
    # the resume, had the uninterrupted run's loss.
    expected, got = logged_losses(reference_dir), logged_losses(work_dir)
    assert sorted(expected) == list(range(1, 13))
    assert got == expected
    # The generator states are plain values: torch's stock loader, without
    # mmgcvit, reads the checkpoint.
    run([sys.executable, '-c', 'import sys, torch; torch.load(sys.argv[1], '
         'weights_only=True)', work_dir / 'iter_12.pth'], cwd=tmp_path)
