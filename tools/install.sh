#!/usr/bin/env bash
# One-command set-up for mmgcvit: run it inside the virtualenv / conda env you will use.
#
#   bash tools/install.sh
#
# Environment:
#   MMGCVIT_WHEELS=DIR   folder of prebuilt wheels (e.g. an mmcv 2.1.0 built with ops for your
#                        torch/Python); used when one matches.
#   PYTHON=python3       interpreter to install into (default: the `python` on PATH).
#   MAX_JOBS=N           parallel compile jobs for the mmcv source build (default: nproc).
#
# mmcv 2.1.0 with ops comes from, in this order: MMGCVIT_WHEELS; the wheels this script built
# before (~/.cache/mmgcvit/wheels); OpenMMLab's prebuilt wheels (torch 2.1 with CUDA 11.8 / 12.1 or
# CPU); otherwise a build from source.
#
# Idempotent: on a ready environment it only verifies and exits.
set -euo pipefail

PY=${PYTHON:-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=${MMGCVIT_WHEELS:-}
MMCV_VERSION=2.1.0
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/mmgcvit
START=$SECONDS

say() { printf '[install %4ds] %s\n' "$((SECONDS - START))" "$*"; }
# Every install re-states setuptools<81: torch and others pull in the newest setuptools otherwise.
pipi() { "$PY" -m pip install --disable-pip-version-check "$@" 'setuptools<81'; }
# have REQ...: pip finds every requirement (a spec, or -r FILE) installed, without an index.
have() { "$PY" -m pip install --disable-pip-version-check --dry-run --no-index -q "$@" >/dev/null 2>&1; }

mmcv_ok() {
  "$PY" -c "import mmcv; assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__; from mmcv.ops import nms, RoIAlign" >/dev/null 2>&1
}

# 3. mmcv 2.1.0 with compiled ops (mmdet 3.3 / mmseg 1.2 refuse mmcv >= 2.2; PyPI has only its sdist).
build_mmcv() {
  local work log
  work=$(mktemp -d)
  log="$work/build.log"
  say "no prebuilt mmcv $MMCV_VERSION for this torch/Python: building it with compiled ops from source (about 20 min on 2 cores); log: $log"
  (cd "$work" && "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION")
  tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
  local src="$work/mmcv-$MMCV_VERSION"
  # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
  if "$PY" -c 'import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if v >= (2, 14) else 1)'; then
    grep -q -- "-std=c++17" "$src/setup.py" || { say "error: mmcv setup.py has no -std=c++17 flag to switch"; exit 1; }
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  fi
  mkdir -p "$CACHE/wheels"
  # Ninja prints one "[k/N]" line per compiled source: show those as progress, keep the rest in the log.
  if ! (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$PY" -m pip wheel -v --disable-pip-version-check --no-deps --no-build-isolation -w "$CACHE/wheels" . 2>&1 \
        | tee "$log" | { grep --line-buffered -oE '^ *\[[0-9]+/[0-9]+\]' || true; } | sed -u 's/^ */[mmcv build] compiled /'); then
    say "error: mmcv build failed; last lines of $log:"; tail -n 30 "$log"; exit 1
  fi
  ls "$CACHE"/wheels/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1 || { say "error: mmcv build produced no wheel; see $log"; tail -n 30 "$log"; exit 1; }
  rm -rf "$work"
}

# try_mmcv_wheel FIND_LINKS: install mmcv from FIND_LINKS (a folder or an index URL); true when it
# imports with its ops, else it is uninstalled again.
try_mmcv_wheel() {
  say "trying the prebuilt mmcv $MMCV_VERSION of $1"
  if pipi --find-links "$1" --prefer-binary --only-binary mmcv "mmcv==$MMCV_VERSION" && mmcv_ok; then
    return 0
  fi
  say "the mmcv of $1 does not work with this torch/Python; uninstalling it"
  "$PY" -m pip uninstall -y -q mmcv || true
  return 1
}

# "<version> <CUDA version or None>" of the installed torch.
torch_build() { "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'; }

# OpenMMLab's find-links index of prebuilt mmcv for the installed torch (the one `mim` picks), or
# "build": OpenMMLab built mmcv 2.1.0 for torch 2.1 only (CPU, CUDA 11.8 and 12.1, Python 3.8-3.11;
# where pip finds no wheel in it, try_mmcv_wheel fails and the source build follows).
mmcv_wheel_index() {
  local version cuda device=cpu
  read -r version cuda <<< "$(torch_build)"
  if [[ "$version" != 2.1.* ]]; then
    echo build
    return
  fi
  [ "$cuda" = None ] || device=cu${cuda//./}
  echo "https://download.openmmlab.com/mmcv/dist/$device/torch2.1/index.html"
}

install_mmcv() {
  if mmcv_ok; then
    say "mmcv $MMCV_VERSION with ops already installed"
    return
  fi
  local source
  # The folders that hold an mmcv wheel, then OpenMMLab's index unless it has none for this torch.
  for source in "$WHEELS" "$CACHE/wheels" "$(mmcv_wheel_index)"; do
    if ls "$source"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1 || [[ "$source" == https://* ]]; then
      try_mmcv_wheel "$source" && break
    fi
  done
  if ! mmcv_ok; then
    build_mmcv
    pipi --find-links "$CACHE/wheels" --only-binary mmcv "mmcv==$MMCV_VERSION"
  fi
  mmcv_ok || { say "error: mmcv installed but 'from mmcv.ops import nms, RoIAlign' fails"; "$PY" -c 'from mmcv.ops import nms, RoIAlign'; exit 1; }
  say "mmcv $MMCV_VERSION with ops: OK"
}

main() {
  say "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  if [ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
    say "note: no virtualenv/conda env is active; installing into this interpreter's site-packages"
  fi

  # 1. Build tooling. setuptools<81 keeps pkg_resources, which mmcv's setup.py and mmengine import.
  if ! have 'setuptools<81' wheel ninja packaging; then
    say "installing build tooling (setuptools<81, wheel, ninja)"
    pipi -q wheel ninja packaging
  fi

  # 2. torch: keep whatever build is installed (clusters bring their own CUDA build).
  if "$PY" -c 'import torch, torchvision' >/dev/null 2>&1; then
    say "torch $(torch_build | cut -d" " -f1) already installed: keeping it"
  else
    say "installing torch 2.14.1 + torchvision 0.29.1"
    pipi torch==2.14.1 torchvision==0.29.1
  fi

  install_mmcv

  # 4. mmdet, mmseg, pycocotools, test tools, the ONNX export's runtime (the [deploy] extra, which
  #    the tests check) and mmgcvit itself (editable, so the checkout is what runs),
  #    with its config hook (.pth, run at start-up) and mmgcvit/.mim linked to the checkout.
  if have -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" -r "$ROOT/requirements/deploy.txt" \
     && "$PY" -c "import sys, os; hook = 'mmgcvit_config_hook' in sys.modules; import mmgcvit; pkg = os.path.dirname(os.path.realpath(mmgcvit.__file__)); sys.exit(0 if hook and pkg == os.path.realpath('$ROOT/mmgcvit') and os.path.isdir(pkg + '/.mim/configs') else 1)" >/dev/null 2>&1; then
    say "mmdet, mmseg, test tools and mmgcvit already installed"
  else
    say "installing mmdet, mmsegmentation, pycocotools, test tools, onnx/onnxruntime and mmgcvit (editable)"
    pipi -e "$ROOT[tests,deploy]"
  fi

  "$PY" -c "import sys; assert 'mmgcvit_config_hook' in sys.modules, 'mmgcvit_config_hook.pth did not run at start-up: mmgcvit:: config bases will not resolve; run pip install -e $ROOT again'
import mmgcvit, mmdet, mmseg; from mmcv.ops import nms, RoIAlign; print('mmgcvit', mmgcvit.__version__, '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__)"
  say "done"
}

# Sourced (tests): define the functions only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
