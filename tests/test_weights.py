"""ImageNet weights that download themselves.

The shipped configs name timm's release URLs (test_configs.py); here a
loopback HTTP server holds a generated timm-format checkpoint named, as
the release files are, with its sha256 prefix. Failures end in one message
naming the local-file alternative and leave no bad file in the cache.
"""
import hashlib
import io
import socket
from pathlib import Path

import pytest
import timm
import torch
from helpers import (REPO, TRAIN, assert_one_line_error,
                     assert_tables_resized, run_tool,
                     small_detection_config, with_custom_imports)
from mmdet.registry import MODELS
from mmengine.config import Config

from mmgcvit.checkpoint import CheckpointError, load_checkpoint
from mmgcvit.checkpoint.download import cached_path

DET_XXT = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_1x_coco.py'
LOCAL_FIX = '--cfg-options model.backbone.init_cfg.checkpoint=PATH'

pytestmark = pytest.mark.usefixtures('download_cache')


@pytest.fixture(scope='module')
def timm_state():
    """A GC ViT-XXT in timm's format, random values everywhere (so that a
    mis-mapped weight shows)."""
    model = timm.create_model('gcvit_xxtiny', pretrained=False)
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=gen) if v.is_floating_point()
            else v for k, v in model.state_dict().items()}


@pytest.fixture(scope='module')
def release(timm_state):
    """``(file name, bytes)``: the checkpoint under a release-style name
    ending in its own sha256 prefix."""
    buffer = io.BytesIO()
    torch.save(timm_state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    return f'gcvit_xxtiny_224_nvidia-{digest[:8]}.pth', data


def detector(checkpoint):
    """The shipped XXT Mask R-CNN config with its checkpoint replaced (as
    ``--cfg-options model.backbone.init_cfg.checkpoint=...`` does), built
    and initialised as a Runner does."""
    cfg = with_custom_imports(Config.fromfile(DET_XXT), MODELS)
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': checkpoint})
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_config_downloads_caches_and_resizes(serve, release, timm_state,
                                             download_cache):
    name, data = release
    server = serve()
    server.files[f'releases/{name}'] = data
    url = server.url(f'releases/{name}')
    state = detector(url).backbone.state_dict()

    assert server.requests == [f'/releases/{name}']
    cached = Path(cached_path(url))
    assert cached.is_relative_to(download_cache) and cached.name == name
    assert cached.read_bytes() == data
    # timm's tables (windows 7, 7, 14, 7) resized to the config's window 24.
    tables = {k.replace('stages.', 'levels.').replace('rel_pos.', ''): v
              for k, v in timm_state.items() if k.endswith('bias_table')}
    assert len(tables) == 12  # XXT: 2 + 2 + 6 + 2 blocks
    assert_tables_resized(state, tables)
    assert torch.equal(state['patch_embed.proj.weight'],
                       timm_state['stem.conv1.weight'])

    # The second load is served from the cache.
    again = load_checkpoint(url)
    assert server.requests == [f'/releases/{name}']
    assert torch.equal(again['stem.conv1.weight'],
                       timm_state['stem.conv1.weight'])


def test_cache_is_keyed_by_the_whole_url(serve):
    """Two servers, and two paths on one, each serving a ``model.pth`` of
    their own: none is read from another's cache entry (a date in a file
    name is no hash to check)."""
    first, second = serve(), serve()
    urls = [first.url('a/model.pth'), first.url('b/model-20261201.pth'),
            second.url('a/model.pth')]
    for i, server in enumerate((first, first, second)):
        buffer = io.BytesIO()
        torch.save({'w': torch.full((2, ), float(i))}, buffer)
        server.files[urls[i].split('/', 3)[3]] = buffer.getvalue()
    for i, url in enumerate(urls):
        assert load_checkpoint(url)['w'].tolist() == [i, i]
    for url in urls:
        assert load_checkpoint(url)['w'].tolist() == [urls.index(url)] * 2
    assert first.requests == ['/a/model.pth', '/b/model-20261201.pth']
    assert second.requests == ['/a/model.pth']


def unused_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize('failure', ['404', 'no server'])
def test_unreachable_url_names_the_local_alternative(failure, serve, release,
                                                     download_cache):
    name, _ = release
    if failure == '404':
        url = serve().url(f'releases/{name}')
        expected = f'checkpoint not found at {url} (HTTP 404'
    else:
        url = f'http://127.0.0.1:{unused_port()}/releases/{name}'
        expected = f'cannot download checkpoint {url}'
    with pytest.raises(CheckpointError) as error:
        detector(url)
    message = str(error.value)
    assert '\n' not in message
    assert expected in message and LOCAL_FIX in message
    assert not list(download_cache.rglob('*.pth'))


@pytest.mark.parametrize('bad', ['wrong hash', 'html page', 'truncated'])
def test_a_bad_download_is_refused_and_deleted(bad, serve, release,
                                              timm_state, download_cache):
    """A file whose sha256 is not the one its name promises, a server
    answering 200 with something else (an HTML error page), or a
    connection cut halfway: the message says what it is, no copy (nor
    atomic_open's partial temporary) is kept, and the next run downloads
    anew."""
    name, data = release
    server = serve()
    if bad == 'wrong hash':
        body = data[:-1] + bytes([data[-1] ^ 1])
        error = rf'not the {name[-12:-4]} its file name promises.*deleted'
    elif bad == 'html page':
        name, body = 'model.pth', b'<html>rate limit exceeded</html>\n'
        error = 'not a torch zip archive'
    else:
        body = data
        server.cut.add(name)
        error = (rf'stopped after {len(data) // 2} of {len(data)} bytes: '
                 'run again')
    server.files[name] = body
    url = server.url(name)
    with pytest.raises(CheckpointError, match=error):
        load_checkpoint(url)
    assert not [p for p in download_cache.rglob('*') if p.is_file()]
    server.cut.clear()
    server.files[name] = data
    assert load_checkpoint(url).keys() == timm_state.keys()
    assert server.requests == [f'/{name}'] * 2


@pytest.mark.slow
def test_train_tool_reports_a_missing_url_in_one_line(serve, tmp_path,
                                                      coco_root):
    """What a user sees from tools/train.py when the release is gone."""
    url = serve().url('releases/gcvit_xxtiny_224_nvidia-00000000.pth')
    config = small_detection_config(tmp_path / 'small.py', coco_root,
                                    arch='xxtiny', images=2)
    config.write_text(config.read_text().replace(
        'init_cfg=None',
        f"init_cfg=dict(type='Pretrained', checkpoint={url!r})"))
    rc, output = run_tool([TRAIN, config, '--work-dir', tmp_path / 'work'],
                          cwd=tmp_path)
    assert_one_line_error(rc, output, f'checkpoint not found at {url}',
                          LOCAL_FIX)
    assert not list((tmp_path / 'work').glob('*.pth'))


def test_rank_0_failure_still_meets_the_barrier(serve, monkeypatch):
    """Rank 0 downloads first and the others wait for it at a barrier: when
    its download fails it must still get there, or the job hangs."""
    import mmgcvit.checkpoint.download as loading
    calls = []
    monkeypatch.setattr(loading, 'get_dist_info', lambda: (0, 2))
    monkeypatch.setattr(torch.distributed, 'barrier',
                        lambda: calls.append('barrier'))
    with pytest.raises(CheckpointError, match='not found at'):
        loading.download(serve().url('missing.pth'))
    assert calls == ['barrier']
