"""Speed and memory benchmarks of backbones and detectors, on CPU or GPU.

Timings are medians of ``repeats`` runs after ``warmup`` runs. On a GPU the
model runs under fp16 autocast and every timing is bracketed by
``torch.cuda.synchronize``; on the CPU it runs in fp32.

Peak training memory is the allocator's high-water mark during one
forward+backward, above what was allocated before it (parameters, input):
``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the running total
of the CPU allocator that ``torch.profiler`` records with
``profile_memory=True`` (RSS would also count glibc's cached free memory,
which depends on what ran earlier in the process).
"""
import argparse
import copy
import json
import logging
import os
import statistics
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

GCVIT_DET_CONFIG = 'configs/detection/mask-rcnn_gcvit-t_fpn_1x_coco.py'
SWIN_DET_CONFIG = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
DEFAULT_SHAPES = ((1, 3, 800, 1216), (2, 3, 512, 512))


def add_run_args(parser):
    """Flags shared by the benchmark tools: repeats, threads, device, the
    two configs compared and the JSON output."""
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed runs per measurement (median)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed runs before the timed ones')
    parser.add_argument('--threads', type=int,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--device', default=None,
                        help='cpu or cuda[:i] (default: cuda if available)')
    parser.add_argument('--gcvit-config', default=GCVIT_DET_CONFIG)
    parser.add_argument('--swin-config', default=SWIN_DET_CONFIG)
    parser.add_argument('--out', help='write the results as JSON here')


def run_device(args):
    """Apply ``--threads``; the device ``--device`` names, else CUDA when
    there is one."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return args.device or ('cuda' if torch.cuda.is_available() else 'cpu')


def load_config(path):
    """A config from a file or from a package (``mmdet::swin/...py``)."""
    if '::' in path:
        return get_config(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'config {path!r} not found: run from the repository root or '
            'pass the config path explicitly.')
    return Config.fromfile(path)


def config_name(path):
    """A config's file name without directory and extension."""
    return os.path.splitext(os.path.basename(path.split('::')[-1]))[0]


def _without_pretrained(model_cfg):
    """Drop every ``init_cfg`` so building never downloads weights."""
    model_cfg = copy.deepcopy(model_cfg)
    for part in model_cfg.values():
        if isinstance(part, dict):
            part.pop('init_cfg', None)
    model_cfg.pop('init_cfg', None)
    return model_cfg


@contextmanager
def quiet_logger(level):
    """Raise mmengine's current logger to ``level`` for a block, so that a
    report is not buried in per-parameter / per-op log lines."""
    logger = MMLogger.get_current_instance()
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _import_models():
    """Register mmdet's and mmgcvit's modules (``import mmgcvit`` is what
    configs rely on through ``custom_imports``)."""
    import mmdet.models  # noqa: F401

    import mmgcvit  # noqa: F401
    init_default_scope('mmdet')


@dataclass
class Variant:
    """A backbone to benchmark: a config's backbone plus overrides."""
    name: str
    config: str
    overrides: dict = field(default_factory=dict)
    role: str = ''  # 'fused', 'reference', 'cp' or '' (goal bookkeeping)

    def backbone_cfg(self):
        cfg = copy.deepcopy(load_config(self.config).model.backbone)
        cfg.pop('init_cfg', None)
        return dict(cfg, **self.overrides)


def default_variants(gcvit_config=GCVIT_DET_CONFIG,
                     swin_config=SWIN_DET_CONFIG,
                     gcvit_arch=None):
    """GC ViT fused / reference / fused with checkpointing, and Swin."""
    arch = dict(arch=gcvit_arch) if gcvit_arch else {}
    label = f'GC ViT-{gcvit_arch}' if gcvit_arch else 'GC ViT-T'
    return [
        Variant(f'{label} fused', gcvit_config,
                dict(fused_attn=True, with_cp=False, **arch), 'fused'),
        Variant(f'{label} reference', gcvit_config,
                dict(fused_attn=False, with_cp=False, **arch), 'reference'),
        Variant(f'{label} fused, with_cp', gcvit_config,
                dict(fused_attn=True, with_cp=True, **arch), 'cp'),
        Variant('Swin-T (mmdet)', swin_config),
    ]


def build_backbone(cfg, device='cpu', seed=0):
    """Build a backbone config dict with mmdet's registry."""
    _import_models()
    from mmdet.registry import MODELS
    torch.manual_seed(seed)
    return MODELS.build(copy.deepcopy(cfg)).to(device)


def build_detector(config, device='cpu', seed=0):
    """Build a detector from a config file without pretrained weights;
    returns the model and the config."""
    _import_models()
    from mmdet.registry import MODELS
    cfg = load_config(config)
    torch.manual_seed(seed)
    return MODELS.build(_without_pretrained(cfg.model)).to(device), cfg


def autocast(device):
    """fp16 autocast on a GPU; fp32 on the CPU (CPU fp16 is slow)."""
    if device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.float16)
    return nullcontext()


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_time(fn, device, repeats=3, warmup=1):
    """Median wall time of ``fn()`` in seconds, after ``warmup`` calls."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f'need repeats >= 1 and warmup >= 0, got '
                         f'repeats={repeats}, warmup={warmup}')
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(device, size=None, repeats=5):
    """Measured GFLOP/s of one large square matmul (the machine's ceiling),
    in the dtype the benchmark computes in."""
    size = size or (8192 if device.type == 'cuda' else 2048)
    dtype = torch.float16 if device.type == 'cuda' else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = median_time(lambda: torch.mm(a, b), device, repeats, warmup=2)
    return 2 * size**3 / seconds / 1e9


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
        loss = sum(out.float().mean() for out in outs)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def _profiler_peak_bytes(trace_path):
    """Peak of the CPU allocator's running total in a chrome trace, above
    its value when the profile started."""
    with open(trace_path) as f:
        events = json.load(f)['traceEvents']
    totals = []
    for event in events:
        args = event.get('args', {})
        if event.get('name') == '[memory]' and args.get('Device Type') == 0:
            totals.append((event['ts'], args['Total Allocated'],
                           args['Bytes']))
    if not totals:
        return 0
    totals.sort()
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
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, 'trace.json')
        prof.export_chrome_trace(trace)
        return _profiler_peak_bytes(trace) / 2**20


def model_gflops(model, shape, device):
    """Forward GFLOPs (2 x the multiply-adds mmengine's counter reports) on
    a batch of ``shape``."""
    from mmengine.analysis import get_model_complexity_info
    model.eval()
    # The counter warns about every op it does not count (norms, adds...).
    with torch.no_grad(), quiet_logger(logging.ERROR):
        info = get_model_complexity_info(
            model,
            inputs=(torch.zeros(shape, device=device), ),
            show_table=False,
            show_arch=False)
    return 2 * info['flops'] / 1e9


def _cached_gflops(cache, cfg, shape, device):
    """Forward GFLOPs of a backbone config, counted on the explicit
    attention path: the counter skips SDPA, and checkpointing does not
    change the math, so GC ViT variants share one count."""
    if 'fused_attn' in cfg:
        cfg = dict(cfg, fused_attn=False, with_cp=False)
    key = (json.dumps(cfg, sort_keys=True, default=str), tuple(shape))
    if key not in cache:
        cache[key] = model_gflops(build_backbone(cfg, device), shape, device)
    return cache[key]


def parse_shape(text):
    """``'1x3x800x1216'`` -> ``(1, 3, 800, 1216)`` (argparse type)."""
    try:
        shape = tuple(int(v) for v in text.lower().split('x'))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f'bad shape {text!r}: write NxCxHxW, e.g. 1x3x800x1216')
    return shape


def shape_str(shape):
    return '×'.join(str(s) for s in shape)


def benchmark_backbones(variants, shapes=DEFAULT_SHAPES, device='cpu',
                        repeats=3, warmup=1, with_flops=True, log=print):
    """Time forward and forward+backward, measure peak training memory and
    FLOPs of each variant at each input shape.

    Returns ``dict(device, threads, matmul_gflops, rows)`` with one row per
    (variant, shape).
    """
    device = torch.device(device)
    result = dict(device=str(device), threads=torch.get_num_threads(),
                  matmul_gflops=matmul_gflops(device), rows=[])
    flops_cache = {}
    for variant in variants:
        cfg = variant.backbone_cfg()
        model = build_backbone(cfg, device)
        for shape in shapes:
            x = torch.randn(shape, device=device)
            row = dict(name=variant.name, role=variant.role,
                       shape=list(shape))
            log(f'{variant.name} {shape_str(shape)}: forward')
            row['forward_s'] = median_time(
                forward_fn(model, x), device, repeats, warmup)
            log(f'{variant.name} {shape_str(shape)}: forward+backward')
            row['train_s'] = median_time(
                train_fn(model, x), device, repeats, warmup)
            row['train_peak_mib'] = peak_memory_mib(train_fn(model, x), device)
            if with_flops:
                row['gflops'] = _cached_gflops(flops_cache, cfg, shape, device)
                row['forward_gflops_per_s'] = row['gflops'] / row['forward_s']
            result['rows'].append(row)
    return result


def find_row(rows, role, shape):
    """The row of ``role`` at ``shape``, or None."""
    for row in rows:
        if row['role'] == role and row['shape'] == list(shape):
            return row
    return None


def goal_lines(goals):
    """``- PASS: ...`` / ``- FAIL: ...`` lines of ``(description, measured
    value, passed)`` goals (the tools define their goals)."""
    return '\n'.join(f'- {"PASS" if ok else "FAIL"}: {text} (measured '
                     f'{value})' for text, value, ok in goals)


def _fmt(value, spec):
    return '-' if value is None else format(value, spec)


def backbone_table(result):
    """The Markdown table of a :func:`benchmark_backbones` result."""
    peak = result['matmul_gflops']
    lines = [
        f'Device: {result["device"]}, {result["threads"]} threads; '
        f'measured matmul peak {peak:.0f} GFLOP/s.', '',
        '| Backbone | Input | GFLOPs | Forward (s) | Forward GFLOP/s '
        '(% of matmul) | Fwd+bwd (s) | Peak train memory (MiB) |',
        '|---|---|---:|---:|---:|---:|---:|'
    ]
    for row in result['rows']:
        rate = row.get('forward_gflops_per_s')
        rate_text = '-' if rate is None else f'{rate:.0f} ({rate / peak:.0%})'
        lines.append(
            f'| {row["name"]} | {shape_str(row["shape"])} | '
            f'{_fmt(row.get("gflops"), ".1f")} | {row["forward_s"]:.3f} | '
            f'{rate_text} | {row["train_s"]:.3f} | '
            f'{row["train_peak_mib"]:.0f} |')
    return '\n'.join(lines)


def profile_forward(model, x, row_limit=20):
    """Top ops by self CPU time of one forward (after a warm-up one)."""
    from torch.profiler import ProfilerActivity, profile
    run = forward_fn(model, x)
    run()
    activities = [ProfilerActivity.CPU]
    if x.device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        run()
    sort_by = ('self_device_time_total'
               if x.device.type == 'cuda' else 'self_cpu_time_total')
    return prof.key_averages().table(sort_by=sort_by, row_limit=row_limit)


def count_aten_ops(model, x):
    """ATen ops one eager forward dispatches, from ``torch.profiler``:
    ``(all, leaves)``. All counts nested calls too; leaves are the ops that
    call no other ATen op, i.e. the kernels (on a GPU one launch each,
    views excepted)."""
    from torch.profiler import ProfilerActivity, profile
    run = forward_fn(model, x)
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    ops = [e for e in prof.events() if e.name.startswith('aten::')]
    leaves = [
        e for e in ops
        if not any(c.name.startswith('aten::') for c in e.cpu_children)
    ]
    return len(ops), len(leaves)


def compile_variants(gcvit_config=GCVIT_DET_CONFIG,
                     swin_config=SWIN_DET_CONFIG,
                     gcvit_arch=None):
    """The backbones compared compiled: GC ViT's default (fused) and
    Swin."""
    return [
        v for v in default_variants(gcvit_config, swin_config, gcvit_arch)
        if v.role in ('fused', '')
    ]


def _first_call_s(fn, device):
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def benchmark_compiled(variants, shapes=DEFAULT_SHAPES, device='cpu',
                       repeats=3, warmup=1, compile_kwargs=None, log=print):
    """Eager vs ``torch.compile(model, **compile_kwargs)``, in one process
    on the same inputs: forward and forward+backward times, the first
    compiled call of each (compilation included), peak training memory,
    and the ATen ops of one eager forward, per variant and shape.

    Returns ``dict(device, threads, compile, rows)``.
    """
    device = torch.device(device)
    compile_kwargs = dict(compile_kwargs or {})
    result = dict(device=str(device), threads=torch.get_num_threads(),
                  compile=compile_kwargs, rows=[])
    for variant in variants:
        model = build_backbone(variant.backbone_cfg(), device)
        compiled = torch.compile(model, **compile_kwargs)
        for shape in shapes:
            x = torch.randn(shape, device=device)
            row = dict(name=variant.name, role=variant.role,
                       shape=list(shape))
            row['aten_ops'], row['leaf_aten_ops'] = count_aten_ops(model, x)
            for kind, make_fn in (('forward', forward_fn),
                                  ('train', train_fn)):
                log(f'{variant.name} {shape_str(shape)}: {kind}, eager')
                row[f'eager_{kind}_s'] = median_time(
                    make_fn(model, x), device, repeats, warmup)
                log(f'{variant.name} {shape_str(shape)}: {kind}, compiling')
                row[f'{kind}_first_call_s'] = _first_call_s(
                    make_fn(compiled, x), device)
                row[f'compiled_{kind}_s'] = median_time(
                    make_fn(compiled, x), device, repeats, warmup)
            row['eager_peak_mib'] = peak_memory_mib(train_fn(model, x), device)
            row['compiled_peak_mib'] = peak_memory_mib(
                train_fn(compiled, x), device)
            result['rows'].append(row)
    return result


def compile_table(result):
    """The Markdown table of a :func:`benchmark_compiled` result."""
    kwargs = ', '.join(f'{k}={v!r}' for k, v in result['compile'].items())
    lines = [
        f'Device: {result["device"]}, {result["threads"]} threads; '
        f'torch.compile({kwargs}).', '',
        '| Backbone | Input | ATen ops per forward (all / leaf) '
        '| Forward eager (s) | Forward compiled (s) | Forward speedup '
        '| Forward first compiled call (s) | Fwd+bwd eager (s) '
        '| Fwd+bwd compiled (s) | Fwd+bwd speedup '
        '| Fwd+bwd first compiled call (s) | Peak train memory eager (MiB) '
        '| Peak train memory compiled (MiB) |',
        '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
    ]
    for row in result['rows']:
        cells = [row['name'], shape_str(row['shape']),
                 f'{row["aten_ops"]} / {row["leaf_aten_ops"]}']
        for kind in ('forward', 'train'):
            eager, compiled = row[f'eager_{kind}_s'], row[f'compiled_{kind}_s']
            cells += [f'{eager:.3f}', f'{compiled:.3f}',
                      f'{eager / compiled:.2f}x',
                      f'{row[f"{kind}_first_call_s"]:.1f}']
        cells += [f'{row["eager_peak_mib"]:.0f}',
                  f'{row["compiled_peak_mib"]:.0f}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _optim_wrapper(model, cfg, device):
    """The config's optimizer, in one wrapper type for every detector so
    they compare fairly: fp16 AMP on a GPU, fp32 on the CPU."""
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg['type'] = ('AmpOptimWrapper'
                         if device.type == 'cuda' else 'OptimWrapper')
    optim_cfg.pop('loss_scale', None)
    if device.type == 'cuda':
        optim_cfg['loss_scale'] = 'dynamic'
    # paramwise_cfg logs one line per parameter option.
    with quiet_logger(logging.WARNING):
        return build_optim_wrapper(model, optim_cfg)


def demo_batch(shape, num_classes=80, boxes_per_image=5, seed=0):
    """A generated detection batch (images, boxes, labels, masks) of
    ``shape`` = (N, 3, H, W), in the data preprocessor's input format."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    n, c, h, w = shape
    return demo_mm_inputs(
        batch_size=n,
        image_shapes=[(c, h, w)] * n,
        num_items=[boxes_per_image] * n,
        num_classes=num_classes,
        with_mask=True)


def detector_train_step_fn(model, optim_wrapper, batch):
    """One training iteration: data preprocessor, forward, backward and
    optimizer step. The batch is copied because the preprocessor pads the
    samples' masks in place."""
    model.train()

    def run():
        model.train_step(copy.deepcopy(batch), optim_wrapper)

    return run


def benchmark_detectors(configs, shape=(2, 3, 800, 1216), device='cpu',
                        repeats=3, warmup=1, log=print):
    """Median training-iteration time of each detector config on one
    generated batch; returns ``dict(device, threads, shape, rows)``."""
    device = torch.device(device)
    batch = demo_batch(shape)
    result = dict(device=str(device), threads=torch.get_num_threads(),
                  shape=list(shape), rows=[])
    for name, config in configs:
        model, cfg = build_detector(config, device)
        optim_wrapper = _optim_wrapper(model, cfg, device)
        log(f'{name}: training iterations at {shape_str(shape)}')
        seconds = median_time(
            detector_train_step_fn(model, optim_wrapper, batch), device,
            repeats, warmup)
        result['rows'].append(dict(name=name, config=config, iter_s=seconds))
    return result


def detector_table(result):
    """Markdown table of :func:`benchmark_detectors`, relative to the last
    detector."""
    rows = result['rows']
    base = rows[-1]['iter_s']
    lines = [
        f'Device: {result["device"]}, {result["threads"]} threads; '
        f'batch {shape_str(result["shape"])}.', '',
        '| Detector | Train iteration (s) | Relative time |', '|---|---:|---:|'
    ]
    for row in rows:
        lines.append(f'| {row["name"]} | {row["iter_s"]:.2f} | '
                     f'{row["iter_s"] / base:.2f} |')
    return '\n'.join(lines)
