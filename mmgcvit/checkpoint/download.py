"""Downloading checkpoints into a per-URL cache, with a hostile server in
mind: ``<cache>/<sha256(URL)[:16]>/<file name>`` (``$MMGCVIT_CACHE``, else
``<torch hub dir>/mmgcvit``); a total deadline
(``$MMGCVIT_DOWNLOAD_TIMEOUT`` s, default 3600) and a size cap
(``$MMGCVIT_DOWNLOAD_MAX_BYTES``, default 8 GiB); redirects to http(s)
only; no symlinked cache entry is followed; partial files go on any error,
on SIGTERM, and (after a SIGKILL) at the next download into the folder. A
name carrying a hash as release files do (``name-<sha256 prefix>.pth``: 6
to 64 hex digits, either case, one a-f at least, so a date is none) is
checked. Messages show URLs without query, fragment or user info (tokens).
"""
import hashlib
import os
import os.path as osp
import re
import signal
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager

import torch
from mmengine.dist import get_dist_info

from mmgcvit.utils.fileio import atomic_open, remove_stale_temporaries


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used; the message says why and
    what to do."""


_URL_SCHEMES = ('http://', 'https://')
_HASH_IN_NAME = re.compile(r'-((?=[0-9]*[a-fA-F])[0-9a-fA-F]{6,64})\.')
_CHUNK = 1 << 20
# Seconds one socket read may wait, within the total deadline.
_READ_TIMEOUT = 60
_LOCAL = ('or download it yourself and pass the local path (e.g. '
          '--cfg-options model.backbone.init_cfg.checkpoint=PATH)')


def is_url(source):
    return isinstance(source, str) and source.startswith(_URL_SCHEMES)


def display_url(source):
    """``source`` fit for messages: a URL without user info, query and
    fragment; anything else as it is."""
    if not is_url(source):
        return source
    parts = urllib.parse.urlsplit(source)
    host = parts.netloc.rpartition('@')[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, '', ''))


def _setting(name, default):
    value = os.environ.get(name)
    try:
        return default if value is None else float(value)
    except ValueError:
        raise CheckpointError(f'{name}={value!r} is not a number: set it to '
                              f'a number, or unset it (default {default:g}).'
                              ) from None


def cached_path(url):
    """The cache file of ``url``: a folder per URL, the URL's file name
    reduced to a plain one (never ``..`` or a path)."""
    name = osp.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    name = re.sub(r'[^A-Za-z0-9._-]', '_', name).lstrip('.')
    return osp.join(
        os.environ.get('MMGCVIT_CACHE')
        or osp.join(torch.hub.get_dir(), 'mmgcvit'),
        hashlib.sha256(url.encode()).hexdigest()[:16], name or 'checkpoint')


def _own_folder(path, url):
    """Make the file's cache folder; refuse one that is a symlink."""
    folder = osp.dirname(path)
    os.makedirs(osp.dirname(folder), exist_ok=True)
    try:
        os.mkdir(folder)
    except FileExistsError:
        pass
    for item in (folder, path):
        try:
            mode = os.lstat(item).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode) or item == folder and not stat.S_ISDIR(mode):
            raise CheckpointError(
                f'the cache entry {item} of {display_url(url)} is a symlink '
                'or not a folder, which mmgcvit neither follows nor deletes: '
                'remove it (or set MMGCVIT_CACHE to a folder of your own).')


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not is_url(urllib.parse.urljoin(req.full_url, newurl)):
            raise CheckpointError(
                f'{display_url(req.full_url)} redirects to a '
                f'{urllib.parse.urlsplit(newurl).scheme or "non-http"} URL, '
                'which mmgcvit does not follow: use an http(s) URL, '
                f'{_LOCAL}.')
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _exit(signum, frame):
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_as_exit():
    """Within (main thread only): SIGTERM raises ``SystemExit``, so the
    partial file is removed on the way out; the handler is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fetch(url, path):
    shown = display_url(url)
    deadline = _setting('MMGCVIT_DOWNLOAD_TIMEOUT', 3600)
    cap = _setting('MMGCVIT_DOWNLOAD_MAX_BYTES', 8 << 30)
    too_big = (f'checkpoint {shown} is larger than MMGCVIT_DOWNLOAD_MAX_BYTES'
               f'={cap:g} bytes: raise the limit if you expect such a file, '
               f'{_LOCAL}.')
    start = time.monotonic()
    try:
        with _sigterm_as_exit(), _OPENER.open(
                url, timeout=min(_READ_TIMEOUT, deadline)) as r, \
                atomic_open(path, 'wb') as f:
            expected = r.headers.get('Content-Length')
            if expected is not None and not expected.isdigit():
                raise CheckpointError(
                    f'{shown} answered with Content-Length {expected!r}, '
                    f'not a size: check the URL, {_LOCAL}.')
            expected = expected and int(expected)
            if expected is not None and expected > cap:
                raise CheckpointError(too_big)
            size = 0
            # read1: returns what arrived, so a server trickling bytes
            # cannot hold a read past the deadline.
            while block := r.read1(_CHUNK):
                size += len(block)
                if size > cap:
                    raise CheckpointError(too_big)
                if time.monotonic() - start > deadline:
                    raise CheckpointError(
                        f'download of checkpoint {shown} took longer than '
                        f'MMGCVIT_DOWNLOAD_TIMEOUT={deadline:g} s: raise it '
                        f'for a slow network, {_LOCAL}.')
                f.write(block)
            # http.client returns a connection cut mid-body as a short
            # read, not an error.
            if expected is not None and size != expected:
                raise CheckpointError(
                    f'download of checkpoint {shown} stopped after {size} of '
                    f'{expected} bytes: run again to download it anew, '
                    f'{_LOCAL}.')
    except urllib.error.HTTPError as err:
        what = 'not found at' if err.code == 404 else 'refused by'
        raise CheckpointError(
            f'checkpoint {what} {shown} (HTTP {err.code}): check the URL, '
            f'{_LOCAL}.') from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        reason = getattr(err, 'reason', err)
        raise CheckpointError(
            f'cannot download checkpoint {shown} ({type(reason).__name__}): '
            f'check the network or proxy, {_LOCAL}.') from None


def _check_hash(path, url):
    match = _HASH_IN_NAME.search(osp.basename(path))
    if match is None:
        return
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(_CHUNK), b''):
            digest.update(block)
    actual, promised = digest.hexdigest(), match[1].lower()
    if not actual.startswith(promised):
        os.unlink(path)
        raise CheckpointError(
            f'checkpoint downloaded from {display_url(url)} has sha256 '
            f'{actual[:16]}..., not the {promised} its file name promises: '
            'the download was corrupted or the server holds another file; '
            'the cached copy was deleted, so running again downloads it '
            'anew.')


def download(url):
    """The local path of ``url``'s file, downloaded into the cache unless it
    is there; checked against the hash in its name. In a distributed run
    rank 0 downloads first, the others then read its copy."""
    path = cached_path(url)

    def fetch():
        _own_folder(path, url)
        remove_stale_temporaries(osp.dirname(path))
        if not osp.isfile(path):
            _fetch(url, path)
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
