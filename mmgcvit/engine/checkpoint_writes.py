"""Atomic checkpoint and ``last_checkpoint`` writes, as components a config
selects: mmengine writes a checkpoint into its final path
(``LocalBackend.put``) and ``last_checkpoint`` with a plain ``open``, so a
job killed mid-write leaves a truncated ``.pth`` or ``last_checkpoint``
that ``--resume`` then loads. The file backend ``'mmgcvit_atomic'``
(``default_hooks.checkpoint.backend_args``) and ``AtomicCheckpointHook``
write through :func:`mmgcvit.utils.fileio.atomic_open`.
"""
import logging
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from mmgcvit.registry import HOOKS
from mmgcvit.utils.fileio import atomic_open, remove_stale_temporaries

BACKEND = 'mmgcvit_atomic'


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose writes publish whole files only."""

    def put(self, obj, filepath):
        with atomic_open(filepath, 'wb') as f:
            f.write(obj)

    def put_text(self, obj, filepath, encoding='utf-8'):
        with atomic_open(filepath, 'w', encoding=encoding) as f:
            f.write(obj)


# force: re-importing this module (importlib.reload) registers it again.
register_backend(BACKEND, AtomicLocalBackend, force=True)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with an atomic ``last_checkpoint`` and
    the work dir cleared of partial files that killed writes left."""

    def before_train(self, runner):
        super().before_train(runner)  # sets out_dir
        if not is_main_process():
            return
        for folder in sorted({runner.work_dir, self.out_dir}):
            for path in remove_stale_temporaries(folder):
                print_log(f'Removed {path}, left by a checkpoint write that '
                          'was killed.', logger='current',
                          level=logging.WARNING)

    def _save_checkpoint_with_step(self, runner, step, meta):
        super()._save_checkpoint_with_step(runner, step, meta)
        if is_main_process():
            with atomic_open(osp.join(runner.work_dir, 'last_checkpoint'),
                             'w') as f:
                f.write(self.last_ckpt)
