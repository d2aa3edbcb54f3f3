"""Whether a checkpoint's weights fit a model, in one line.

mmengine loads ``load_from`` and the test checkpoint with ``strict=False``
and only prints torch's list of missing and unexpected keys: a checkpoint of
another variant (GC ViT-T weights into an XXT config) or of another model
then evaluates a partly random model and reports its numbers, and a value
that is no tensor, or integers where the model has floats, fails deep in
``load_state_dict`` or loads silently. :func:`check_weights_fit` names the
problem in one line; ``LoadReportHook`` applies it to what the runner loads:
an error when testing (``allow_partial_checkpoint=True`` in the config, or
``tools/test.py --allow-partial-checkpoint``, allows a partial fit), a
warning when training (``load_from`` fine-tuning on other classes skips the
classifiers).
"""
import logging
import re

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import BaseLoop

from mmgcvit.checkpoint import CheckpointError
from mmgcvit.checkpoint.loading import name_list
from mmgcvit.registry import HOOKS

# What mmengine's ``Runner.load_checkpoint`` strips before loading.
_REVISE_KEYS = [(r'^module\.', '')]
# Names listed per kind of problem; more are counted.
MAX_NAMES = 10


def _names(items):
    return name_list(items, MAX_NAMES)


def _unwrap(model):
    """The module whose ``state_dict`` keys a checkpoint holds (mmengine's
    loader looks through DDP and test-time-augmentation wrappers too)."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def check_weights_fit(state_dict, model, allow_partial=False,
                      source='the checkpoint'):
    """Check ``state_dict`` against ``model`` (an ``nn.Module``).

    Raises ``CheckpointError`` (one line) when a value is not a tensor, or
    holds integers where the model has floating-point numbers (or the other
    way round), and, unless ``allow_partial``, when weights differ in shape,
    model weights are absent (they would keep their initialisation) or
    checkpoint weights have no place in the model. Returns the one-line
    description of a partial fit (None when all fits), for a warning.
    """
    state = {}
    for key, value in state_dict.items():
        for pattern, replacement in _REVISE_KEYS:
            key = re.sub(pattern, replacement, key)
        state[key] = value
    own = _unwrap(model).state_dict()
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
    parts = []
    skipped = [f'{k} {list(v.shape)} -> {list(own[k].shape)}'
               for k, v in state.items()
               if k in own and v.shape != own[k].shape]
    if skipped:
        parts.append(f'{len(skipped)} weights NOT loaded because their '
                     "shapes differ from the model's (checkpoint -> model): "
                     + _names(skipped))
    missing = [k for k in own if k not in state
               and not k.endswith('num_batches_tracked')]
    if missing:
        parts.append(f'{len(missing)} model weights absent from it keep '
                     f'their initialisation: {_names(missing)}')
    unexpected = [k for k in state if k not in own]
    if unexpected:
        parts.append(f'{len(unexpected)} of its weights are unused by the '
                     f'model: {_names(unexpected)}')
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
    checkpoint) against the model, before it is loaded.

    A partial fit is an error outside training (an evaluation of a partly
    random model measures nothing) unless the config sets
    ``allow_partial_checkpoint=True``; in training it is a warning.
    """

    def after_load_checkpoint(self, runner, checkpoint):
        # runner.train() builds its train loop before loading; test() and
        # val() never do.
        training = isinstance(runner._train_loop, BaseLoop)
        allow = training or runner.cfg.get('allow_partial_checkpoint', False)
        message = check_weights_fit(
            checkpoint.get('state_dict', checkpoint), runner.model, allow,
            f"checkpoint {runner.cfg.get('load_from') or ''}".rstrip())
        if message:
            print_log(message, logger='current', level=logging.WARNING)
