"""Where ``tools/install.sh`` gets mmcv 2.1.0 from, without the network.

The script's ``install_mmcv`` runs with pip, the import check and the
source build replaced by recorders (a fake ``PYTHON`` whose ``-m pip``
only logs, so nothing is installed): the order is offered wheels,
OpenMMLab's index for the torch (2.1 only), a build from source, and a
prebuilt wheel that fails falls back to the build. The build is what runs
for the torch of this environment.
"""
import subprocess
import sys

import pytest
from helpers import REPO

OPENMMLAB = 'https://download.openmmlab.com/mmcv/dist'

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
# by "$FAKE_TORCH" ("<version> <CUDA version or None>") when set.
DRIVER = """
source "$INSTALL"
mmcv_ok() { [ -f "$STATE/mmcv" ]; }
build_mmcv() { echo build >> "$LOG"; }
if [ -n "$FAKE_TORCH" ]; then
  torch_build() { echo "$FAKE_TORCH"; }
fi
install_mmcv
"""


def install_mmcv(tmp_path, torch='', pip_fails_on='', offered=''):
    """Run install_mmcv; return the pip / build steps it took (for an
    install, the find-links source)."""
    fake = tmp_path / 'python'
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log, state = tmp_path / 'steps.log', tmp_path / 'state'
    state.mkdir()
    env = dict(PATH='/usr/bin:/bin', HOME=str(tmp_path),
               XDG_CACHE_HOME=str(tmp_path / 'cache'), PYTHON=str(fake),
               REAL_PYTHON=sys.executable, INSTALL=str(REPO / 'tools' /
                                                      'install.sh'),
               LOG=str(log), STATE=str(state), FAKE_TORCH=torch,
               PIP_FAILS_ON=pip_fails_on, MMGCVIT_WHEELS=str(offered))
    result = subprocess.run(['bash', '-c', DRIVER], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = log.read_text().splitlines()
    return [step.split(' --find-links ')[-1].split()[0]
            if step.startswith('pip install') else step for step in steps]


BUILD = ['build', '{cache}']


# The torch ('' for this environment's: 2.14, no wheels), pip failing on
# OpenMMLab's index or not, a folder of offered wheels or not -> steps.
@pytest.mark.parametrize('torch, pip_fails_on, offered, expected', [
    ('', '', False, BUILD),
    ('2.1.2+cu121 12.1', '', False,
     [f'{OPENMMLAB}/cu121/torch2.1/index.html']),
    ('2.1.0 None', '', False, [f'{OPENMMLAB}/cpu/torch2.1/index.html']),
    ('2.1.2+cu118 11.8', OPENMMLAB, False, [
        f'{OPENMMLAB}/cu118/torch2.1/index.html', 'pip uninstall -y -q mmcv',
        *BUILD]),
    ('2.2.0+cu121 12.1', '', False, BUILD),
    ('2.1.2+cu121 12.1', '', True, ['{offered}']),
])
def test_mmcv_source(tmp_path, torch, pip_fails_on, offered, expected):
    folder = tmp_path / 'wheels'
    if offered:
        folder.mkdir()
        (folder / 'mmcv-2.1.0-cp310-cp310-linux_x86_64.whl').write_bytes(b'')
    cache = tmp_path / 'cache' / 'mmgcvit' / 'wheels'
    steps = install_mmcv(tmp_path, torch, pip_fails_on,
                         folder if offered else '')
    assert steps == [step.format(cache=cache, offered=folder)
                     for step in expected]
