"""What differs between the torch releases mmgcvit supports (2.1 and newer).

OpenMMLab's prebuilt mmcv 2.1.0 wheels stop at torch 2.1, so many users run
that; the newer APIs used here are looked up, not assumed.
"""
import functools
import inspect

import torch
import torch.utils.checkpoint as cp


def aten_op(name):
    """``torch.ops.aten.<name>.default``, or None on a torch without it."""
    return getattr(torch.ops.aten, name).default if hasattr(
        torch.ops.aten, name) else None


def cpu_autocast_enabled():
    """Whether CPU autocast is on (``is_autocast_enabled`` takes a device
    type from torch 2.4 on)."""
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:
        return torch.is_autocast_cpu_enabled()


def selective_checkpoint_kwargs(kept_ops):
    """``checkpoint`` keyword arguments that keep the outputs of
    ``kept_ops`` instead of recomputing them: selective activation
    checkpointing where torch has it (2.4 on), with the kept tensors going
    through any saved-tensor hooks (e.g. ``save_on_cpu``) where torch lets
    them. Empty on older torch: everything is recomputed."""
    if not hasattr(cp, 'create_selective_checkpoint_contexts'):
        return {}
    kwargs = dict(context_fn=functools.partial(
        cp.create_selective_checkpoint_contexts, kept_ops))
    if 'respect_saved_tensors_hooks' in inspect.signature(
            cp.checkpoint).parameters:
        kwargs['respect_saved_tensors_hooks'] = True
    return kwargs

