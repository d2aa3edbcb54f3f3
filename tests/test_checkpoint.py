"""GC ViT weights: NVlabs / timm / mmgcvit formats, bias-table resizing,
refusals of other models' weights, numerical parity with timm, the
converter (unreadable and hostile files: test_security.py)."""
import argparse
import os
import runpy
import sys

import pytest
import timm
import torch
from helpers import assert_tables_resized
from safetensors.torch import save_file

from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.models import GCViT
from mmgcvit.models.backbones.gcvit_converter import CheckpointFormatError

CONVERTER = os.path.join(
    os.path.dirname(__file__), '..', 'tools', 'model_converters',
    'gcvit_to_mmgcvit.py')


def randomized(module, seed=0):
    """Random values everywhere, so a mis-mapped key cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + p)
    return module


def pretrained(path, **kwargs):
    kwargs.setdefault('arch', 'xxtiny')
    kwargs.setdefault('window_size', 24)
    model = GCViT(init_cfg=dict(type='Pretrained', checkpoint=str(path)),
                  **kwargs)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def nvlabs_source():
    """State dict of an xxtiny at the ImageNet windows in the NVlabs
    layout, with the classifier, final norm and index buffers added."""
    state = randomized(GCViT(arch='xxtiny')).state_dict()
    nvlabs = dict(state)
    nvlabs.update({
        'norm.weight': torch.ones(512), 'norm.bias': torch.zeros(512),
        'head.weight': torch.zeros(1000, 512), 'head.bias': torch.zeros(1000),
        'levels.0.blocks.0.attn.relative_position_index':
        torch.zeros(49, 49, dtype=torch.long),
    })
    return state, nvlabs


@pytest.fixture(scope='module')
def nvlabs_file(tmp_path_factory, nvlabs_source):
    _, nvlabs = nvlabs_source
    path = tmp_path_factory.mktemp('nvlabs') / 'gcvit_xxtiny_best_1k.pth.tar'
    ema = {k: v + 1 for k, v in nvlabs.items()}
    torch.save(
        dict(state_dict=nvlabs, state_dict_ema=ema, epoch=309,
             arch='gc_vit_xxtiny', args=argparse.Namespace(model='gc_vit')),
        path)
    return path


@pytest.fixture(scope='module')
def timm_model():
    return randomized(timm.create_model('gcvit_xxtiny', pretrained=False))


@pytest.fixture(scope='module', params=['pth', 'safetensors'])
def timm_file(request, tmp_path_factory, timm_model):
    path = tmp_path_factory.mktemp('timm') / f'gcvit_xxtiny.{request.param}'
    state = timm_model.state_dict()
    if request.param == 'pth':
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_nvlabs_checkpoint_loads_into_window_24(nvlabs_file, nvlabs_source):
    state, _ = nvlabs_source
    model = pretrained(nvlabs_file)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    tables = {k: v for k, v in state.items() if k.endswith('bias_table')}
    assert_tables_resized(loaded, tables)
    for key, value in state.items():
        if key not in tables:  # the plain weights, not the EMA copy
            assert torch.equal(loaded[key], value), key
    # At the ImageNet windows nothing is resized.
    loaded = pretrained(nvlabs_file, window_size=None).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_loading_reports_no_missing_backbone_keys(timm_file):
    model = GCViT(arch='xxtiny', window_size=24)
    result = model.load_pretrained(str(timm_file))
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == sorted(
        f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))


@pytest.mark.parametrize('arch,timm_name', [('tiny', 'gcvit_tiny'),
                                            ('small', 'gcvit_small')])
@pytest.mark.parametrize('fused', [True, False])
def test_numerical_parity_with_timm(tmp_path, arch, timm_name, fused):
    reference = randomized(timm.create_model(timm_name)).eval()
    torch.save(reference.state_dict(), tmp_path / 'timm.pth')
    model = pretrained(tmp_path / 'timm.pth', arch=arch, window_size=None,
                       fused_attn=fused).eval()
    x = torch.randn(1, 3, 224, 224)
    ours = []
    hooks = [
        level.register_forward_hook(lambda m, i, o: ours.append(o[1]))
        for level in model.levels
    ]
    with torch.no_grad():
        model(x)
        feat = reference.stem(x)
        for i, stage in enumerate(reference.stages):
            feat = stage(feat)
            mine = ours[i].permute(0, 3, 1, 2)
            if i == 3:  # timm's last stage ends with the classifier's norm
                mine = stage.norm(ours[i]).permute(0, 3, 1, 2)
            err = (mine - feat).abs().max() / feat.abs().max()
            assert err < 1e-4, (i, err)
    for hook in hooks:
        hook.remove()


def test_wrong_variant_refused_naming_both(nvlabs_file):
    with pytest.raises(CheckpointFormatError) as info:
        pretrained(nvlabs_file, arch='tiny')
    message = str(info.value)
    assert "'xxtiny'" in message and "'tiny'" in message
    assert 'depths=(2, 2, 6, 2)' in message


def test_full_detector_checkpoint(tmp_path, nvlabs_source):
    state, _ = nvlabs_source
    detector = {f'backbone.{k}': v for k, v in state.items()}
    detector['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 64, 1, 1)
    detector['roi_head.bbox_head.fc_cls.weight'] = torch.zeros(81, 1024)
    path = tmp_path / 'mask_rcnn_gcvit_xxtiny.pth'
    torch.save(dict(state_dict=detector, meta=dict(epoch=12)), path)
    with pytest.raises(CheckpointFormatError) as info:
        pretrained(path)
    message = str(info.value)
    assert 'load_from' in message and "prefix='backbone.'" in message
    assert '\n' not in message
    for prefix in ('backbone.', 'backbone'):
        model = GCViT(arch='xxtiny', init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix=prefix))
        model.init_weights()
        assert all(torch.equal(model.state_dict()[k], v)
                   for k, v in state.items())


def test_unknown_format_refused(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(CheckpointFormatError, match='Unknown GC ViT'):
        pretrained(path)


def run_converter(monkeypatch, *args):
    monkeypatch.setattr(sys, 'argv', [CONVERTER, *map(str, args)])
    runpy.run_path(CONVERTER, run_name='__main__')


def test_converter_output_loads_identically(tmp_path, monkeypatch,
                                            timm_file):
    dst = tmp_path / 'out' / 'gcvit_xxtiny_mmgcvit.pth'
    run_converter(monkeypatch, timm_file, dst)
    converted = load_checkpoint(dst)
    assert converted['meta']['source_format'] == 'timm'
    assert converted['meta']['depths'] == (2, 2, 6, 2)
    direct, via = pretrained(timm_file), pretrained(dst)
    for (k, a), (_, b) in zip(direct.state_dict().items(),
                              via.state_dict().items()):
        if not k.startswith('norm'):  # output norms are fresh in both
            assert torch.equal(a, b), k
    assert os.listdir(dst.parent) == [dst.name]


def test_converter_failure_leaves_no_file(tmp_path, monkeypatch):
    src = tmp_path / 'corrupt.pth.tar'
    src.write_bytes(b'PK\x03\x04 not really a zip')
    out = tmp_path / 'out'
    out.mkdir()
    with pytest.raises(SystemExit, match='truncated or corrupt'):
        run_converter(monkeypatch, src, out / 'x.pth')
    assert os.listdir(out) == []
