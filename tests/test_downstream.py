"""Downstream repos inherit our configs from the installed package.

The README's downstream configs (section "Use our configs in your own
repo"), written to a folder outside the checkout, load through
``_base_ = 'mmgcvit::...'``: from the editable install of this checkout,
and in ``test_wheel_*`` from a wheel installed into a fresh virtualenv,
where copies of the custom-data templates made outside the checkout and
edited as docs/custom_data.md says train a few iterations on generated
data with the ``tools/train.py`` shipped in the wheel (the detector) and
with mmseg's own (the segmentor).
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
from helpers import (MMSEG_TRAIN, REPO, det_scaled_down, last_checkpoint,
                     run, seg_scaled_down)

from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.dataset_tools import generate_custom_seg

SECTION = '## Use our configs in your own repo'
DET, SEG = 'my_mask-rcnn_gcvit-xxt_3cls.py', 'my_upernet_gcvit-xxt_3cls.py'
DINO = 'my_dino-4scale_gcvit-t_3cls.py'
# What they inherit.
BASES = dict(det='detection/mask-rcnn_gcvit-t_fpn_1x_coco.py',
             seg='segmentation/upernet_gcvit-t_8xb2-160k_ade20k-512x512.py',
             dino='detection/dino-4scale_gcvit-t_8xb2-12e_coco.py')
COCO_CLASSES = ('person', 'bicycle', 'car')
DET_TEMPLATE = REPO / 'configs/detection/mask-rcnn_gcvit-t_fpn_custom-coco.py'
SEG_TEMPLATE = REPO / 'configs/segmentation/upernet_gcvit-t_custom-seg.py'
SEG_CLASSES = ('widget', 'gadget', 'gizmo')  # generate_custom_seg's


def readme_configs():
    """``{file name: text}`` of the README's downstream config blocks: the
    ``python`` blocks of SECTION whose first line is ``# <name>.py``."""
    text = (REPO / 'README.md').read_text()
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


def check_downstream(out, coco_root, ade20k_root):
    """The README configs, loaded (as dicts), are our bases with their
    variant, classes and data."""
    det, seg, dino = out['det'], out['seg'], out['dino']
    xxt_weights = timm.models.get_pretrained_cfg('gcvit_xxtiny.in1k').url
    for cfg in (det, seg):
        assert cfg['model']['backbone']['arch'] == 'xxtiny'
        assert cfg['model']['backbone']['init_cfg']['checkpoint'] == \
            xxt_weights
    assert det['model']['roi_head']['mask_head']['num_classes'] == 3
    assert seg['model']['auxiliary_head']['num_classes'] == 3
    assert (dino['model']['type'], dino['model']['bbox_head']['num_classes'],
            dino['model']['backbone']['arch']) == ('DINO', 3, 'tiny')
    for cfg, root, classes in ((det, f'{coco_root}/', COCO_CLASSES),
                               (dino, f'{coco_root}/', COCO_CLASSES),
                               (seg, ade20k_root, ('sky', 'floor', 'tree'))):
        assert cfg['custom_imports']['imports'] == [
            'mmgcvit', 'mmgcvit.engine']
        for split in ('train', 'val', 'test'):
            dataset = cfg[f'{split}_dataloader']['dataset']
            assert dataset['data_root'] == root
            assert dataset['metainfo']['classes'] == list(classes)
        # mmgcvit is no registry scope: its bases must not tag dicts with it.
        assert '"_scope_": "mmgcvit"' not in json.dumps(cfg)
    assert det['val_evaluator']['ann_file'].startswith(coco_root)
    assert (det['default_scope'], dino['default_scope'],
            seg['default_scope']) == ('mmdet', 'mmdet', 'mmseg')


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


def load_in(python, folder, env=None):
    """The README configs in ``folder`` as ``python`` loads them, each with
    the file of the base it inherits."""
    output = run([python, '-c', LOAD, DET, SEG, DINO], folder, env=env)
    out = json.loads(re.search(r'^\{"mmgcvit".*$', output, re.M)[0])
    for key, name in BASES.items():
        found = [f for f in out[key + '_files'] if f.endswith('/' + name)]
        assert len(found) == 1, (name, out[key + '_files'])
        out[key + '_base'] = Path(found[0])
    return out


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
        assert out[key + '_base'].resolve() == REPO / 'configs' / name


def test_dino_doc_shows_the_readme_config():
    block, = re.findall(r'```python\n# my_dino_gcvit-t_3cls\.py\b.*?\n'
                        r'(.*?)```', (REPO / 'docs/dino.md').read_text(),
                        re.S)
    assert block == readme_configs()[DINO].split('\n', 1)[1]


def copy_template(template, folder, edits):
    """``template`` copied into ``folder`` with ``edits`` (old text -> new
    text, wherever it occurs) applied, as a user edits their copy."""
    assert not folder.resolve().is_relative_to(REPO)
    folder.mkdir(parents=True, exist_ok=True)
    text = template.read_text()
    for old, new in edits.items():
        assert old in text, f'{template.name}: {old!r}'
        text = text.replace(old, new)
    path = folder / f'my_{template.name}'
    path.write_text(text)
    return path


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
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    return dict(python=python, wheel=wheel, site=Path(site),
                env=dict(env, OMP_NUM_THREADS='1'))


@pytest.mark.slow
def test_wheel_configs_load_from_installed_package(fresh_venv, tmp_path,
                                                   coco_root, ade20k_root):
    names = set(zipfile.ZipFile(fresh_venv['wheel']).namelist())
    assert {'mmgcvit_config_hook.pth', 'mmgcvit/.mim/model-index.yml',
            'mmgcvit/.mim/configs/detection/metafile.yml',
            'mmgcvit/.mim/configs/segmentation/metafile.yml',
            'mmgcvit/.mim/tools/dist_train.sh'} <= names
    folder = write_configs(tmp_path / 'my_repo', coco_root, ade20k_root)
    out = load_in(fresh_venv['python'], folder, fresh_venv['env'])
    site = fresh_venv['site']
    assert Path(out['mmgcvit']).is_relative_to(site), out['mmgcvit']
    assert Path(out['hook']).is_relative_to(site), out['hook']
    for key, name in BASES.items():
        assert out[key + '_base'] == site / 'mmgcvit/.mim/configs' / name
    check_downstream(out, coco_root, ade20k_root)


def trained_heads(work_dir):
    state = load_checkpoint(last_checkpoint(work_dir))['state_dict']
    return {k: v.shape[0] for k, v in state.items()
            if k.endswith(('fc_cls.weight', 'conv_logits.weight',
                           'conv_seg.weight'))}


@pytest.mark.slow
def test_wheel_trains_edited_detection_template(fresh_venv, tmp_path,
                                                coco_root):
    """The template's classes, root and file names set for the generated
    COCO data; trained by the wheel's tools/train.py from the copy's
    folder."""
    folder = tmp_path / 'my_project'
    config = copy_template(DET_TEMPLATE, folder, {
        "classes = ('scratch', 'dent', 'crack')": f'classes = {COCO_CLASSES}',
        "data_root = 'data/my_dataset/'": f'data_root = {coco_root + "/"!r}',
        "'annotations/train.json'": "'annotations/instances_train2017.json'",
        "'annotations/val.json'": "'annotations/instances_val2017.json'",
        "img='train/'": "img='train2017/'",
        "img='val/'": "img='val2017/'",
    })
    train = fresh_venv['site'] / 'mmgcvit/.mim/tools/train.py'
    log = run([fresh_venv['python'], train, config.name, '--work-dir', 'work',
               *det_scaled_down(coco_root, 1, 'model.backbone.arch=xxtiny')],
              folder, env=fresh_venv['env'])
    assert re.search(r'Epoch\(train\) *\[1\]\[2/2\]', log), log[-3000:]
    assert 'coco/segm_mAP' in log, log[-3000:]
    # + background; the heads follow the copy's classes.
    assert trained_heads(folder / 'work') == {
        'roi_head.bbox_head.fc_cls.weight': len(COCO_CLASSES) + 1,
        'roi_head.mask_head.conv_logits.weight': len(COCO_CLASSES)}


@pytest.mark.slow
def test_wheel_trains_edited_segmentation_template(fresh_venv, tmp_path):
    data_root = generate_custom_seg(
        tmp_path / 'my_seg_dataset', num_train=4, num_val=4, img_size=128,
        classes=SEG_CLASSES).data_root
    folder = tmp_path / 'my_project'
    config = copy_template(SEG_TEMPLATE, folder, {
        "classes = ('background', 'crack')": f'classes = {SEG_CLASSES}',
        'palette = [[0, 0, 0], [255, 64, 0]]':
        'palette = [[220, 40, 40], [40, 220, 40], [40, 40, 220]]',
        "data_root = 'data/my_seg_dataset/'":
        f'data_root = {str(data_root)!r}',
    })
    log = run([fresh_venv['python'], MMSEG_TRAIN, config.name, '--work-dir',
               'work', *seg_scaled_down(data_root),
               'model.backbone.arch=xxtiny'], folder, env=fresh_venv['env'])
    assert 'mIoU' in log, log[-3000:]
    assert trained_heads(folder / 'work') == {
        'decode_head.conv_seg.weight': len(SEG_CLASSES),
        'auxiliary_head.conv_seg.weight': len(SEG_CLASSES)}
