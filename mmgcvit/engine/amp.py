"""Mixed-precision training on CPU with mmengine's ``AmpOptimWrapper`` API.

mmengine's ``AmpOptimWrapper`` asserts an accelerator, builds a CUDA
``GradScaler`` and its ``autocast`` only allows bf16 on CPU. The configs ask
for ``AmpOptimWrapper``; on a machine without CUDA ``setup_cpu_fallbacks``
swaps in ``CPUAmpOptimWrapper``, which keeps the same config keys and
checkpoint format (``loss_scaler`` state) but autocasts on the CPU and
scales losses with ``torch.amp.GradScaler('cpu')`` for fp16.

mmcv's CPU kernels of ``nms`` and ``roi_align`` (RPN proposals, RoI
features) only take fp32 (their CUDA kernels take fp16 too);
``mmcv_ops_in_fp32`` runs them in fp32 under CPU autocast and casts
their results back, as autocast itself treats precision-sensitive ops,
for the duration of each ``optim_context`` (the forward); mmcv is unchanged
outside it.
"""
import functools
import importlib
from contextlib import contextmanager

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmgcvit.registry import OPTIM_WRAPPERS
from mmgcvit.utils.torch_compat import cpu_autocast_enabled, has_cpu_amp


def _fp32_under_cpu_autocast(op):
    """``op`` on fp32 copies of its floating CPU tensors while CPU autocast
    is on, its floating result cast back to the first input's dtype (the
    casts are differentiable, so gradients flow in the autocast dtype)."""

    def is_half(value):
        return isinstance(value, torch.Tensor) and value.device.type == \
            'cpu' and value.dtype in (torch.float16, torch.bfloat16)

    @functools.wraps(op)
    def wrapped(*args):
        halves = [a for a in args if is_half(a)]
        if not halves or not cpu_autocast_enabled():
            return op(*args)
        with torch.autocast('cpu', enabled=False):
            out = op(*[a.float() if is_half(a) else a for a in args])
        return out.to(halves[0].dtype) if out.is_floating_point() else out

    return wrapped


@contextmanager
def mmcv_ops_in_fp32():
    """Run mmcv's fp32-only CPU ops in fp32 under CPU autocast, inside the
    ``with`` block (mmcv is restored on leaving it).

    ``NMSop.apply`` is what ``mmcv.ops.nms`` / ``batched_nms`` call;
    ``RoIAlign`` modules call the module-level ``roi_align``.
    """
    # Imported here, so that the backbone alone never loads mmcv's ops.
    from mmcv.ops.nms import NMSop

    # The module, not the function that ``mmcv.ops`` exports under its name.
    mmcv_roi_align = importlib.import_module('mmcv.ops.roi_align')
    saved_nms = NMSop.__dict__.get('apply')  # None: Function.apply
    saved_roi_align = mmcv_roi_align.roi_align
    NMSop.apply = _fp32_under_cpu_autocast(NMSop.apply)
    mmcv_roi_align.roi_align = _fp32_under_cpu_autocast(saved_roi_align)
    try:
        yield
    finally:
        if saved_nms is None:
            del NMSop.apply
        else:
            NMSop.apply = saved_nms
        mmcv_roi_align.roi_align = saved_roi_align


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` for CPU: ``torch.autocast('cpu', dtype)`` around
    the forward, dynamic (or static) loss scaling with a CPU ``GradScaler``.

    Args:
        loss_scale (str | float | dict): ``'dynamic'``, a static scale, or
            ``GradScaler`` keyword arguments, as for ``AmpOptimWrapper``.
        dtype (str | torch.dtype, optional): ``'float16'`` or ``'bfloat16'``;
            None takes torch's CPU autocast default (bf16).
        use_fsdp (bool): not supported on CPU; must be False.
        **kwargs: passed to ``OptimWrapper``.
    """

    def __init__(self, loss_scale='dynamic', dtype=None, use_fsdp=False,
                 **kwargs):
        if not has_cpu_amp():
            raise RuntimeError(
                'mixed precision on CPU needs torch >= 2.4 (CPU GradScaler '
                f'and fp16 autocast); this is torch {torch.__version__}: '
                'upgrade torch, or train in fp32 on CPU (use OptimWrapper '
                'instead of AmpOptimWrapper in optim_wrapper)')
        if use_fsdp:
            raise ValueError('CPUAmpOptimWrapper does not support use_fsdp: '
                             'FSDP needs GPUs; drop optim_wrapper.use_fsdp')
        # AmpOptimWrapper.__init__ asserts a GPU and builds a CUDA scaler.
        OptimWrapper.__init__(self, **kwargs)
        if isinstance(dtype, str):
            if dtype not in ('float16', 'bfloat16'):
                raise ValueError(
                    f'optim_wrapper.dtype={dtype!r}: CPU autocast supports '
                    "'float16' and 'bfloat16'")
            dtype = getattr(torch, dtype)
        self.cast_dtype = dtype or torch.get_autocast_dtype('cpu')
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            scaler_args = {}
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            scaler_args = dict(init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            scaler_args = loss_scale
        else:
            raise TypeError('optim_wrapper.loss_scale must be "dynamic", a '
                            f'float or a dict, got {loss_scale!r}')
        self.loss_scaler = torch.amp.GradScaler('cpu', **scaler_args)

    @contextmanager
    def optim_context(self, model):
        # Skip AmpOptimWrapper's context: mmengine's autocast rejects fp16
        # on CPU.
        with OptimWrapper.optim_context(self, model), \
                torch.autocast('cpu', dtype=self.cast_dtype), \
                mmcv_ops_in_fp32():
            yield
