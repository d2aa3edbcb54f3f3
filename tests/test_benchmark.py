"""Benchmark tools: they run end to end on tiny shapes, their memory
measurement and goal bookkeeping are right, and the fused and reference
attention paths they compare compute the same function."""
import json
import math
import os
import os.path as osp
import re
import runpy

import pytest
import torch

from mmgcvit.analysis import benchmark

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools', 'analysis_tools')
TINY = '1x3x64x96'


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    # The tools' default configs are repository-relative paths.
    monkeypatch.chdir(REPO)


def _run_tool(name, argv, monkeypatch):
    monkeypatch.setattr('sys.argv', [name] + argv)
    runpy.run_path(osp.join(TOOLS, name), run_name='__main__')


def _table_rows(text):
    """Cells of the Markdown table rows that follow the header line."""
    lines = [line for line in text.splitlines() if line.startswith('|')]
    return [[cell.strip() for cell in line.strip('|').split('|')]
            for line in lines[2:]]


def test_peak_memory_counts_a_transient_allocation():
    size_mib = 64

    def allocate():
        block = torch.ones(size_mib * 2**18)  # float32: 4 bytes each
        del block
        torch.ones(2**18)

    peak = benchmark.peak_memory_mib(allocate, torch.device('cpu'))
    assert size_mib <= peak < size_mib + 4


def backbone_tool():
    """The globals of tools/analysis_tools/benchmark_backbone.py, where the
    goals are defined (not run)."""
    return runpy.run_path(osp.join(TOOLS, 'benchmark_backbone.py'))


def goal_marks(goals):
    return {text.split(' >=')[0].split(' <=')[0]: ok
            for text, _, ok in goals}


def test_goals_pass_and_fail_marks():
    shape = [2, 3, 8, 8]

    def row(role, forward_s, train_s, mib):
        return dict(name=role, role=role, shape=shape, forward_s=forward_s,
                    train_s=train_s, train_peak_mib=mib)

    result = dict(rows=[
        row('fused', 1.0, 1.0, 100.0),
        row('reference', 3.0, 1.5, 200.0),
        row('cp', 1.2, 1.5, 50.0),
    ])
    assert goal_marks(backbone_tool()['backbone_goals'](result)) == {
        'fused forward speedup at 2×3×8×8': True,
        'fused forward+backward speedup at 2×3×8×8': False,
        'fused peak training memory at 2×3×8×8': True,
        'with_cp memory saving at 2×3×8×8': True,
        'with_cp slowdown at 2×3×8×8': False,
    }


def test_compile_goals_pass_and_fail_marks():
    """Forward at the first shape, training and memory at the last; Swin's
    rows are context, not goals."""
    def row(shape, role, forward, train, peak):
        return dict(name=role, role=role, shape=shape,
                    eager_forward_s=forward[0], compiled_forward_s=forward[1],
                    eager_train_s=train[0], compiled_train_s=train[1],
                    eager_peak_mib=peak[0], compiled_peak_mib=peak[1])

    first, last = [1, 3, 8, 8], [2, 3, 8, 8]
    result = dict(rows=[
        row(first, 'fused', (1.3, 1.0), (1.0, 2.0), (1.0, 9.0)),
        row(last, 'fused', (1.0, 2.0), (1.0, 1.0), (100.0, 101.0)),
        row(first, '', (9.0, 1.0), (9.0, 1.0), (9.0, 1.0)),
    ])
    assert goal_marks(backbone_tool()['compile_goals'](result)) == {
        'compiled forward speedup at 1×3×8×8': True,
        'compiled forward+backward speedup at 2×3×8×8': False,
        'compiled peak training memory at 2×3×8×8': False,
    }


@pytest.mark.parametrize('device', ['cpu', 'cuda:0'])
def test_report_says_where_the_speed_goals_apply(device):
    row = dict(name='fused', role='fused', shape=[1, 3, 8, 8], forward_s=1.,
               train_s=1., train_peak_mib=1.)
    tool = backbone_tool()
    text = tool['report'](benchmark.backbone_table(
        dict(device=device, threads=2, matmul_gflops=100., rows=[row])),
        [('a goal', '1x', True)], device)
    assert (tool['GPU_GOALS_NOTE'] in text) == (device != 'cpu')
    assert _table_rows(text)[0][:2] == ['fused', '1×3×8×8']
    assert text.endswith('- PASS: a goal (measured 1x)')


def test_aten_op_count_counts_every_call():
    """A module run twice dispatches twice the ops of one run, nested and
    leaf alike; leaves are fewer than all ops (linear calls addmm)."""

    class Twice(torch.nn.Module):

        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            return self.module(self.module(x))

    block = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(),
                                torch.nn.LayerNorm(8))
    x = torch.randn(2, 8)
    once = benchmark.count_aten_ops(block, x)
    assert 0 < once[1] < once[0]
    assert benchmark.count_aten_ops(Twice(block), x) == (2 * once[0],
                                                         2 * once[1])


def test_bad_shape_names_the_format():
    with pytest.raises(Exception, match='NxCxHxW'):
        benchmark.parse_shape('3x64x96')


def test_fused_and_reference_paths_agree():
    variants = {v.role: v for v in benchmark.default_variants(
        gcvit_arch='xxtiny')}
    fused = benchmark.build_backbone(variants['fused'].backbone_cfg())
    reference = benchmark.build_backbone(
        variants['reference'].backbone_cfg())
    reference.load_state_dict(fused.state_dict())
    fused.eval()
    reference.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = list(zip(fused(x), reference(x)))
    assert len(outs) == 4
    for out_fused, out_ref in outs:
        scale = out_ref.abs().max()
        assert (out_fused - out_ref).abs().max() <= 1e-5 * scale


def test_backbone_tool_end_to_end(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'bench.json'
    _run_tool('benchmark_backbone.py', [
        '--shapes', TINY, '--repeats', '1', '--warmup', '0', '--arch',
        'xxtiny', '--device', 'cpu', '--out',
        str(out)
    ], monkeypatch)
    text = capsys.readouterr().out
    header = [line for line in text.splitlines() if line.startswith('| ')][0]
    assert [c.strip() for c in header.strip('|').split('|')] == [
        'Backbone', 'Input', 'GFLOPs', 'Forward (s)',
        'Forward GFLOP/s (% of matmul)', 'Fwd+bwd (s)',
        'Peak train memory (MiB)'
    ]
    rows = _table_rows(text)
    assert [r[0] for r in rows] == [
        'GC ViT-xxtiny fused', 'GC ViT-xxtiny reference',
        'GC ViT-xxtiny fused, with_cp', 'Swin-T (mmdet)'
    ]
    for cells in rows:
        assert cells[1] == '1×3×64×96'
        numbers = [float(c) for c in cells[2:4] + cells[5:]]
        numbers.append(float(cells[4].split()[0]))
        assert all(math.isfinite(n) and n > 0 for n in numbers), cells
    # The three GC ViT variants compute the same math: one FLOP count.
    assert len({r[2] for r in rows[:3]}) == 1
    assert len(re.findall(r'^- (PASS|FAIL): ', text, re.M)) == 5
    saved = json.loads(out.read_text())
    assert len(saved['rows']) == 4 and saved['matmul_gflops'] > 0
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def test_backbone_tool_compile_end_to_end(tmp_path, monkeypatch, capsys):
    """--compile at a tiny size with dynamo's eager backend (the table's
    structure, not inductor's speed): GC ViT and Swin-T rows with their
    op counts, and the three compile goals."""
    out = tmp_path / 'compile.json'
    _run_tool('benchmark_backbone.py', [
        '--compile', '--compile-backend', 'eager', '--shapes', TINY,
        '--repeats', '1', '--warmup', '0', '--arch', 'xxtiny', '--device',
        'cpu', '--out', str(out)
    ], monkeypatch)
    text = capsys.readouterr().out
    assert "torch.compile(backend='eager', mode=None, dynamic=False)" in text
    rows = _table_rows(text)
    assert [r[0] for r in rows] == ['GC ViT-xxtiny fused', 'Swin-T (mmdet)']
    saved = json.loads(out.read_text())['rows']
    for cells, row in zip(rows, saved):
        assert cells[1] == '1×3×64×96'
        assert cells[2] == f'{row["aten_ops"]} / {row["leaf_aten_ops"]}'
        assert 0 < row['leaf_aten_ops'] < row['aten_ops']
        for kind in ('forward', 'train'):
            assert cells[5 if kind == 'forward' else 9] == (
                f'{row[f"eager_{kind}_s"] / row[f"compiled_{kind}_s"]:.2f}x')
    # GC ViT's 12 blocks with their global queries dispatch more ops than
    # Swin-T's 12 blocks.
    assert saved[0]['aten_ops'] > saved[1]['aten_ops']
    assert re.findall(r'^- (?:PASS|FAIL): (compiled [a-z+ ]+) at', text,
                      re.M) == [
        'compiled forward speedup', 'compiled forward+backward speedup',
        'compiled peak training memory'
    ]


def test_detector_tool_end_to_end(monkeypatch, capsys):
    _run_tool('benchmark_detector.py', [
        '--shape', '1x3x64x64', '--repeats', '1', '--warmup', '0',
        '--device', 'cpu'
    ], monkeypatch)
    text = capsys.readouterr().out
    rows = _table_rows(text)
    assert [r[0] for r in rows] == [
        'mask-rcnn_gcvit-t_fpn_1x_coco', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco'
    ]
    seconds = [float(r[1]) for r in rows]
    assert all(math.isfinite(s) and s > 0 for s in seconds)
    assert float(rows[1][2]) == 1.0
    assert re.search(r'^- (PASS|FAIL): mask-rcnn_gcvit-t_fpn_1x_coco iteration', text,
                     re.M)
