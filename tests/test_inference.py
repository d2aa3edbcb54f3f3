"""``tools/inference.py``: predictions on an image folder from a trained
checkpoint, end to end.

The demo configs (GC ViT-XXT, 128 px) train one iteration on generated
data with ``tools/train.py``; the tool then predicts on a folder of images.
Its outputs are compared with an independent run of the same checkpoint
through mmdet's / mmseg's own inference functions (``inference_detector``,
``inference_model``), and its painted pictures must show the predictions.
Checkpoints go through mmgcvit's safe loader, which refuses non-finite
weights that mmengine would load.
"""
import json
import runpy
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO, last_checkpoint, run, run_tool, train
from mmengine.config import Config

from mmgcvit.checkpoint import load_checkpoint
from mmgcvit.dataset_tools import generate_ade20k, generate_coco

INFERENCE = REPO / 'tools' / 'inference.py'
DET_DEMO = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_demo-shapes.py'
SEG_DEMO = (REPO / 'configs/segmentation/'
            'upernet_gcvit-xxt_demo-ade20k-128x128.py')
NO_VALIDATION = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
                 'default_hooks.checkpoint.interval=1']
# Keep every detection: a model trained one iteration scores low.
RCNN_SCORE_THR = 'model.test_cfg.rcnn.score_thr'


def images_folder(source_dir, folder, count=2):
    """``count`` images of ``source_dir`` copied into ``folder``."""
    folder.mkdir()
    for image in sorted(source_dir.glob('*.jpg'))[:count]:
        shutil.copy(image, folder)
    return sorted(folder.iterdir())


@pytest.fixture(scope='module')
def det_run(tmp_path_factory):
    """``(checkpoint, images)``: the detection demo config trained one
    iteration (4 images, batch 4) on generated shapes."""
    root = tmp_path_factory.mktemp('inference_det')
    cfg = Config.fromfile(DET_DEMO)
    data = generate_coco(root / 'data', 4, 2, 128,
                         classes=cfg.metainfo['classes'])
    work_dir = root / 'work'
    train(DET_DEMO, work_dir, '--cfg-options',
          f'train_dataloader.dataset.data_root={data.data_root}/',
          'train_cfg.max_epochs=1', *NO_VALIDATION)
    return last_checkpoint(work_dir), images_folder(
        data.data_root / 'val2017', root / 'images')


@pytest.fixture(scope='module')
def seg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('inference_seg')
    cfg = Config.fromfile(SEG_DEMO)
    data = generate_ade20k(root / 'data', 4, 2, 128,
                           classes=cfg.metainfo['classes'])
    work_dir = root / 'work'
    train(SEG_DEMO, work_dir, '--cfg-options',
          f'train_dataloader.dataset.data_root={data.data_root}',
          'train_cfg.max_iters=1', *NO_VALIDATION)
    return last_checkpoint(work_dir), images_folder(
        data.data_root / 'images' / 'validation', root / 'images')


def infer(config, checkpoint, source, out_dir, *more):
    return run([sys.executable, INFERENCE, config, checkpoint, source,
                '--out-dir', out_dir, '--device', 'cpu', *more],
               cwd=out_dir.parent)


def assert_painted(out_dir, images):
    """One picture per image, of its size, that differs from it."""
    for image in images:
        original = cv2.imread(str(image))
        painted = cv2.imread(str(out_dir / 'vis' / image.name))
        assert painted is not None, f'no picture for {image.name}'
        assert painted.shape == original.shape
        assert np.abs(painted.astype(int) - original).mean() > 1.0


@pytest.mark.slow
def test_detection_folder(det_run, tmp_path):
    from mmdet.apis import inference_detector, init_detector
    checkpoint, images = det_run
    out_dir = tmp_path / 'out'
    log = infer(DET_DEMO, checkpoint, images[0].parent, out_dir,
                '--score-thr', '0', '--cfg-options', f'{RCNN_SCORE_THR}=0.0')
    assert f'{len(images)} images' in log, log[-3000:]
    assert sorted(p.name for p in (out_dir / 'preds').iterdir()) == [
        f'{image.stem}.json' for image in images]
    assert_painted(out_dir, images)

    # The same checkpoint through mmdet's own inference function.
    cfg = Config.fromfile(DET_DEMO)
    cfg.merge_from_dict({RCNN_SCORE_THR: 0.0})
    model = init_detector(cfg, device='cpu')
    model.load_state_dict(load_checkpoint(checkpoint)['state_dict'])
    for image in images:
        saved = json.loads((out_dir / 'preds' / f'{image.stem}.json')
                           .read_text())
        expected = inference_detector(model, str(image)).pred_instances
        assert len(saved['scores']) == len(expected.scores) > 0
        assert saved['labels'] == expected.labels.tolist()
        assert torch.allclose(torch.tensor(saved['scores']),
                              expected.scores, atol=1e-4)
        assert torch.allclose(torch.tensor(saved['bboxes']),
                              expected.bboxes, atol=1e-2)
        assert len(saved['masks']) == len(expected.masks)


@pytest.mark.slow
def test_segmentation_folder(seg_run, tmp_path):
    from mmseg.apis import inference_model, init_model
    checkpoint, images = seg_run
    out_dir = tmp_path / 'out'
    infer(SEG_DEMO, checkpoint, images[0].parent, out_dir)
    assert_painted(out_dir, images)

    model = init_model(str(SEG_DEMO), device='cpu')
    model.load_state_dict(load_checkpoint(checkpoint)['state_dict'])
    classes_seen = set()
    for image in images:
        saved = cv2.imread(str(out_dir / 'pred' / f'{image.stem}.png'),
                           cv2.IMREAD_UNCHANGED)
        expected = inference_model(model, str(image)).pred_sem_seg.data[0]
        assert saved.dtype == np.uint8
        assert saved.shape == cv2.imread(str(image)).shape[:2]
        assert np.array_equal(saved, expected.numpy())
        classes_seen.update(np.unique(saved).tolist())
    # Not one class everywhere, which any weights could give.
    assert len(classes_seen) > 1


def test_non_finite_weights_are_refused(tmp_path):
    """The checkpoint goes through mmgcvit's loader, not mmengine's (which
    would predict with the NaN weights)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(DET_DEMO)
    init_default_scope('mmdet')
    state = MODELS.build(cfg.model).state_dict()
    state['backbone.patch_embed.proj.weight'][0, 0, 0, 0] = float('nan')
    checkpoint = tmp_path / 'nan.pth'
    torch.save({'state_dict': state}, checkpoint)
    image = tmp_path / 'a.jpg'
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    rc, output = run_tool([INFERENCE, DET_DEMO, checkpoint, image,
                           '--out-dir', tmp_path / 'out', '--device', 'cpu'],
                          cwd=tmp_path)
    assert rc == 1 and 'Traceback' not in output, output[-3000:]
    assert output.strip().splitlines()[-1] == (
        f'inference.py: error: checkpoint {checkpoint} has NaN or Inf values '
        'in 1 weights (backbone.patch_embed.proj.weight): it comes from a '
        'diverged or damaged run; use an earlier checkpoint.')


def test_input_listing(tmp_path):
    """An image, or a folder's images in name order; else one line that
    names the input."""
    tool = runpy.run_path(str(INFERENCE))
    list_images, error = tool['list_images'], tool['PreflightError']
    for name in ('b.png', 'a.JPG', 'notes.txt'):
        (tmp_path / name).write_bytes(b'')
    (tmp_path / 'sub.jpg').mkdir()
    assert list_images(str(tmp_path)) == [
        str(tmp_path / 'a.JPG'), str(tmp_path / 'b.png')]
    assert list_images(str(tmp_path / 'b.png')) == [str(tmp_path / 'b.png')]
    missing, empty = tmp_path / 'missing.jpg', tmp_path / 'sub.jpg'
    with pytest.raises(error, match=f"input '{missing}' does not exist"):
        list_images(str(missing))
    with pytest.raises(error, match=f"input folder '{empty}' holds no "
                       r'images \(\.jpg, '):
        list_images(str(empty))


@pytest.mark.parametrize('case', ['no checkpoint',
                                  'score-thr for segmentation'])
def test_bad_arguments_in_one_line(case, tmp_path):
    image = tmp_path / 'a.jpg'
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    if case == 'no checkpoint':
        config, checkpoint, more = DET_DEMO, tmp_path / 'missing.pth', []
        expected = f"checkpoint '{checkpoint}' does not exist: fix the path"
    else:
        config, checkpoint = SEG_DEMO, tmp_path / 'w.pth'
        more = ['--score-thr', '0.5']
        expected = '--score-thr applies to detection configs only'
    rc, output = run_tool([INFERENCE, config, checkpoint, image, '--out-dir',
                           tmp_path / 'out', *more], cwd=tmp_path)
    assert rc != 0 and 'Traceback' not in output, output[-3000:]
    errors = [line for line in output.splitlines() if ': error: ' in line]
    assert len(errors) == 1 and expected in errors[0], output[-3000:]
