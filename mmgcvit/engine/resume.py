"""Resume interrupted training exactly, mid-epoch included.

mmengine's resume restores weights, optimizer, schedulers and the iteration
count, but an interrupted and resumed run still trains differently from an
uninterrupted one with the same seed:

* ``EpochBasedTrainLoop`` restarts the interrupted epoch from its first
  batch (the checkpoint's ``iter`` is ignored within the epoch), so a run
  killed after an iteration-based checkpoint trains some batches twice;
* the random number generators (python, numpy, torch: data augmentation,
  dropout / drop path, RPN and RoI sampling) are re-seeded at start-up
  instead of continuing from where the checkpoint was written;
* validation draws from the same generators, so when it runs (before or
  after a checkpoint) shifts every later random number.

``ResumableEpochBasedTrainLoop`` / ``ResumableIterBasedTrainLoop`` replay the
interrupted epoch's data order (``DefaultSampler`` permutes with
``seed + epoch``) by loading the already trained batches of that epoch
without training on them, then restore the generator states that
``RNGStateHook`` saved in the checkpoint, right before the next batch is
loaded. ``RNGStateHook`` also runs validation on a saved copy of the
generator states, so validating does not change training.

Exact equality also needs ``randomness=dict(seed=..., deterministic=True)``,
a single process, and dataloader workers that start from their seed every
epoch (``num_workers=0`` or ``persistent_workers=False``): persistent
workers carry their own generator states across epochs, which no checkpoint
holds. Our configs select these loops (``train_cfg``) and the hook
(``custom_hooks``), so every tool that runs them resumes exactly. The loops
also run the pre-flight checks (:mod:`mmgcvit.engine.preflight`) before
they build the dataloader.

The generator states are saved as plain values (numpy's key as a list), so
that the checkpoints load with torch's ``weights_only=True``.
"""
import logging
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from mmgcvit.registry import HOOKS, LOOPS
from .errors import DataError
from .preflight import check_training_files, unloadable_data

RNG_STATE_KEY = 'rng_state'


def get_rng_state():
    """The python, numpy, torch (and CUDA) generator states, as values that
    ``torch.load(weights_only=True)`` reads (tuples, lists, numbers,
    strings, tensors)."""
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
    """Save the generator states in checkpoints, hand them to the resumable
    loops after a resume, and keep validation from consuming them."""

    def __init__(self):
        self.resumed_state = None
        self._train_state = None

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint[RNG_STATE_KEY] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint):
        self.resumed_state = checkpoint.get(RNG_STATE_KEY)

    def restore_resumed_state(self):
        """Continue the generators from the resumed checkpoint."""
        if self.resumed_state is None:
            print_log(
                f'The resumed checkpoint has no {RNG_STATE_KEY!r} (written '
                'without RNGStateHook): random augmentation / sampling from '
                'here on differs from an uninterrupted run.',
                logger='current', level=logging.WARNING)
            return
        set_rng_state(self.resumed_state)
        self.resumed_state = None

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
        hooks = [h for h in self.runner.hooks if isinstance(h, RNGStateHook)]
        if hooks:
            hooks[0].restore_resumed_state()
        else:
            print_log(
                'Resumed without RNGStateHook: data order and weights are '
                'restored, but random augmentation / sampling from here on '
                'differs from an uninterrupted run; add '
                "custom_hooks=[dict(type='mmgcvit.RNGStateHook')].",
                logger='current', level=logging.WARNING)


class _RestoreRNGBeforeFetch:
    """Dataloader iterator of ``ResumableIterBasedTrainLoop``: the loop
    replays ``loop.iter`` trained batches on resume; the generators are
    restored before the next one is loaded."""

    def __init__(self, iterator, loop):
        self._iterator = iterator
        self._loop = loop
        self._fetched = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self._fetched == self._loop.iter:
            self._loop._restore_rng_once()
        self._fetched += 1
        return next(self._iterator)


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(_ResumeRNGMixin, IterBasedTrainLoop):
    """``IterBasedTrainLoop`` (which already replays the trained batches on
    resume) that continues the generators from the checkpoint."""

    def __init__(self, runner, dataloader, *args, **kwargs):
        super().__init__(runner, dataloader, *args, **kwargs)
        self.dataloader_iterator = _RestoreRNGBeforeFetch(
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
            raise RuntimeError(
                f'the resumed checkpoint is at iteration {self._iter} of '
                f'epoch {self._epoch}, which does not fit {length} batches '
                'per epoch: resume with the dataset and batch size it was '
                'trained with')
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
