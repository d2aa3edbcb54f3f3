"""Resume interrupted training exactly, mid-epoch included.

mmengine's resume restores weights, optimizer, schedulers and the iteration
count, but ``EpochBasedTrainLoop`` restarts the interrupted epoch from its
first batch, the generators (augmentation, drop path, RPN / RoI sampling)
are re-seeded instead of continued, and validation draws from them too.
The loops below replay the interrupted epoch's data order (``DefaultSampler``
permutes with ``seed + epoch``) by loading its trained batches without
training on them, then restore the generator states ``RNGStateHook`` saved,
right before the next batch is loaded; the hook also runs validation on a
saved copy of the states. Exactness also needs a seed with
``deterministic=True``, one process, and workers that restart every epoch
(persistent workers carry generator states no checkpoint holds).
"""
import logging
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from mmgcvit.checkpoint import CheckpointError
from mmgcvit.registry import HOOKS, LOOPS
from .errors import DataError
from .preflight import check_training_files, unloadable_data

RNG_STATE_KEY = 'rng_state'


def get_rng_state():
    """The python, numpy, torch (and CUDA) generator states, as plain values
    (numpy's key as a list) that ``torch.load(weights_only=True)`` reads."""
    kind, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    return dict(
        python=random.getstate(),
        numpy=(kind, key.tolist(), pos, has_gauss, cached_gaussian),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all()
        if torch.cuda.is_available() else [])


def set_rng_state(state):
    random.setstate(state['python'])
    kind, key, pos, has_gauss, cached_gaussian = state['numpy']
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos,
                         has_gauss, cached_gaussian))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the generator states in checkpoints, keep the resumed ones for
    the resumable loops, and keep validation from consuming them."""

    def __init__(self):
        self.resumed_state = None
        self._train_state = None

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint[RNG_STATE_KEY] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint):
        self.resumed_state = checkpoint.get(RNG_STATE_KEY)

    def before_val(self, runner):
        self._train_state = get_rng_state()

    def after_val(self, runner):
        set_rng_state(self._train_state)


class _ResumeRNGMixin:
    """Checks the files training needs before the dataloader is built (and
    names data the dataset class cannot load in one line); restores the
    resumed generator states once, at the point the loop picks: right before
    the first batch trained after a resume is loaded."""

    _rng_pending = True

    def __init__(self, runner, dataloader, *args, **kwargs):
        check_training_files(runner)
        try:
            super().__init__(runner, dataloader, *args, **kwargs)
        except Exception as error:  # whatever the data makes the class raise
            raise DataError(unloadable_data(runner.cfg, 'train', error)) \
                from None

    def _restore_rng_once(self):
        if not self._rng_pending:
            return
        self._rng_pending = False
        if not self._iter:
            return  # a fresh run, not a resume
        states = [h.resumed_state for h in self.runner.hooks
                  if isinstance(h, RNGStateHook)]
        if states and states[0] is not None:
            set_rng_state(states[0])
            return
        print_log(
            'Resumed without generator states (no mmgcvit.RNGStateHook when '
            'the checkpoint was written or now): data order and weights are '
            'restored, but random augmentation / sampling from here on '
            'differs from an uninterrupted run; add '
            "custom_hooks=[dict(type='mmgcvit.RNGStateHook')].",
            logger='current', level=logging.WARNING)


def _restore_rng_before_fetch(iterator, loop):
    """The batches of ``ResumableIterBasedTrainLoop``: the loop replays
    ``loop.iter`` trained batches on resume; the generators are restored
    before the next one is loaded (mmengine's iterator never ends)."""
    fetched = 0
    while True:
        if fetched == loop.iter:
            loop._restore_rng_once()
        fetched += 1
        yield next(iterator)


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(_ResumeRNGMixin, IterBasedTrainLoop):
    """``IterBasedTrainLoop`` (which already replays the trained batches on
    resume) that continues the generators from the checkpoint."""

    def __init__(self, runner, dataloader, *args, **kwargs):
        super().__init__(runner, dataloader, *args, **kwargs)
        self.dataloader_iterator = _restore_rng_before_fetch(
            self.dataloader_iterator, self)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(_ResumeRNGMixin, EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes inside an epoch: it replays the
    batches of the interrupted epoch that were trained before the checkpoint
    and continues the generators from the checkpoint."""

    def run_epoch(self):
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        length = len(self.dataloader)
        trained = self._iter - self._epoch * length
        if not 0 <= trained <= length:
            raise CheckpointError(
                f'the resumed checkpoint is at iteration {self._iter} of '
                f'epoch {self._epoch}, which does not fit {length} batches '
                'per epoch: resume with the dataset and batch size it was '
                'trained with.')
        if trained == 0:
            # At an epoch boundary the uninterrupted run draws the
            # dataloader's seed from the generators after the checkpoint.
            self._restore_rng_once()
        batches = iter(self.dataloader)
        if trained:
            print_log(
                f'Resuming inside epoch {self._epoch + 1}: loading its '
                f'{trained} trained batches again (not training on them) to '
                'continue with the same data order.', logger='current')
            for _ in range(trained):
                next(batches)
            self._restore_rng_once()
        for idx, data_batch in enumerate(batches, start=trained):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
