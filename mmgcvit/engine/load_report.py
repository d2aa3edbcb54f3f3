"""Whether a checkpoint's weights fit a model, in one line.

mmengine loads ``load_from`` and the test checkpoint with ``strict=False``
and only prints torch's key lists, after copying what fits: GC ViT-T
weights in an XXT config, or a detector of other classes, then evaluate a
partly random model, and a list or integer tensor for a float weight fails
deep in torch or is cast silently. ``LoadReportHook`` checks before loading:
an error outside training (``allow_partial_checkpoint=True`` in the config,
or ``tools/test.py --allow-partial-checkpoint``, allows a partial fit), a
warning in training (fine-tuning on other classes skips the classifiers).
"""
import logging
import re

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.optim import BaseOptimWrapper

from mmgcvit.checkpoint import CheckpointError
from mmgcvit.checkpoint.loading import name_list
from mmgcvit.registry import HOOKS


def _names(items):
    return name_list(items, 10)


def check_weights_fit(state_dict, model, allow_partial=False,
                      source='the checkpoint'):
    """Raise ``CheckpointError`` when a value of ``state_dict`` is not a
    tensor or holds integers where ``model`` has floats (or the other way
    round), and, unless ``allow_partial``, when anything else does not fit;
    return the one-line description of a partial fit, else None."""
    # What mmengine's Runner.load_checkpoint strips; it also looks through
    # DDP and test-time-augmentation wrappers.
    state = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    own = model.state_dict()
    not_tensors = [f'{k} ({type(v).__name__})' for k, v in state.items()
                   if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f'{source} holds values that are not tensors: '
            f'{_names(not_tensors)}; pass a checkpoint of model weights '
            '(a .pth written by tools/train.py).')
    wrong_kind = [f'{k} ({v.dtype}, model {own[k].dtype})'
                  for k, v in state.items() if k in own and
                  v.is_floating_point() != own[k].is_floating_point()]
    if wrong_kind:
        raise CheckpointError(
            f'{source} holds weights of a kind the model cannot take: '
            f'{_names(wrong_kind)}; pass a checkpoint of this model.')
    skipped = [f'{k} {list(v.shape)} -> {list(own[k].shape)}'
               for k, v in state.items()
               if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state
               and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    parts = [text + _names(names) for text, names in (
        (f'{len(skipped)} weights NOT loaded because their shapes differ '
         "from the model's (checkpoint -> model): ", skipped),
        (f'{len(missing)} model weights absent from it keep their '
         'initialisation: ', missing),
        (f'{len(unexpected)} of its weights are unused by the model: ',
         unexpected)) if names]
    if not parts:
        return None
    message = f'{source} does not fit the model: ' + '; '.join(parts)
    if not allow_partial:
        raise CheckpointError(
            f'{message}. Pass a checkpoint of this model and variant (e.g. '
            'work_dirs/<config>/epoch_N.pth), or --allow-partial-checkpoint '
            'if a partial fit is intended.')
    return message


@HOOKS.register_module()
class LoadReportHook(Hook):
    """Check what the runner loads (``load_from``, ``resume``, the test
    checkpoint) against the model before it is loaded: a partial fit is
    an error outside training, a warning in training."""

    def after_load_checkpoint(self, runner, checkpoint):
        # runner.train() builds the optim wrapper before it loads;
        # test() and val() never do.
        training = isinstance(runner.optim_wrapper, BaseOptimWrapper)
        allow = training or runner.cfg.get('allow_partial_checkpoint', False)
        message = check_weights_fit(
            checkpoint.get('state_dict', checkpoint), runner.model, allow,
            f"checkpoint {runner.cfg.get('load_from') or ''}".rstrip())
        if message:
            print_log(message, logger='current', level=logging.WARNING)
