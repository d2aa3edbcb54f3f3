"""One line, instead of a bare cv2 / mmcv assertion, for an image that a
run cannot load.

mmcv's ``LoadImageFromFile`` fails on a missing file with the file
backend's error, on an empty one with OpenCV's ``!buf.empty()`` assertion
and on a truncated or corrupt one with ``failed to load image`` (OpenCV
returns None), mid-epoch, in a traceback through the DataLoader.
``one_line_image_errors`` makes it raise ``ImageLoadError``: the file, what
is wrong with it and the dataset checker's command, which finds every such
file at once.
"""
import functools
import os.path as osp
from contextlib import contextmanager

from mmcv.transforms import LoadImageFromFile

from ..dataset_tools.check import split_dataset_cfgs
from .preflight import DataError, checker_command


class ImageLoadError(DataError):
    """An image of the dataset cannot be loaded during a run."""

    def __init__(self, message):
        # torch re-raises an exception of a DataLoader worker process as
        # ``type(error)(text)``, the text holding the worker's whole
        # traceback; its last line of this class is the one to show.
        if message.startswith(f'Caught {type(self).__name__} '):
            prefix = f'{type(self).__module__}.{type(self).__qualname__}: '
            message = next((line[len(prefix):] for line in reversed(
                message.splitlines()) if line.startswith(prefix)), message)
        super().__init__(message)


def _problem(path, error):
    if '://' in path:  # a remote file backend: in its own words
        lines = str(error).strip().splitlines()
        return f'{type(error).__name__}: {lines[0] if lines else ""}'
    if not osp.exists(path):
        return 'it does not exist'
    if isinstance(error, OSError):
        return f'it cannot be read ({error})'
    if osp.getsize(path) == 0:
        return 'it is empty (0 bytes)'
    return 'it cannot be decoded (truncated or corrupt)'


def _split_of(path, cfg):
    """The split whose image folder holds ``path`` (train if none does)."""
    path = osp.abspath(path)
    for split, ds_cfg, _ in split_dataset_cfgs(cfg):
        prefix = ds_cfg.get('data_prefix') or {}
        folder = osp.join(ds_cfg.get('data_root') or '',
                          prefix.get('img', prefix.get('img_path', '')))
        if path.startswith(osp.join(osp.abspath(folder), '')):
            return split
    return 'train'


@contextmanager
def one_line_image_errors(cfg):
    """Within: an image that ``LoadImageFromFile`` cannot load raises
    ``ImageLoadError`` naming the file, the problem and
    ``python tools/misc/check_dataset.py CONFIG`` for ``cfg`` (the run's
    config). mmcv's transform is restored on leaving.

    DataLoader workers started within by forking (mmengine's default
    ``mp_start_method``) inherit the change; spawned workers re-import mmcv
    and report mmcv's own error.
    """
    original = LoadImageFromFile.transform

    @functools.wraps(original)
    def transform(self, results):
        try:
            return original(self, results)
        except Exception as error:  # any failure to read or decode it
            path = str(results['img_path'])
            raise ImageLoadError(
                f'cannot load image {path}: {_problem(path, error)}; fix or '
                'remove it, and find every such image with: '
                f'{checker_command(cfg, _split_of(path, cfg))}') from error

    LoadImageFromFile.transform = transform
    try:
        yield
    finally:
        LoadImageFromFile.transform = original
