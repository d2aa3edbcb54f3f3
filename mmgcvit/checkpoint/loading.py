"""The one path by which mmgcvit and its tools read checkpoints.

:func:`load_checkpoint` takes a local file or an ``http(s)://`` URL. URLs are
downloaded once into a cache keyed by the whole URL (not just the file name,
so two hosts serving ``model.pth`` never share a cache entry); a file name
that carries a hash, as release files do (``name-<sha256 prefix>.pth``), is
checked on every load. Every pickle is read with ``weights_only=True``
(:mod:`mmgcvit.checkpoint.allow_list` admits what mmengine checkpoints
need), safetensors files with safetensors. Failures raise
:class:`CheckpointError` with one line naming the problem and the fix.

mmengine's ``CheckpointLoader`` (``load_from``, ``--resume``,
``tools/test.py CHECKPOINT``) loads URLs with ``weights_only=False``;
:func:`safe_checkpoint_loading`, which our tools enter around a run, sends
its local and URL loading here instead.
"""
import argparse
import hashlib
import os
import os.path as osp
import pickle
import re
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager

import mmengine.runner.checkpoint as mmengine_checkpoint
import torch
from mmengine.dist import get_dist_info
from mmengine.runner import CheckpointLoader

from mmgcvit.utils.fileio import atomic_open
from mmgcvit.utils.torch_compat import safe_globals

# torch.hub's convention: `name-<first hex digits of the sha256>.ext`; a
# run of digits alone (`model-20261201.pth`) is more likely a date.
_HASH_IN_NAME = re.compile(r'-((?=[0-9]*[a-f])[a-f0-9]{8,64})\.')
_URL_SCHEMES = ('http://', 'https://')
_DOWNLOAD_TIMEOUT = 60
_CHUNK = 1 << 20
# Names shown when a checkpoint has non-finite weights; more are counted.
_MAX_NAMES = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used; the message says why and
    what to do."""


def is_url(source):
    return isinstance(source, str) and source.startswith(_URL_SCHEMES)


def cache_dir():
    """Where downloaded checkpoints are kept: ``$MMGCVIT_CACHE`` or
    ``<torch hub dir>/mmgcvit``."""
    return os.environ.get('MMGCVIT_CACHE') or osp.join(
        torch.hub.get_dir(), 'mmgcvit')


def cached_path(url):
    """The cache file of ``url``: a folder per URL, the URL's file name."""
    name = osp.basename(urllib.parse.urlparse(url).path) or 'checkpoint'
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return osp.join(cache_dir(), key, name)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(_CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def _check_hash(path, url):
    match = _HASH_IN_NAME.search(osp.basename(path))
    if match is None:
        return
    actual = _sha256(path)
    if not actual.startswith(match[1]):
        os.unlink(path)
        raise CheckpointError(
            f'checkpoint downloaded from {url} has sha256 {actual[:16]}..., '
            f'not the {match[1]} its file name promises: the download was '
            'corrupted or the server holds another file; the cached copy was '
            'deleted, so running again downloads it anew.')


def _local_alternative():
    return ('or download it yourself and pass the local path (e.g. '
            '--cfg-options model.backbone.init_cfg.checkpoint=PATH)')


def _download(url, path):
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as r, \
                atomic_open(path, 'wb') as f:
            size = 0
            for block in iter(lambda: r.read(_CHUNK), b''):
                f.write(block)
                size += len(block)
            # http.client returns a connection cut mid-body as a short read,
            # not an error: without this the cache would keep a truncated
            # file and serve it on every later run.
            expected = r.headers.get('Content-Length')
            if expected is not None and size != int(expected):
                raise CheckpointError(
                    f'download of checkpoint {url} stopped after {size} of '
                    f'{expected} bytes: run again to download it anew, '
                    f'{_local_alternative()}.')
    except urllib.error.HTTPError as err:
        what = 'not found at' if err.code == 404 else 'refused by'
        raise CheckpointError(
            f'checkpoint {what} {url} (HTTP {err.code} {err.reason}): check '
            f'the URL, {_local_alternative()}.') from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, 'reason', err)
        raise CheckpointError(
            f'cannot download checkpoint {url} ({reason}): check the network '
            f'or proxy, {_local_alternative()}.') from None


def download(url):
    """The local path of ``url``'s file, downloaded into the cache unless it
    is there; checked against the hash in its name. In a distributed run
    rank 0 downloads first, the others then read its copy."""
    path = cached_path(url)

    def fetch():
        if not osp.isfile(path):
            _download(url, path)
        _check_hash(path, url)

    rank, world_size = get_dist_info()
    failure = None
    if rank == 0:
        try:
            fetch()
        except CheckpointError as err:
            failure = err  # raised after the barrier the others wait at
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            fetch()
    if failure is not None:
        raise failure
    return path


# What torch's weights_only unpickler and our allow-list say when they
# refuse an object (other unpickling errors mean a damaged file).
_REFUSALS = ('unsupported global', 'can only build', 'can only create',
             'unrecognized function', 'weights_only load refused')


def _refusal(err):
    """The line of a weights_only error that names the refused object, or
    None when the error is not a refusal."""
    return next((line.strip() for line in str(err).splitlines()
                 if any(mark in line.lower() for mark in _REFUSALS)), None)


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read(path, source, map_location):
    if osp.getsize(path) == 0:
        raise CheckpointError(f'checkpoint {source} is an empty file: '
                              'download or write it again.')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            return load_file(path, device=str(map_location or 'cpu'))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(
                f'cannot read safetensors checkpoint {source} '
                f'({_first_line(err)}): the file is truncated or corrupt; '
                'download or convert it again.') from None
    try:
        # NVlabs checkpoints also pickle their training arguments.
        with safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        if _refusal(err) is None:
            raise _corrupt(source, err) from None
        raise CheckpointError(
            f'checkpoint {source} holds objects that are not weights, which '
            f'mmgcvit refuses to load ({_refusal(err)}). If you trust '
            'its source, re-save just its weights: '
            "torch.save(torch.load(PATH, weights_only=False)['state_dict'], "
            'NEW_PATH), and load NEW_PATH.') from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError,
            KeyError) as err:  # torch / zipfile on a damaged file
        raise _corrupt(source, err) from None


def _corrupt(source, err):
    return CheckpointError(
        f'cannot read checkpoint {source} ({type(err).__name__}: '
        f'{_first_line(err)}): it is not a torch checkpoint, or it is '
        'truncated or corrupt; download or write it again.')


def load_checkpoint(source, map_location='cpu'):
    """The object stored in a local checkpoint file or at an ``http(s)``
    URL (``.pth``, ``.pth.tar``, ``.safetensors``), read safely."""
    source = os.fspath(source)
    if is_url(source):
        path = download(source)
        try:
            return _read(path, source, map_location)
        except CheckpointError:
            # Whatever the server sent is no checkpoint: the next run
            # downloads it anew instead of reading this copy again.
            os.unlink(path)
            raise
    if '://' in source:
        raise CheckpointError(
            f'checkpoint {source!r}: mmgcvit loads local files and http(s) '
            'URLs only; download it and pass the local path.')
    if not osp.isfile(source):
        raise CheckpointError(f'checkpoint {source!r} does not exist: '
                              'fix the path.')
    return _read(source, source, map_location)


# Where trainers keep the weights. NVlabs' training script (timm's) saves
# them under `state_dict` and the EMA copy under `state_dict_ema`; its
# validate.py evaluates the plain `state_dict`, so that one is preferred.
WEIGHT_KEYS = ('state_dict', 'state_dict_ema', 'model', 'module')


def state_dict_of(checkpoint):
    """The weights inside a loaded checkpoint (under one of
    ``WEIGHT_KEYS``), else the checkpoint itself."""
    if isinstance(checkpoint, dict):
        for key in WEIGHT_KEYS:
            if isinstance(checkpoint.get(key), dict):
                return checkpoint[key]
    return checkpoint


def check_finite(state_dict, source):
    """Refuse weights holding NaN or Inf, naming the tensors."""
    bad = [name for name, value in state_dict.items()
           if isinstance(value, torch.Tensor) and value.is_floating_point()
           and not torch.isfinite(value).all()]
    if bad:
        shown = ', '.join(bad[:_MAX_NAMES]) + (
            f' and {len(bad) - _MAX_NAMES} more' if len(bad) > _MAX_NAMES
            else '')
        raise CheckpointError(
            f'checkpoint {source} has NaN or Inf values in {len(bad)} '
            f'weights ({shown}): it comes from a diverged or damaged run; '
            'use an earlier checkpoint.')


def load_from_mmgcvit(filename, map_location=None, *args, **kwargs):
    # mmengine logs "Loads checkpoint by <name minus load_from_> backend".
    checkpoint = load_checkpoint(filename, map_location)
    weights = state_dict_of(checkpoint)
    if isinstance(weights, dict):
        check_finite(weights, filename)
    return checkpoint


def _load_url_with_mmgcvit(url, model_dir=None, map_location=None,
                           *args, **kwargs):
    return load_from_mmgcvit(url, map_location)


@contextmanager
def safe_checkpoint_loading():
    """Inside the ``with`` block, mmengine's ``CheckpointLoader`` reads local
    files and URLs (directly or through ``open-mmlab://``-style names)
    with :func:`load_checkpoint` and refuses non-finite weights; leaving it
    restores mmengine."""
    schemes = CheckpointLoader._schemes
    names = ('load_from_local', 'load_from_http', 'load_url')
    saved = {name: getattr(mmengine_checkpoint, name) for name in names}
    CheckpointLoader._schemes = dict(schemes)
    CheckpointLoader.register_scheme(
        ('', *_URL_SCHEMES), load_from_mmgcvit, force=True)
    mmengine_checkpoint.load_from_local = load_from_mmgcvit
    mmengine_checkpoint.load_from_http = load_from_mmgcvit
    mmengine_checkpoint.load_url = _load_url_with_mmgcvit
    try:
        yield
    finally:
        CheckpointLoader._schemes = schemes
        for name, value in saved.items():
            setattr(mmengine_checkpoint, name, value)
