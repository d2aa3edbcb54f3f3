"""Where ``tools/install.sh`` gets mmcv 2.1.0 from, without the network.

``tools/misc/mmcv_wheel_index.py`` names OpenMMLab's index of prebuilt
wheels for a torch / CUDA / Python, or ``build``. The script's
``install_mmcv`` runs here with pip, the import check and the source build
replaced by recorders (a fake ``PYTHON`` whose ``-m pip`` only logs, so
nothing is installed): the order is offered wheels, OpenMMLab's wheel, a
build from source, and a prebuilt wheel that fails falls back to the build.
The build is what runs for the torch of this environment.
"""
import subprocess
import sys

import pytest
from helpers import REPO

INSTALL = REPO / 'tools' / 'install.sh'
INDEX_TOOL = REPO / 'tools' / 'misc' / 'mmcv_wheel_index.py'
OPENMMLAB = 'https://download.openmmlab.com/mmcv/dist'


def wheel_index(*args):
    result = subprocess.run([sys.executable, INDEX_TOOL, *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize('torch, cuda, python, expected', [
    ('2.1.2+cu121', '12.1', '3.10', f'{OPENMMLAB}/cu121/torch2.1/index.html'),
    ('2.1.0+cu118', '11.8', '3.8', f'{OPENMMLAB}/cu118/torch2.1/index.html'),
    ('2.1.2+cpu', None, '3.11', f'{OPENMMLAB}/cpu/torch2.1/index.html'),
    ('2.1.2', '12.1', '3.12', 'build'),  # no wheels for that Python
    ('2.1.2+cu117', '11.7', '3.10', 'build'),  # nor for that CUDA
    ('2.2.0+cu121', '12.1', '3.10', 'build'),  # nor for newer torch
    ('2.14.1', None, '3.11', 'build'),
])
def test_wheel_index(torch, cuda, python, expected):
    args = ['--torch', torch, '--python', python]
    if cuda:
        args += ['--cuda', cuda]
    assert wheel_index(*args) == expected


def test_wheel_index_of_the_installed_torch():
    """Without flags: the installed torch, described by itself."""
    import torch
    args = ['--torch', torch.__version__, '--python',
            '.'.join(map(str, sys.version_info[:2]))]
    if torch.version.cuda:
        args += ['--cuda', torch.version.cuda]
    assert wheel_index() == wheel_index(*args)


def test_cuda_without_torch_is_refused():
    result = subprocess.run([sys.executable, INDEX_TOOL, '--cuda', '12.1'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert 'pass --torch too' in result.stderr


# A PYTHON whose pip only records what it is asked (and fails when the
# arguments contain $PIP_FAILS_ON); anything else runs the real Python.
FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pip ]; then
  echo "pip ${*:3}" >> "$LOG"
  if [ -n "${PIP_FAILS_ON:-}" ] && [[ "$*" == *"$PIP_FAILS_ON"* ]]; then
    exit 1
  fi
  case "$3" in
    install) touch "$STATE/mmcv" ;;
    uninstall) rm -f "$STATE/mmcv" ;;
  esac
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""

# install.sh's install_mmcv, with mmcv's import check reading the fake
# pip's state, the source build recorded, and the installed torch replaced
# by $FAKE_TORCH ($FAKE_CUDA) under Python 3.10.
DRIVER = """
source "$INSTALL"
mmcv_ok() { [ -f "$STATE/mmcv" ]; }
build_mmcv() { echo build >> "$LOG"; }
if [ -n "${FAKE_TORCH:-}" ]; then
  torch_version() { echo "$FAKE_TORCH"; }
  mmcv_wheel_index() {
    "$PY" "$ROOT/tools/misc/mmcv_wheel_index.py" --torch "$FAKE_TORCH" \\
      ${FAKE_CUDA:+--cuda "$FAKE_CUDA"} --python 3.10
  }
fi
install_mmcv
"""


def install_mmcv(tmp_path, torch=None, cuda=None, pip_fails_on=None,
                 offered=None):
    """Run install_mmcv; return the pip / build steps it took."""
    fake = tmp_path / 'python'
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log, state = tmp_path / 'steps.log', tmp_path / 'state'
    state.mkdir()
    env = dict(PATH='/usr/bin:/bin', HOME=str(tmp_path),
               XDG_CACHE_HOME=str(tmp_path / 'cache'), PYTHON=str(fake),
               REAL_PYTHON=sys.executable, INSTALL=str(INSTALL),
               LOG=str(log), STATE=str(state), FAKE_TORCH=torch or '',
               FAKE_CUDA=cuda or '', PIP_FAILS_ON=pip_fails_on or '',
               MMGCVIT_WHEELS=str(offered or ''))
    result = subprocess.run(['bash', '-c', DRIVER], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = log.read_text().splitlines()
    return [step.split(' --find-links ')[-1].split()[0]
            if step.startswith('pip install') else step for step in steps]


def test_this_environment_builds(tmp_path):
    """The torch installed here has no OpenMMLab wheel: the build runs and
    its wheel is installed from the cache."""
    if wheel_index() != 'build':
        pytest.skip('OpenMMLab publishes an mmcv wheel for this torch')
    assert install_mmcv(tmp_path) == ['build', str(tmp_path / 'cache' /
                                                   'mmgcvit' / 'wheels')]


def test_openmmlab_wheel_first(tmp_path):
    assert install_mmcv(tmp_path, '2.1.2+cu121', '12.1') == [
        f'{OPENMMLAB}/cu121/torch2.1/index.html']


def test_failing_openmmlab_wheel_falls_back_to_the_build(tmp_path):
    cache = str(tmp_path / 'cache' / 'mmgcvit' / 'wheels')
    assert install_mmcv(tmp_path, '2.1.2+cu118', '11.8',
                        pip_fails_on=OPENMMLAB) == [
        f'{OPENMMLAB}/cu118/torch2.1/index.html', 'pip uninstall -y -q mmcv',
        'build', cache]


def test_no_openmmlab_wheel_builds(tmp_path):
    cache = str(tmp_path / 'cache' / 'mmgcvit' / 'wheels')
    assert install_mmcv(tmp_path, '2.14.1') == ['build', cache]


def test_offered_wheels_come_first(tmp_path):
    offered = tmp_path / 'wheels'
    offered.mkdir()
    (offered / 'mmcv-2.1.0-cp310-cp310-linux_x86_64.whl').write_bytes(b'')
    assert install_mmcv(tmp_path, '2.1.2+cu121', '12.1',
                        offered=offered) == [str(offered)]
