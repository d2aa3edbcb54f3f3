"""Speed, memory and FLOPs of backbones and detectors built from configs.

Times are medians from ``torch.utils.benchmark.Timer.blocked_autorange``
(which warms up first, and synchronises CUDA). On a GPU the models run under
fp16 autocast, the paper's recipe; on the CPU in fp32.

Peak training memory is the allocator's high-water mark during one
forward+backward, above what was allocated before it:
``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the running total
of the CPU allocator that ``torch.profiler`` records with
``profile_memory=True`` (RSS would also count glibc's cached free memory,
which depends on what ran earlier in the process).
"""
import copy
import json
import os
import tempfile
import time

import torch
from mmengine.optim import build_optim_wrapper
from torch.profiler import ProfilerActivity, profile
from torch.utils.benchmark import Timer

from .complexity import build_model, count_flops, quiet_logger


def autocast(device):
    return torch.autocast(device.type, torch.float16,
                          enabled=device.type == 'cuda')


def median_s(fn, min_run_time):
    """Median seconds of one ``fn()``, over at least ``min_run_time``
    seconds of runs after a warm-up (at least one run)."""
    timer = Timer('fn()', globals=dict(fn=fn),
                  num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def forward_fn(model, x):
    """One inference forward (eval mode, no autograd)."""
    model.eval()

    def run():
        with torch.no_grad(), autocast(x.device):
            model(x)

    return run


def train_fn(model, x):
    """One training forward+backward of a backbone (sum of output means)."""
    model.train()

    def run():
        with autocast(x.device):
            outs = model(x)
        sum(out.float().mean() for out in outs).backward()
        model.zero_grad(set_to_none=True)

    return run


def _profiler_peak_bytes(trace_path):
    """Peak of the CPU allocator's running total in a chrome trace, above
    its value when the profile started."""
    with open(trace_path) as f:
        events = json.load(f)['traceEvents']
    totals = sorted(
        (e['ts'], e['args']['Total Allocated'], e['args']['Bytes'])
        for e in events if e.get('name') == '[memory]'
        and e.get('args', {}).get('Device Type') == 0)
    if not totals:
        return 0
    _, first_total, first_bytes = totals[0]
    return max(total for _, total, _ in totals) - (first_total - first_bytes)


def peak_memory_mib(fn, device):
    """Peak allocator memory of one ``fn()`` call above the memory held
    before it, in MiB."""
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, 'trace.json')
        prof.export_chrome_trace(trace)
        return _profiler_peak_bytes(trace) / 2**20


def count_aten_ops(model, x):
    """ATen ops one eager forward dispatches (after a warm-up one):
    ``(all, leaves)``. All counts nested calls too; leaves are the ops that
    call no other ATen op, i.e. the kernels (on a GPU one launch each,
    views excepted)."""
    run = forward_fn(model, x)
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    ops = [e for e in prof.events() if e.name.startswith('aten::')]
    leaves = [e for e in ops
              if not any(c.name.startswith('aten::') for c in e.cpu_children)]
    return len(ops), len(leaves)


def backbone_variants(name, cfg, arch=None):
    """``(name, backbone config)`` pairs of a config's backbone: for GCViT
    the fused attention, the reference one and the fused one with
    activation checkpointing; others as configured."""
    backbone = copy.deepcopy(cfg.model.backbone)
    if backbone.get('type', '').split('.')[-1] != 'GCViT':
        return [(name, backbone)]
    if arch:
        backbone.update(arch=arch)
    return [(f'{name} {label}', dict(backbone, fused_attn=fused, with_cp=cp))
            for label, fused, cp in (('fused', True, False),
                                     ('reference', False, False),
                                     ('fused, with_cp', True, True))]


def benchmark_backbone(model, x, min_run_time, compile=None):
    """A row of figures for ``model`` on the batch ``x``: ``gflops`` (the
    forward's multiply-adds), ATen ops per forward, ``forward_s``,
    ``train_s`` (forward+backward) and ``peak_mib`` (training). With
    ``compile`` (``torch.compile`` keyword arguments): the compiled model's
    times and memory, and ``first_call_s`` (compilation included)."""
    row = dict(shape=list(x.shape))
    if compile is None:
        row['gflops'] = count_flops(model, x)['flops'] / 1e9
        row['aten_ops'], row['leaf_aten_ops'] = count_aten_ops(model, x)
    else:
        model = torch.compile(model, **compile)
        start = time.perf_counter()  # one call: compilation, no loop
        forward_fn(model, x)()
        train_fn(model, x)()
        if x.device.type == 'cuda':
            torch.cuda.synchronize(x.device)
        row['first_call_s'] = time.perf_counter() - start
    row['forward_s'] = median_s(forward_fn(model, x), min_run_time)
    row['train_s'] = median_s(train_fn(model, x), min_run_time)
    row['peak_mib'] = peak_memory_mib(train_fn(model, x), x.device)
    return row


def benchmark_detector(cfg, shape, device, min_run_time):
    """``dict(iter_s=...)``: median time of one training iteration (data
    preprocessor, forward, backward, optimizer step) of the config's
    detector on a generated batch (images, boxes, masks), with the
    config's optimizer in an fp32 ``OptimWrapper`` on the CPU, an fp16
    ``AmpOptimWrapper`` on a GPU, so that every detector compares alike."""
    from mmdet.testing import demo_mm_inputs
    model = build_model(cfg).to(device).train()
    optim_cfg = dict(copy.deepcopy(cfg.optim_wrapper), type='OptimWrapper')
    optim_cfg.pop('loss_scale', None)
    if device.type == 'cuda':
        optim_cfg.update(type='AmpOptimWrapper', loss_scale='dynamic')
    with quiet_logger():
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
    torch.manual_seed(0)
    n, c, h, w = shape
    batch = demo_mm_inputs(n, [(c, h, w)] * n, num_items=[5] * n,
                           num_classes=80, with_mask=True)

    def step():
        # The preprocessor pads the samples' masks in place.
        model.train_step(copy.deepcopy(batch), optim_wrapper)

    return dict(shape=list(shape), iter_s=median_s(step, min_run_time))


# (row key, column title, format); the times get a ratio column too.
COLUMNS = (('gflops', 'GFLOPs (multiply-adds)', '.2f'),
           ('aten_ops', 'ATen ops per forward', 'd'),
           ('leaf_aten_ops', 'leaf ATen ops', 'd'),
           ('first_call_s', 'First compiled call (s)', '.1f'),
           ('forward_s', 'Forward (s)', '.4f'),
           ('train_s', 'Fwd+bwd (s)', '.4f'),
           ('iter_s', 'Train iteration (s)', '.4f'),
           ('peak_mib', 'Peak train memory (MiB)', '.0f'))
TIMES = ('forward_s', 'train_s', 'iter_s')


def table(rows, baseline):
    """A Markdown table of the rows' figures, and of their times over those
    of the row named ``baseline`` at the same shape ('-' in its own)."""
    columns = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    times = [(key, title.split(' (')[0]) for key, title, _ in columns
             if key in TIMES]

    def cells(row):
        base = next(b for b in rows
                    if b['name'] == baseline and b['shape'] == row['shape'])
        yield from (row['name'], 'x'.join(map(str, row['shape'])))
        yield from (format(row[key], spec) if key in row else '-'
                    for key, _, spec in columns)
        yield from ('-' if row is base else f'{row[key] / base[key]:.2f}'
                    for key, _ in times)

    head = (['Model', 'Input'] + [title for _, title, _ in columns]
            + [f'{title} / {baseline}' for _, title in times])
    return '\n'.join(['| ' + ' | '.join(head) + ' |',
                      '|---|---|' + '---:|' * (len(head) - 2)]
                     + ['| ' + ' | '.join(cells(row)) + ' |' for row in rows])
