"""``tools/test.py`` runs a segmentation config with mmseg's own
``tools/test.py`` (the config's ``default_scope``): ``--out DIR`` is
mmseg's folder of prediction PNGs (mmdet's tool takes only a ``.pkl``). The
demo config (GC ViT-XXT, 128 px) is evaluated with randomly initialised
weights on a few generated images.
"""
import sys

import cv2
import pytest
from helpers import REPO, TOOLS, random_checkpoint, run
from mmengine.config import Config

from mmgcvit.dataset_tools import generate_ade20k

TEST = TOOLS / 'test.py'
SEG_DEMO = (REPO / 'configs/segmentation/'
            'upernet_gcvit-xxt_demo-ade20k-128x128.py')
NUM_IMAGES = 2


@pytest.fixture(scope='module')
def seg_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('test_outputs_seg')
    cfg = Config.fromfile(SEG_DEMO)
    data = generate_ade20k(root / 'data', 2, NUM_IMAGES, 128,
                           classes=cfg.metainfo['classes']).data_root
    return data, random_checkpoint(SEG_DEMO, root / 'random.pth'), [
        '--cfg-options', f'test_dataloader.dataset.data_root={data}']


def label_pngs(folder):
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            for p in sorted(folder.glob('*.png'))}


@pytest.mark.slow
def test_segmentation_out_folder(seg_setup, tmp_path):
    data, checkpoint, options = seg_setup
    run([sys.executable, TEST, SEG_DEMO, checkpoint, '--work-dir', 'work',
         '--out', 'preds', *options], cwd=tmp_path)
    images = sorted((data / 'images' / 'validation').iterdir())
    assert len(images) == NUM_IMAGES

    ours = label_pngs(tmp_path / 'preds')
    assert sorted(ours) == [f'{image.stem}.png' for image in images]
    for image in images:
        assert ours[f'{image.stem}.png'].shape == cv2.imread(
            str(image)).shape[:2]
