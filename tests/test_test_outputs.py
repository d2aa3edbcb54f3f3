"""``tools/test.py``'s ``--show-dir`` and ``--out`` behave as mmdet's and
mmseg's.

A relative ``--show-dir`` is made in the run's timestamped log folder
(``work_dir/<timestamp>/DIR``, as both upstream tools document), never in
the current folder. For a segmentation config ``--out DIR`` is a folder of
prediction PNGs, one per test image, identical to what mmseg's own
``tools/test.py --out`` writes for the same checkpoint. The demo configs
(GC ViT-XXT, 128 px) are evaluated with randomly initialised weights on a
few generated images.
"""
import sys
from pathlib import Path

import cv2
import mmseg
import numpy as np
import pytest
import torch
from helpers import REPO, run
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings

from mmgcvit.dataset_tools import generate_ade20k, generate_coco

TEST = REPO / 'tools' / 'test.py'
MMSEG_TEST = Path(mmseg.__file__).parent / '.mim/tools/test.py'
DET_DEMO = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_demo-shapes.py'
SEG_DEMO = (REPO / 'configs/segmentation/'
            'upernet_gcvit-xxt_demo-ade20k-128x128.py')
NUM_IMAGES = 2


def random_checkpoint(config, path):
    """The config's model, freshly initialised, saved as a checkpoint."""
    cfg = Config.fromfile(config)
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': dict(cfg.metainfo)}}, path)
    return path


def only_log_folder(work_dir):
    folders = [p for p in work_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.mark.slow
def test_detection_show_dir_is_in_the_log_folder(tmp_path):
    cfg = Config.fromfile(DET_DEMO)
    data = generate_coco(tmp_path / 'data', 2, NUM_IMAGES, 128,
                         classes=cfg.metainfo['classes']).data_root
    checkpoint = random_checkpoint(DET_DEMO, tmp_path / 'random.pth')
    run([sys.executable, TEST, DET_DEMO, checkpoint, '--work-dir', 'work',
         '--show-dir', 'vis', '--cfg-options',
         f'test_dataloader.dataset.data_root={data}/',
         f'test_evaluator.ann_file={data}/annotations/instances_val2017.json',
         'model.test_cfg.rcnn.score_thr=0.0'], cwd=tmp_path)
    pictures = sorted(p.name for p in (
        only_log_folder(tmp_path / 'work') / 'vis').iterdir())
    assert pictures == sorted(p.name for p in (data / 'val2017').iterdir())
    assert not (tmp_path / 'vis').exists()


@pytest.fixture(scope='module')
def seg_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('test_outputs_seg')
    cfg = Config.fromfile(SEG_DEMO)
    data = generate_ade20k(root / 'data', 2, NUM_IMAGES, 128,
                           classes=cfg.metainfo['classes']).data_root
    # The train split too: mmseg's visualization hook asks for runner.iter,
    # which builds the train loop and its dataloader.
    return data, random_checkpoint(SEG_DEMO, root / 'random.pth'), [
        '--cfg-options', f'test_dataloader.dataset.data_root={data}',
        f'train_dataloader.dataset.data_root={data}']


def label_pngs(folder):
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            for p in sorted(folder.glob('*.png'))}


@pytest.mark.slow
def test_segmentation_show_dir_and_out_folder(seg_setup, tmp_path):
    data, checkpoint, options = seg_setup
    run([sys.executable, TEST, SEG_DEMO, checkpoint, '--work-dir', 'work',
         '--show-dir', 'vis', '--out', 'preds', *options], cwd=tmp_path)
    images = sorted((data / 'images' / 'validation').iterdir())
    assert len(images) == NUM_IMAGES
    painted = list((only_log_folder(tmp_path / 'work') / 'vis').iterdir())
    assert len(painted) == NUM_IMAGES
    for image in images:
        assert any(image.name in p.name for p in painted), painted
    assert not (tmp_path / 'vis').exists()

    ours = label_pngs(tmp_path / 'preds')
    assert sorted(ours) == [f'{image.stem}.png' for image in images]
    for image in images:
        assert ours[f'{image.stem}.png'].shape == cv2.imread(
            str(image)).shape[:2]
    # mmseg's own tool, same checkpoint and data: the same files.
    run([sys.executable, MMSEG_TEST, SEG_DEMO, checkpoint, '--work-dir',
         'upstream_work', '--out', 'upstream_preds', *options], cwd=tmp_path)
    upstream = label_pngs(tmp_path / 'upstream_preds')
    assert sorted(upstream) == sorted(ours)
    for name, labels in ours.items():
        assert np.array_equal(labels, upstream[name]), name
