"""tools/analysis_tools/benchmark.py and get_flops.py's shared counting:
FLOPs, ATen ops and memory measure what runs, ratios divide two different
rows, and the tool runs end to end on tiny shapes."""
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
SWIN = 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco'


class Twice(torch.nn.Module):
    """Runs its module twice: twice the work of one run."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(self.module(x))


class Attention(torch.nn.Module):
    """A fused/explicit attention pair, like GCViT's and timm's."""
    fused_attn = True

    def forward(self, x):
        if self.fused_attn:
            return F.scaled_dot_product_attention(x, x, x)
        return (x @ x.transpose(-2, -1)).softmax(-1) @ x


def block():
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(),
                               torch.nn.LayerNorm(8))


def table_rows(text):
    """Cells of the Markdown rows after the header and rule lines."""
    lines = [line for line in text.splitlines() if line.startswith('|')]
    return [[c.strip() for c in line.strip('|').split('|')]
            for line in lines[2:]]


def test_flops_count_twice_the_work_twice():
    x = torch.randn(2, 8)
    once = count_flops(block(), x)['flops']
    # The two linear layers: 2 x 8 x 8 multiply-adds each, plus the norm.
    assert once >= 2 * 8 * 8
    assert count_flops(Twice(block()), x)['flops'] == 2 * once


def test_flops_count_attention_on_its_explicit_path():
    """q k^T and attn v: B N N D multiply-adds each; the flag comes back."""
    attention = Attention()
    attention.fused_attn = True
    assert count_flops(attention, torch.randn(2, 5, 4))['flops'] == \
        2 * (2 * 5 * 5 * 4)
    assert attention.fused_attn is True


def test_aten_op_count_counts_every_call():
    """A module run twice dispatches twice the ops of one run, nested and
    leaf alike; leaves are fewer than all ops (linear calls addmm)."""
    x = torch.randn(2, 8)
    module = block()
    once = benchmark.count_aten_ops(module, x)
    assert 0 < once[1] < once[0]
    assert benchmark.count_aten_ops(Twice(module), x) == (2 * once[0],
                                                          2 * once[1])


def test_peak_memory_counts_a_transient_allocation():
    size_mib = 64

    def allocate():
        block = torch.ones(size_mib * 2**18)  # float32: 4 bytes each
        del block
        torch.ones(2**18)

    peak = benchmark.peak_memory_mib(allocate, torch.device('cpu'))
    assert size_mib <= peak < size_mib + 4


def test_ratios_divide_by_the_baseline_at_the_same_shape():
    rows = [dict(name='a', shape=[1], forward_s=3., train_s=8.),
            dict(name='a', shape=[2], forward_s=5., train_s=9.),
            dict(name='b', shape=[1], forward_s=2., train_s=4.),
            dict(name='b', shape=[2], forward_s=4., train_s=3.)]
    text = benchmark.table(rows, 'b')
    assert text.splitlines()[0] == (
        '| Model | Input | Forward (s) | Fwd+bwd (s) | Forward / b | '
        'Fwd+bwd / b |')
    assert table_rows(text) == [
        ['a', '1', '3.0000', '8.0000', '1.50', '2.00'],
        ['a', '2', '5.0000', '9.0000', '1.25', '3.00'],
        ['b', '1', '2.0000', '4.0000', '-', '-'],
        ['b', '2', '4.0000', '3.0000', '-', '-']]


def test_compiled_row():
    """torch.compile (dynamo's eager backend: the row, not inductor's
    speed) times the compiled model, counts nothing twice."""
    x = torch.randn(2, 3, 8, 8)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    eager = benchmark.benchmark_backbone(model, x, 0.01)
    compiled = benchmark.benchmark_backbone(model, x, 0.01,
                                            compile=dict(backend='eager'))
    assert eager['gflops'] == 2 * 4 * 6 * 6 * 27 / 1e9
    assert {'gflops', 'aten_ops', 'first_call_s'} & set(compiled) == {
        'first_call_s'}
    assert compiled['forward_s'] > 0 and compiled['train_s'] > 0


def test_fused_and_reference_paths_agree():
    cfg = load_config(str(REPO / GCVIT))
    variants = benchmark.backbone_variants('t', cfg, 'xxtiny')
    assert [name for name, _ in variants] == [
        't fused', 't reference', 't fused, with_cp']
    models = [build_model(cfg, backbone).eval()
              for _, backbone in variants[:2]]
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = list(zip(*(m(x) for m in models)))
    assert len(outs) == 4
    for fused, reference in outs:
        torch.testing.assert_close(fused, reference, rtol=0,
                                   atol=1e-5 * reference.abs().max())


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
        SWIN]
    assert {r[1] for r in rows} == {'1x3x64x96'}
    # The three GC ViT variants compute the same function, Swin another.
    assert len({r['gflops'] for r in saved[:3]}) == 1
    assert saved[0]['gflops'] != saved[3]['gflops']
    # The fused path dispatches other ops than the reference one.
    assert saved[0]['aten_ops'] != saved[1]['aten_ops']
    swin = saved[3]
    for cells, row in zip(rows[:3], saved):
        assert cells[-2:] == [f'{row["forward_s"] / swin["forward_s"]:.2f}',
                              f'{row["train_s"] / swin["train_s"]:.2f}']
    assert rows[3][-2:] == ['-', '-']


def test_detectors_end_to_end():
    text = run([sys.executable, TOOL, '--detector', '--shape', 64,
                '--batch-size', 1, '--min-run-time', 0.01], cwd=REPO)
    rows = table_rows(text)
    assert [r[:2] for r in rows] == [
        ['mask-rcnn_gcvit-t_fpn_1x_coco', '1x3x64x64'], [SWIN, '1x3x64x64']]
    assert float(rows[0][3]) == pytest.approx(
        float(rows[0][2]) / float(rows[1][2]), abs=0.006)
    assert rows[1][3] == '-'


@pytest.mark.parametrize('args, message', [
    (['--shape', '1', '2', '3'], '--shape 1 2 3: give the input size as H W'),
    (['missing.py'], "config 'missing.py' not found"),
])
def test_bad_arguments_get_one_line(args, message):
    rc, output = run_tool([TOOL, *args], cwd=REPO)
    assert rc == 2 and 'Traceback' not in output
    assert message in output.strip().splitlines()[-1]
