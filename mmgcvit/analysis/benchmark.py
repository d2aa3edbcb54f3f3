"""Speed, memory and FLOPs of backbones: times are medians of
``torch.utils.benchmark.Timer``; fp16 autocast on a GPU (the paper's
recipe), fp32 on the CPU."""
import json
import os.path as osp
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.benchmark import Timer

from .complexity import count_flops


def median_s(fn, min_run_time):
    """Median seconds of ``fn()`` over ``min_run_time`` seconds of runs,
    after a warm-up (CUDA synchronised)."""
    timer = Timer('fn()', globals=dict(fn=fn),
                  num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def step_fn(model, x, train):
    """One inference forward (no autograd), or one training forward and
    backward of the sum of the outputs' means."""
    model.train(train)

    def run():
        with torch.set_grad_enabled(train), torch.autocast(
                x.device.type, torch.float16, enabled=x.is_cuda):
            outs = model(x)
        if train:
            sum(out.float().mean() for out in outs).backward()
            model.zero_grad(set_to_none=True)

    return run


def peak_memory_mib(fn, device):
    """Peak allocator memory of one ``fn()`` above what was held before, in
    MiB: ``torch.cuda``'s, or on the CPU the running total ``torch.profiler``
    records (RSS would also count glibc's cached free memory)."""
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
        prof.export_chrome_trace(osp.join(tmp, 'trace.json'))
        with open(osp.join(tmp, 'trace.json')) as f:
            events = json.load(f)['traceEvents']
    totals = sorted((e['ts'], e['args']['Total Allocated'], e['args']['Bytes'])
                    for e in events if e.get('name') == '[memory]'
                    and e['args'].get('Device Type') == 0)
    if not totals:
        return 0.
    # What was held before the first event: its total less its own bytes.
    held = totals[0][1] - totals[0][2]
    return (max(total for _, total, _ in totals) - held) / 2**20


def count_aten_ops(model, x):
    """ATen ops one eager forward dispatches after a warm-up one, nested
    calls included (on a GPU, kernel launches follow the leaf ops)."""
    run = step_fn(model, x, train=False)
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return sum(e.name.startswith('aten::') for e in prof.events())


def benchmark_backbone(model, x, min_run_time, compile=None):
    """The figures of ``model`` on the batch ``x``: ``gflops`` (forward
    multiply-adds), ``aten_ops``, ``forward_s``, ``train_s`` and
    ``peak_mib`` (training); under ``torch.compile(**compile)``, the
    compiled model's times and memory and ``first_call_s`` (compiling)."""
    row = dict(shape=list(x.shape))
    if compile is None:
        row['gflops'] = count_flops(model, x)[0] / 1e9
        row['aten_ops'] = count_aten_ops(model, x)
    else:
        model = torch.compile(model, **compile)
        start = time.perf_counter()
        step_fn(model, x, train=False)()
        step_fn(model, x, train=True)()
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        row['first_call_s'] = time.perf_counter() - start
    row['forward_s'] = median_s(step_fn(model, x, False), min_run_time)
    row['train_s'] = median_s(step_fn(model, x, True), min_run_time)
    row['peak_mib'] = peak_memory_mib(step_fn(model, x, True), x.device)
    return row


def table(rows, baseline):
    """A Markdown table of the rows, with their times over those of the
    row named ``baseline`` at the same shape ('-' in its own)."""
    keys = [k for k in ('gflops', 'aten_ops', 'first_call_s', 'forward_s',
                        'train_s', 'peak_mib') if any(k in r for r in rows)]
    lines = ['| name | shape | ' + ' | '.join(keys)
             + ' | forward / base | train / base |',
             '|---' * (len(keys) + 4) + '|']
    for row in rows:
        base = next(b for b in rows
                    if b['name'] == baseline and b['shape'] == row['shape'])
        ratios = ['-', '-'] if row is base else [
            f'{row[k] / base[k]:.2f}' for k in ('forward_s', 'train_s')]
        cells = [row['name'], 'x'.join(map(str, row['shape']))] + [
            f'{row[k]:.4g}' if k in row else '-' for k in keys] + ratios
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
