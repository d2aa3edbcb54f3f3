"""One log line naming the checkpoint weights a run could not load.

Fine-tuning on other classes loads a COCO / ADE20K-trained model with
``load_from``: mmengine's ``Runner`` loads it with ``strict=False``, so the
classifiers, whose shapes follow the class count, are skipped and keep
their fresh initialisation. mmengine says so only with ``print`` (nothing
reaches the run's log file), in a block of torch's "size mismatch for ...:
copying a param with shape ..." sentences that never says the weights were
skipped. ``LoadReportHook`` logs one warning through the run's logger
instead: the skipped parameters with both shapes, and the model weights the
checkpoint lacks or the checkpoint weights the model has no place for.
"""
import logging
import re

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmgcvit.checkpoint import CheckpointError
from mmgcvit.registry import HOOKS

# What mmengine's ``Runner.load_checkpoint`` strips before loading.
_REVISE_KEYS = [(r'^module\.', '')]
# Names listed per kind of problem; more are counted.
MAX_NAMES = 10


def _unwrap(model):
    """The module whose ``state_dict`` keys a checkpoint holds (mmengine's
    loader looks through DDP and test-time-augmentation wrappers too)."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def _names(items):
    shown = ', '.join(items[:MAX_NAMES])
    more = len(items) - MAX_NAMES
    return shown + (f' and {more} more' if more > 0 else '')


def _shape(tensor):
    return list(tensor.shape)


def compare_state_dicts(checkpoint_state, model_state):
    """``(skipped, missing, unexpected)``: keys in both with different
    shapes as ``(key, checkpoint shape, model shape)``, model keys absent
    from the checkpoint (BN ``num_batches_tracked`` excepted, as mmengine
    does), checkpoint keys the model lacks."""
    skipped = [(key, _shape(value), _shape(model_state[key]))
               for key, value in checkpoint_state.items()
               if key in model_state and hasattr(value, 'shape')
               and value.shape != model_state[key].shape]
    missing = [key for key in model_state
               if key not in checkpoint_state
               and not key.endswith('num_batches_tracked')]
    unexpected = [key for key in checkpoint_state if key not in model_state]
    return skipped, missing, unexpected


def format_report(skipped, missing, unexpected):
    """The one-line message; None when the checkpoint fits exactly."""
    parts = []
    if skipped:
        parts.append(
            f'{len(skipped)} weights NOT loaded because their shapes differ '
            "from the model's (e.g. classifiers of a model trained on other "
            'classes); they keep their initialisation (checkpoint shape -> '
            'model shape): ' + _names(
                [f'{key} {ckpt} -> {own}' for key, ckpt, own in skipped]))
    if missing:
        parts.append(f'{len(missing)} model weights absent from the '
                     f'checkpoint keep their initialisation: '
                     f'{_names(missing)}')
    if unexpected:
        parts.append(f'{len(unexpected)} checkpoint weights unused by the '
                     f'model: {_names(unexpected)}')
    if not parts:
        return None
    return 'Checkpoint and model differ: ' + '; '.join(parts)


@HOOKS.register_module()
class LoadReportHook(Hook):
    """Log what ``load_from`` / ``--resume`` / ``tools/test.py`` could not
    load into the model, in one warning line (nothing when all fits).

    Args:
        missing_is_error (bool): raise instead when the checkpoint leaves
            model weights at their initialisation (``tools/test.py``: an
            evaluation of a partly random model is meaningless).
    """

    def __init__(self, missing_is_error=False):
        self.missing_is_error = missing_is_error

    def after_load_checkpoint(self, runner, checkpoint):
        state = checkpoint.get('state_dict', checkpoint)
        for pattern, replacement in _REVISE_KEYS:
            state = {re.sub(pattern, replacement, k): v
                     for k, v in state.items()}
        skipped, missing, unexpected = compare_state_dicts(
            state, _unwrap(runner.model).state_dict())
        message = format_report(skipped, missing, unexpected)
        if self.missing_is_error and (skipped or missing):
            raise CheckpointError(
                f'{message}. The checkpoint leaves these model weights '
                'uninitialised, so the evaluation would measure a partly '
                'random model: test a checkpoint of this whole model (e.g. '
                'work_dirs/<config>/epoch_N.pth), or pass '
                '--allow-partial-checkpoint if that is intended.')
        if message:
            print_log(message, logger='current', level=logging.WARNING)
