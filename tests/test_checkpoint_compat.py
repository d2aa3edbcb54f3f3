"""torch >= 2.6 ``weights_only`` loading of mmengine training checkpoints."""
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from helpers import requires_weights_only_default

import mmgcvit  # noqa: F401  (registers the allow-list)

pytestmark = requires_weights_only_default


def _runner_like_checkpoint():
    """The non-tensor objects mmengine's Runner pickles into a checkpoint."""
    hub = MessageHub.get_instance('test_checkpoint_compat')
    for loss in (1.5, 1.25, 1.0):
        hub.update_scalar('train/loss', np.float64(loss))
    hub.update_info('iter', 3)
    return dict(
        meta=dict(
            epoch=1,
            iter=3,
            seed=np.int64(0),
            dataset_meta=dict(classes=('a', 'b'), palette=[(1, 2, 3)])),
        state_dict={'w': torch.ones(2)},
        message_hub=hub.state_dict())


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    torch.save(_runner_like_checkpoint(), path)
    loaded = torch.load(path, weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.min() == 1.0 and buffer.current() == 1.0
    assert loaded['meta']['seed'] == 0
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))


def test_stock_torch_refuses_mmengine_checkpoint(tmp_path):
    """Without ``import mmgcvit`` the same file fails: the fix is needed."""
    path = tmp_path / 'epoch_1.pth'
    torch.save(_runner_like_checkpoint(), path)
    code = ('import torch, sys\n'
            'try:\n'
            f'    torch.load({str(path)!r})\n'
            'except Exception as e:\n'
            '    sys.exit("refused: " + str(e))\n')
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert 'Weights only load failed' in result.stderr


class _RunsCode:
    """A pickle that would call ``print`` when loaded."""

    def __reduce__(self):
        return (print, ('arbitrary code ran',))


def test_unknown_pickled_type_is_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'payload': _RunsCode()}, path)
    with pytest.raises(pickle.UnpicklingError, match='print'):
        torch.load(path, weights_only=True)


class _GetattrAbuse:
    """A pickle that uses ``getattr`` to reach something besides stats."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'payload': _GetattrAbuse()}, path)
    with pytest.raises(pickle.UnpicklingError, match='__init__'):
        torch.load(path, weights_only=True)
