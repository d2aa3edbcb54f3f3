"""Shared pytest fixtures: small generated datasets in the stock on-disk
formats, made once per session (``mmgcvit/dataset_tools``), loopback
servers and a fresh download cache."""
import pytest
import torch
from helpers import ReleaseServer

from mmgcvit.dataset_tools import generate_ade20k, generate_coco

NUM_TRAIN, NUM_VAL, IMG_SIZE = 16, 8, 128


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory):
    """COCO root (str): ``annotations/instances_{train,val}2017.json`` and
    ``{train,val}2017/*.jpg``; classes ('person', 'bicycle', 'car')."""
    root = tmp_path_factory.mktemp('data') / 'coco'
    return str(generate_coco(root, NUM_TRAIN, NUM_VAL, IMG_SIZE).data_root)


@pytest.fixture(scope='session')
def ade20k_root(tmp_path_factory):
    """The ``ADEChallengeData2016`` folder (str), i.e. what the stock
    ``mmseg::_base_/datasets/ade20k.py`` calls ``data_root``; classes
    ('sky', 'floor', 'tree') = label values 3, 4, 5 in the PNGs."""
    root = tmp_path_factory.mktemp('data') / 'ade20k'
    return str(generate_ade20k(root, NUM_TRAIN, NUM_VAL, IMG_SIZE).data_root)


@pytest.fixture(autouse=True)
def exact_cuda_matmuls():
    """fp32 on a GPU without TF32, which would round the fused and the
    reference attention differently at ~1e-3 (no effect on CPU)."""
    flags = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    (torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = flags


@pytest.fixture
def serve():
    """Starts loopback HTTP servers (``helpers.ReleaseServer``) for the test
    and stops them after it."""
    servers = []

    def start():
        servers.append(ReleaseServer())
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def download_cache(tmp_path, monkeypatch):
    """A fresh cache for downloaded checkpoints; loopback requests bypass
    any proxy."""
    monkeypatch.setenv('MMGCVIT_CACHE', str(tmp_path / 'cache'))
    for name in ('no_proxy', 'NO_PROXY'):
        monkeypatch.setenv(name, '127.0.0.1,localhost')
    return tmp_path / 'cache'
