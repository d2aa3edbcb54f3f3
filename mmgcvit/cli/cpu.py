"""Running GPU configs on machines without a GPU (CI, laptops, demos).

The configs target 8-GPU jobs with mixed precision and SyncBN. On a CPU-only
machine three things break in the stock stack: mmengine's ``pytorch``
launcher calls ``torch.cuda.set_device`` in every process, the ``Runner``
wraps the model in DDP with ``device_ids`` set (torch wants ``None`` for CPU
modules), torch's SyncBatchNorm refuses CPU tensors in a process group, and
mmengine's ``AmpOptimWrapper`` asserts a GPU (``CPUAmpOptimWrapper`` from
``mmgcvit.engine.amp`` autocasts on the CPU instead). ``setup_cpu_fallbacks``
adapts a config so the same commands run there; with a GPU it changes
nothing.
"""
import copy
import logging
from contextlib import contextmanager

import mmengine.dist.utils as mm_dist_utils
import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log

from mmgcvit.registry import scoped
from mmgcvit.utils.torch_compat import has_cpu_amp

# AmpOptimWrapper's own arguments, which OptimWrapper does not take.
_AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


@contextmanager
def cpu_gloo_launch():
    """Inside the ``with`` block, mmengine's ``pytorch`` launcher starts a
    CPU process group (gloo, no ``torch.cuda.set_device``) when there is no
    CUDA device; leaving it restores mmengine."""
    original = mm_dist_utils._init_dist_pytorch

    def init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if torch.cuda.is_available() or init_backend != 'torch':
            return original(backend, init_backend=init_backend, **kwargs)
        # No device to bind the process to; gloo is torch's CPU backend.
        torch_dist.init_process_group(backend='gloo', **kwargs)

    mm_dist_utils._init_dist_pytorch = init_dist_pytorch
    try:
        yield
    finally:
        mm_dist_utils._init_dist_pytorch = original


def _sync_bn_to_bn(node):
    """Replace SyncBN by BN in a config tree (SyncBN needs GPU tensors)."""
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN', 'nn.SyncBatchNorm'):
            node['type'] = 'BN'
        for value in node.values():
            _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _sync_bn_to_bn(value)


def _amp_on_cpu(optim_wrapper):
    """An ``AmpOptimWrapper`` config, made to run on the CPU (in place)."""
    if not has_cpu_amp():
        optim_wrapper['type'] = 'OptimWrapper'
        for key in _AMP_ONLY_KEYS:
            optim_wrapper.pop(key, None)
        print_log(
            f'No CUDA device, and torch {torch.__version__} has no mixed '
            'precision on the CPU (2.4+): training in fp32 with OptimWrapper '
            "instead of the config's AmpOptimWrapper.", logger='current',
            level=logging.WARNING)
        return
    optim_wrapper['type'] = scoped('CPUAmpOptimWrapper')
    dtype = optim_wrapper.get('dtype') or 'bfloat16 (CPU default)'
    print_log(
        'No CUDA device: mixed precision with CPUAmpOptimWrapper '
        f'(torch.autocast on CPU, dtype {dtype}, loss_scale '
        f"{optim_wrapper.get('loss_scale', 'dynamic')}) instead of "
        "mmengine's GPU-only AmpOptimWrapper.", logger='current',
        level=logging.WARNING)


def setup_cpu_fallbacks(cfg):
    """Adapt ``cfg`` in place for a run without CUDA; no-op with CUDA (a
    config edit only: distributed runs also need :func:`cpu_gloo_launch`).

    - ``AmpOptimWrapper`` becomes ``CPUAmpOptimWrapper`` (mmengine's AMP
      wrapper only runs on accelerators; see ``mmgcvit.engine.amp``), or
      fp32 ``OptimWrapper`` on a torch without CPU mixed precision (< 2.4).
    - Distributed runs: gloo, DDP with ``device_ids=None``, and SyncBN
      layers become BN. Each process keeps its per-process batch, so the
      effective batch is ``world_size x batch_size`` as on GPUs.
    """
    if torch.cuda.is_available():
        return
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is not None and \
            optim_wrapper.get('type') == 'AmpOptimWrapper':
        _amp_on_cpu(optim_wrapper)
    if cfg.get('launcher', 'none') == 'none':
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = copy.deepcopy(cfg.get('model_wrapper_cfg') or
                            dict(type='MMDistributedDataParallel'))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    _sync_bn_to_bn(cfg.model)
    print_log(
        'No CUDA device: distributed run on CPU with the gloo backend, DDP '
        'without device_ids, SyncBN replaced by BN.', logger='current',
        level=logging.WARNING)
