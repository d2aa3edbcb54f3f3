"""The model-zoo metadata: ``model-index.yml`` -> ``configs/*/metafile.yml``
cover exactly the benchmark configs, their parameter counts are the built
models', and README's tables are what ``tools/misc/gen_model_zoo.py``
makes of them."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO
from mmengine.config import Config
from mmengine.fileio import load
from mmengine.registry import MODELS, init_default_scope

GEN = REPO / 'tools/misc/gen_model_zoo.py'
# Benchmark configs: OpenMMLab names ending in the dataset (..._coco.py,
# ..._ade20k-512x512.py). Demo and custom-data configs are not in the zoo.
BENCHMARK = re.compile(r'_(coco|ade20k-\d+x\d+)\.py$')


def models():
    index = load(REPO / 'model-index.yml')
    return [model for path in index['Import']
            for model in load(REPO / path)['Models']]


def test_every_benchmark_config_has_one_entry_and_vice_versa():
    """(Which benchmark configs there are: test_configs.py.)"""
    index = load(REPO / 'model-index.yml')['Import']
    on_disk = sorted(str(p.relative_to(REPO))
                     for p in REPO.glob('configs/*/metafile.yml'))
    assert sorted(index) == on_disk == [
        'configs/detection/metafile.yml', 'configs/segmentation/metafile.yml'
    ]
    configs = sorted(
        str(p.relative_to(REPO)) for p in REPO.glob('configs/*/*.py')
        if BENCHMARK.search(p.name))
    assert sorted(m['Config'] for m in models()) == configs
    for model in models():
        assert model['Name'] == Path(model['Config']).stem


def test_entries_are_complete():
    names = {'COCO': {'box AP', 'mask AP'}, 'ADE20K': {'mIoU'}}
    with_results = set()
    for model in models():
        meta = model['Metadata']
        for key in ('Training Data', 'Training Techniques',
                    'Training Resources', 'Architecture', 'Parameters',
                    'FLOPs', 'FLOPs Input'):
            assert meta.get(key), (model['Name'], key)
        assert 'Weights' in model and model['Weights'] is None
        assert model['Paper']['URL'] == 'https://arxiv.org/abs/2206.09959'
        for result in model.get('Results', []):
            assert result['Dataset'] == meta['Training Data']
            assert set(result['Metrics']) <= names[result['Dataset']]
            with_results.add(model['Name'])
    # The paper reports Mask R-CNN T 3x, Cascade T/S/B 3x, UPerNet T/S/B.
    assert with_results == {
        'mask-rcnn_gcvit-t_fpn_ms-crop-3x_coco',
        *(f'cascade-mask-rcnn_gcvit-{v}_fpn_4conv1fc-giou_ms-crop-3x_coco'
          for v in 'tsb'),
        *(f'upernet_gcvit-{v}_8xb2-160k_ade20k-512x512' for v in 'tsb'),
    }


def test_readme_tables_match_the_metafiles(tmp_path):
    """``--check`` passes on README.md, fails on a table edited by hand,
    and the rewrite restores it."""
    result = subprocess.run([sys.executable, GEN, '--check'],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    readme = tmp_path / 'README.md'
    text = (REPO / 'README.md').read_text()
    # Tamper with a paper figure inside the generated ADE20K table.
    start = text.index('<!-- model-zoo:ade20k start -->')
    edited = text[:start] + text[start:].replace('| 49.2 |', '| 50.2 |', 1)
    assert edited != text
    readme.write_text(edited)
    result = subprocess.run(
        [sys.executable, GEN, '--check', '--readme', readme],
        capture_output=True, text=True)
    assert result.returncode == 1
    assert 'differ from the metafiles' in result.stderr
    subprocess.run([sys.executable, GEN, '--readme', readme], check=True,
                   capture_output=True)
    assert readme.read_text() == text


@pytest.mark.parametrize('model', models(), ids=lambda m: m['Name'])
def test_parameters_are_the_built_models(model):
    cfg = Config.fromfile(REPO / model['Config'])  # imports GCViT
    init_default_scope(cfg.default_scope)
    params = sum(p.numel() for p in MODELS.build(cfg.model).parameters())
    assert params == model['Metadata']['Parameters']
