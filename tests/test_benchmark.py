"""tools/analysis_tools/benchmark.py and the FLOP counting it shares with
get_flops.py: FLOPs, ATen ops and memory measure what runs, ratios divide
two different rows, and the tool runs end to end on tiny shapes."""
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, run, run_tool

from mmgcvit.analysis import benchmark
from mmgcvit.analysis.complexity import build_model, count_flops, load_config

TOOL = REPO / 'tools' / 'analysis_tools' / 'benchmark.py'
GCVIT = 'configs/detection/mask-rcnn_gcvit-t_fpn_1x_coco.py'


class Attention(torch.nn.Module):
    """A fused/explicit attention pair, like GCViT's and timm's."""
    fused_attn = True

    def forward(self, x):
        if self.fused_attn:
            return F.scaled_dot_product_attention(x, x, x)
        return (x @ x.transpose(-2, -1)).softmax(-1) @ x


def block():
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU())


def test_flops_and_aten_ops_count_what_runs():
    x = torch.randn(2, 8)
    assert count_flops(block(), x) == (2 * 8 * 8, 8 * 8 + 8)
    module = block()
    once = benchmark.count_aten_ops(module, x)
    twice = torch.nn.Sequential(module, module)  # the same module run twice
    assert once > 2 and benchmark.count_aten_ops(twice, x) == 2 * once
    # Attention on its explicit path: q k^T and attn v, B N N D each.
    attention = Attention()
    assert count_flops(attention, torch.randn(2, 5, 4))[0] == 2 * 2 * 5 * 5 * 4
    assert attention.fused_attn is True


def test_peak_memory_counts_a_transient_allocation():
    def allocate():
        block = torch.ones(64 * 2**18)  # 64 MiB of float32
        del block
        torch.ones(2**18)

    peak = benchmark.peak_memory_mib(allocate, torch.device('cpu'))
    assert 64 <= peak < 68


def table_rows(text):
    """Cells of the Markdown rows after the header and rule lines."""
    lines = [line for line in text.splitlines() if line.startswith('|')]
    return [[c.strip() for c in line.strip('|').split('|')]
            for line in lines[2:]]


def test_ratios_divide_by_the_baseline_at_the_same_shape():
    rows = [dict(name='a', shape=[1], forward_s=3., train_s=8.),
            dict(name='a', shape=[2], forward_s=5., train_s=9.),
            dict(name='b', shape=[1], forward_s=2., train_s=4.),
            dict(name='b', shape=[2], forward_s=4., train_s=3.)]
    assert table_rows(benchmark.table(rows, 'b')) == [
        ['a', '1', '3', '8', '1.50', '2.00'],
        ['a', '2', '5', '9', '1.25', '3.00'],
        ['b', '1', '2', '4', '-', '-'], ['b', '2', '4', '3', '-', '-']]


def test_compiled_row():
    """torch.compile (dynamo's eager backend: the row, not inductor's
    speed) times the compiled model and counts nothing twice."""
    x = torch.randn(2, 3, 8, 8)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    eager = benchmark.benchmark_backbone(model, x, 0.01)
    compiled = benchmark.benchmark_backbone(model, x, 0.01,
                                            dict(backend='eager'))
    assert eager['gflops'] == 2 * 4 * 6 * 6 * 27 / 1e9
    assert set(compiled) == {'shape', 'first_call_s', 'forward_s', 'train_s',
                             'peak_mib'}


def test_backbones_end_to_end(tmp_path):
    out = tmp_path / 'bench.json'
    text = run([sys.executable, TOOL, '--shape', 64, 96, '--arch', 'xxtiny',
                '--device', 'cpu', '--min-run-time', 0.01, '--out', out],
               cwd=REPO)
    rows = table_rows(text)
    saved = json.loads(out.read_text())['rows']
    gcvit = 'mask-rcnn_gcvit-t_fpn_1x_coco'
    assert [r[0] for r in rows] == [r['name'] for r in saved] == [
        f'{gcvit} fused', f'{gcvit} reference', f'{gcvit} fused, with_cp',
        'mask-rcnn_swin-t-p4-w7_fpn_1x_coco']
    assert {r[1] for r in rows} == {'1x3x64x96'}
    # The backbone's FLOPs, recounted here; the reference path dispatches
    # other ops than the fused one.
    cfg = load_config(str(REPO / GCVIT))
    model = build_model(cfg, dict(cfg.model.backbone, arch='xxtiny'))
    flops = count_flops(model, torch.randn(1, 3, 64, 96))[0]
    assert [r['gflops'] for r in saved[:3]] == [flops / 1e9] * 3
    assert saved[0]['aten_ops'] != saved[1]['aten_ops']
    for cells, row in zip(rows[:3], saved):
        assert cells[-2:] == [
            f'{row[k] / saved[3][k]:.2f}' for k in ('forward_s', 'train_s')]
    assert rows[3][-2:] == ['-', '-']


@pytest.mark.parametrize('args, message', [
    (['--shape', '1', '2', '3'], '--shape 1 2 3: give the input size as H W'),
    (['missing.py'], "config 'missing.py' not found"),
])
def test_bad_arguments_get_one_line(args, message):
    rc, output = run_tool([TOOL, *args], cwd=REPO)
    assert rc == 2 and 'Traceback' not in output
    assert message in output.strip().splitlines()[-1]
