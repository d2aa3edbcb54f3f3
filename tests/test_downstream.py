"""Downstream repos inherit our configs from the installed package.

The README's downstream configs (section "Use our configs in your own
repo") are written to a folder outside the repository and must load with
``_base_ = 'mmgcvit::...'``: here from the editable install of this
checkout, and in ``test_wheel_*`` from a wheel installed into a fresh
virtualenv, where they train for a few iterations on generated data with
the ``tools/train.py`` shipped in the wheel (the detector) and with mmseg's
own ``tools/train.py`` (the segmentor).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import timm
from helpers import (MMSEG_TRAIN, det_scaled_down, last_checkpoint, run,
                     seg_scaled_down)
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
SECTION = '## Use our configs in your own repo'
DET, SEG = 'my_mask-rcnn_gcvit-xxt_3cls.py', 'my_upernet_gcvit-xxt_3cls.py'
DINO = 'my_dino-4scale_gcvit-t_3cls.py'
# What they inherit.
DET_BASE = 'detection/mask-rcnn_gcvit-t_fpn_1x_coco.py'
SEG_BASE = 'segmentation/upernet_gcvit-t_8xb2-160k_ade20k-512x512.py'
DINO_BASE = 'detection/dino-4scale_gcvit-t_8xb2-12e_coco.py'
BASES = dict(det=DET_BASE, seg=SEG_BASE, dino=DINO_BASE)
COCO_CLASSES = ['person', 'bicycle', 'car']


def readme_configs():
    """``{file name: text}`` of the README's downstream config blocks: the
    ``python`` blocks of SECTION whose first line is ``# <name>.py``."""
    text = README.read_text()
    assert SECTION in text, f'README.md has no "{SECTION}" section'
    section = text.split(SECTION, 1)[1].split('\n## ', 1)[0]
    blocks = re.findall(r'```python\n# (\S+\.py)\b.*?\n(.*?)```', section,
                        re.S)
    configs = {name: f'# {name}\n{body}' for name, body in blocks}
    assert set(configs) == {DET, SEG, DINO}, sorted(configs)
    return configs


def write_configs(folder, coco_root, ade20k_root):
    """The README configs in ``folder``, their data roots pointing at the
    generated data."""
    folder.mkdir(parents=True, exist_ok=True)
    roots = {DET: f'{coco_root}/', SEG: ade20k_root, DINO: f'{coco_root}/'}
    for name, text in readme_configs().items():
        text, count = re.subn(r"^data_root = '[^']*'",
                              f'data_root = {roots[name]!r}', text,
                              flags=re.M)
        assert count == 1, f'{name} in README.md sets no data_root'
        (folder / name).write_text(text)
    return folder


def scopes(cfg):
    """Every ``_scope_`` value in a (nested) config dict."""
    found = set()

    def visit(node):
        if isinstance(node, dict):
            if '_scope_' in node:
                found.add(node['_scope_'])
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(cfg)
    return found


def check_downstream(out, coco_root, ade20k_root):
    """The README configs, loaded (as dicts), inherit our bases with their
    overrides."""
    det, seg, dino = out['det'], out['seg'], out['dino']
    xxt_weights = timm.models.get_pretrained_cfg('gcvit_xxtiny.in1k').url
    model = det['model']
    assert model['backbone']['type'] == 'GCViT'
    assert model['backbone']['arch'] == 'xxtiny'
    assert model['backbone']['init_cfg']['checkpoint'] == xxt_weights
    assert model['backbone']['window_size'] is not None
    assert model['roi_head']['bbox_head']['num_classes'] == 3
    assert model['roi_head']['mask_head']['num_classes'] == 3
    assert det['train_cfg']['max_epochs'] == 12
    assert det['val_evaluator']['ann_file'].startswith(coco_root)

    model = seg['model']
    assert model['backbone']['arch'] == 'xxtiny'
    assert model['backbone']['init_cfg']['checkpoint'] == xxt_weights
    assert model['decode_head']['num_classes'] == 3
    assert model['auxiliary_head']['num_classes'] == 3
    assert seg['default_scope'] == 'mmseg'
    assert seg['train_cfg']['max_iters'] == 160000

    model = dino['model']
    assert model['type'] == 'DINO' and model['backbone']['arch'] == 'tiny'
    assert model['bbox_head']['num_classes'] == 3
    assert dino['val_evaluator']['ann_file'].startswith(coco_root)

    for cfg, root, classes in ((det, f'{coco_root}/', COCO_CLASSES),
                               (dino, f'{coco_root}/', COCO_CLASSES),
                               (seg, ade20k_root, ['sky', 'floor', 'tree'])):
        assert cfg['custom_imports']['imports'] == [
            'mmgcvit', 'mmgcvit.engine']
        for split in ('train', 'val', 'test'):
            dataset = cfg[f'{split}_dataloader']['dataset']
            assert dataset['data_root'] == root
            assert dataset['metainfo']['classes'] == classes
        # mmgcvit is no registry scope: its bases must not tag dicts with it.
        assert 'mmgcvit' not in scopes(cfg), scopes(cfg)
    assert det['default_scope'] == dino['default_scope'] == 'mmdet'


# Loads the README configs in whatever interpreter runs it; prints them
# with the base files mmengine read for them.
LOAD = """
import json, os, sys
import mmgcvit, mmgcvit_config_hook
from mmengine.config import Config
out = dict(mmgcvit=mmgcvit.__file__, hook=mmgcvit_config_hook.__file__)
for key, name in zip(('det', 'seg', 'dino'), sys.argv[1:]):
    cfg = Config.fromfile(name)
    out[key] = cfg.to_dict()
    out[key + '_files'] = [line for line in cfg.text.splitlines()
                           if line.endswith('.py') and os.path.isfile(line)]
print(json.dumps(out, default=str))
"""


def base_file(files, name):
    """The one path in ``files`` ending with ``/name``."""
    found = [f for f in files if f.endswith('/' + name)]
    assert len(found) == 1, (name, files)
    return Path(found[0])


def load_in(python, folder, env=None):
    result = subprocess.run([str(python), '-c', LOAD, DET, SEG, DINO],
                            cwd=folder,
                            env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_config_hook_is_cheap_at_startup():
    """The ``.pth`` hook is installed here and imports nothing heavy."""
    code = ('import sys; print(sorted(m for m in ("mmgcvit_config_hook", '
            '"mmgcvit", "mmengine", "torch") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], cwd='/',
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['mmgcvit_config_hook']"], (
        f'{out!r}: reinstall mmgcvit (bash tools/install.sh, or '
        'pip install -e .) to get mmgcvit_config_hook.pth')


def test_editable_install_serves_checkout_configs(tmp_path, coco_root,
                                                  ade20k_root):
    folder = write_configs(tmp_path / 'my_repo', coco_root, ade20k_root)
    out = load_in(sys.executable, folder)
    check_downstream(out, coco_root, ade20k_root)
    # Editable: mmgcvit/.mim/configs are this checkout's configs.
    for key, name in BASES.items():
        assert base_file(out[key + '_files'], name).resolve() == (
            REPO / 'configs' / name)


def test_unknown_base_names_the_missing_file(tmp_path):
    config = tmp_path / 'typo.py'
    config.write_text(
        "_base_ = 'mmgcvit::detection/mask-rcnn_gcvit-t_fpn_2x_coco.py'\n")
    with pytest.raises(FileNotFoundError,
                       match=r'detection/mask-rcnn_gcvit-t_fpn_2x_coco\.py'):
        Config.fromfile(str(config))


@pytest.fixture(scope='module')
def fresh_venv(tmp_path_factory):
    """A virtualenv with the mmgcvit wheel built from this checkout.

    torch and the mm* packages come from the test's environment: a path
    ``.pth`` appends its site-packages, whose own ``.pth`` files (such as
    the editable mmgcvit finder) are not run, so mmgcvit is the wheel's.
    """
    tmp = tmp_path_factory.mktemp('downstream')
    src = tmp / 'src'
    # Build from a copy, so the build leaves nothing in the checkout.
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'build', 'dist', '*.egg-info', '__pycache__',
        '.mim', 'work_dirs', 'data', '.pytest_cache', 'tests'))
    dist = tmp / 'dist'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                    '--no-build-isolation', '--no-index', '-q', '-w',
                    str(dist), str(src)], check=True, capture_output=True)
    wheel, = dist.glob('mmgcvit-*.whl')
    venv = tmp / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(venv)], check=True)
    python = venv / 'bin' / 'python'
    subprocess.run([sys.executable, '-m', 'pip', '--python', str(python),
                    'install', '--no-deps', '--no-index', '-q', str(wheel)],
                   check=True, capture_output=True)
    site = subprocess.run(
        [str(python), '-c', 'import sysconfig; '
         'print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / 'zz_test_environment.pth').write_text(
        sysconfig.get_paths()['purelib'] + '\n')
    return dict(python=python, wheel=wheel, site=Path(site), tmp=tmp)


@pytest.fixture(scope='module')
def venv_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    return dict(env, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')


@pytest.mark.slow
def test_wheel_ships_configs_tools_and_hook(fresh_venv):
    names = set(zipfile.ZipFile(fresh_venv['wheel']).namelist())
    for name in ('mmgcvit_config_hook.pth', 'mmgcvit_config_hook.py',
                 'mmgcvit/.mim/model-index.yml',
                 'mmgcvit/.mim/configs/detection/metafile.yml',
                 'mmgcvit/.mim/configs/segmentation/metafile.yml',
                 'mmgcvit/.mim/configs/detection/'
                 'mask-rcnn_gcvit-t_fpn_1x_coco.py',
                 'mmgcvit/.mim/tools/train.py',
                 'mmgcvit/.mim/tools/_upstream.py',
                 'mmgcvit/.mim/tools/dist_train.sh'):
        assert name in names, name


@pytest.fixture(scope='module')
def downstream(fresh_venv, venv_env, coco_root, ade20k_root):
    """The README configs in a folder of their own, loaded by the fresh
    virtualenv's Python."""
    folder = write_configs(fresh_venv['tmp'] / 'my_repo', coco_root,
                           ade20k_root)
    out = load_in(fresh_venv['python'], folder, venv_env)
    return folder, out


@pytest.mark.slow
def test_wheel_configs_load_from_installed_package(downstream, fresh_venv,
                                                   coco_root, ade20k_root):
    _, out = downstream
    site = fresh_venv['site']
    assert Path(out['mmgcvit']).is_relative_to(site), out['mmgcvit']
    assert Path(out['hook']).is_relative_to(site), out['hook']
    for key, name in BASES.items():
        assert base_file(out[key + '_files'], name) == (
            site / 'mmgcvit/.mim/configs' / name)
    check_downstream(out, coco_root, ade20k_root)


@pytest.mark.slow
def test_wheel_trains_downstream_detector(downstream, fresh_venv, venv_env,
                                          coco_root, tmp_path):
    folder, _ = downstream
    train = fresh_venv['site'] / 'mmgcvit/.mim/tools/train.py'
    work_dir = tmp_path / 'work'
    log = run([fresh_venv['python'], train, DET, '--work-dir', work_dir,
               *det_scaled_down(coco_root)], folder, env=venv_env)
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', log), log[-3000:]
    assert 'coco/segm_mAP' in log, log[-3000:]
    assert last_checkpoint(work_dir) == work_dir / 'epoch_1.pth'


@pytest.mark.slow
def test_wheel_trains_downstream_segmentor(downstream, fresh_venv, venv_env,
                                           ade20k_root, tmp_path):
    folder, _ = downstream
    work_dir = tmp_path / 'work'
    log = run([fresh_venv['python'], MMSEG_TRAIN, SEG, '--work-dir',
               work_dir, *seg_scaled_down(ade20k_root)], folder,
              env=venv_env)
    assert 'mIoU' in log, log[-3000:]
    assert last_checkpoint(work_dir).name.startswith('iter_')
