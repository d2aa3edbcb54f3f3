"""The one path by which mmgcvit, its tools and (through mmengine's
``CheckpointLoader``, for local paths and http(s) URLs) mmdet's and mmseg's
own tools read checkpoints: pickles through :mod:`.reader`, safetensors
through safetensors, URLs through :mod:`.download`'s cache. Failures raise
:class:`CheckpointError` with one line naming the problem and the fix.
"""
import os
import os.path as osp
import zipfile

import torch
from mmengine.runner import CheckpointLoader

from . import reader
from .download import CheckpointError, display_url, download, is_url

# The one opt-in to torch's full unpickler: the path or URL of a file the
# user trusts (unpickling it may run any code the file names).
TRUST_VARIABLE = 'MMGCVIT_TRUST_CHECKPOINT'
# Where trainers keep the weights. NVlabs' training script (timm's) saves
# them under `state_dict` and the EMA copy under `state_dict_ema`; its
# validate.py evaluates the plain `state_dict`, so that one is preferred.
WEIGHT_KEYS = ('state_dict', 'state_dict_ema', 'model', 'module')


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _forced_weights_only():
    # torch refuses a pickle_module when its environment forces weights_only
    return os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0').lower() in (
        '1', 'y', 'yes', 'true')


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
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f'checkpoint {source} is not a torch zip archive: it is '
            'truncated or corrupt, not a checkpoint, or written by torch < '
            '1.6; download or write it again (re-save old files with a '
            'current torch).')
    trusted = os.environ.get(TRUST_VARIABLE) == source
    try:
        if trusted or _forced_weights_only():
            return torch.load(path, map_location=map_location,
                              weights_only=not trusted)
        return reader.materialise(
            torch.load(path, map_location=map_location, weights_only=False,
                       pickle_module=reader))
    except reader.Refused as err:
        raise CheckpointError(
            f'checkpoint {source} holds {err}, which is not a tensor or '
            'plain value, so mmgcvit does not unpickle it (unpickling can '
            'run code the file names). If you trust where the file comes '
            f'from, allow this one file with {TRUST_VARIABLE}={source}.'
        ) from None
    except RecursionError:
        raise CheckpointError(
            f'checkpoint {source} nests its values too deeply to be a '
            'checkpoint: download or write it again.') from None
    except Exception as err:  # whatever a damaged archive makes torch raise
        raise CheckpointError(
            f'cannot read checkpoint {source} ({type(err).__name__}: '
            f'{_first_line(err)}): it is not a torch checkpoint, or it is '
            'truncated or corrupt; download or write it again.') from None


def load_checkpoint(source, map_location='cpu'):
    """The object stored in a local checkpoint file or at an ``http(s)``
    URL (``.pth``, ``.pth.tar``, ``.safetensors``), read safely."""
    source = os.fspath(source)
    if is_url(source):
        path = download(source)
        try:
            return _read(path, display_url(source), map_location)
        except BaseException:
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


def state_dict_of(checkpoint):
    """The weights inside a loaded checkpoint (under one of
    ``WEIGHT_KEYS``), else the checkpoint itself."""
    if isinstance(checkpoint, dict):
        for key in WEIGHT_KEYS:
            if isinstance(checkpoint.get(key), dict):
                return checkpoint[key]
    return checkpoint


def name_list(names, limit=5):
    """``names`` joined for a one-line message: the first ``limit``, the
    rest counted."""
    more = len(names) - limit
    return ', '.join(names[:limit]) + (f' and {more} more' if more > 0 else '')


def check_finite(state_dict, source):
    """Refuse weights holding NaN or Inf, naming the tensors, and tensors
    that claim more elements than their storage holds (zero-stride views:
    checking them would allocate what the file never held)."""
    tensors = {name: value for name, value in state_dict.items()
               if isinstance(value, torch.Tensor)}
    inflated = [name for name, t in tensors.items()
                if t.numel() * t.element_size() >
                t.untyped_storage().nbytes()]
    if inflated:
        raise CheckpointError(
            f'checkpoint {source} has {len(inflated)} tensors with more '
            f'elements than their stored data ({name_list(inflated)}): it is '
            'crafted or damaged; use another checkpoint.')
    bad = [name for name, t in tensors.items()
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(
            f'checkpoint {source} has NaN or Inf values in {len(bad)} '
            f'weights ({name_list(bad)}): it comes from a diverged or damaged '
            'run; use an earlier checkpoint.')


def load_from_mmgcvit(filename, map_location=None, *args, **kwargs):
    """mmengine ``CheckpointLoader`` scheme (logged as the "mmgcvit
    backend"): :func:`load_checkpoint`, non-finite weights refused."""
    checkpoint = load_checkpoint(filename, map_location)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f'checkpoint {display_url(filename)} holds a '
            f'{type(checkpoint).__name__}, not a dict of weights: pass a '
            'checkpoint written by tools/train.py, or save the weights as '
            "torch.save({'state_dict': weights}, PATH).")
    weights = state_dict_of(checkpoint)
    if isinstance(weights, dict):
        check_finite(weights, display_url(filename))
    return checkpoint


def register_loader():
    """Make mmengine's ``CheckpointLoader`` read local paths and http(s)
    URLs with :func:`load_from_mmgcvit` (idempotent)."""
    CheckpointLoader.register_scheme(
        prefixes=('', 'http://', 'https://'), loader=load_from_mmgcvit,
        force=True)
