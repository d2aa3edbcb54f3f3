"""``tools/inference.py``: the demo configs' models, freshly initialised,
predict on generated images as mmdet's / mmseg's own inference functions
do, and paint them; unusable images and checkpoints that do not fit the
model end the tool in one line."""
import json
import runpy
import shutil
import struct
import sys
import zlib
from argparse import Namespace

import cv2
import numpy as np
import pytest
import torch
from helpers import (REPO, assert_one_line_error, random_checkpoint, run,
                     run_tool)
from mmengine.config import Config
from PIL import Image

from mmgcvit.checkpoint import CheckpointError, load_checkpoint
from mmgcvit.dataset_tools import generate_ade20k, generate_coco
from mmgcvit.models import GCViT

INFERENCE = REPO / 'tools' / 'inference.py'
TOOL = runpy.run_path(str(INFERENCE))
DET_DEMO = REPO / 'configs/detection/mask-rcnn_gcvit-xxt_fpn_demo-shapes.py'
SEG_DEMO = (REPO / 'configs/segmentation/'
            'upernet_gcvit-xxt_demo-ade20k-128x128.py')
# Keep every detection: a model with random weights scores low.
RCNN_SCORE_THR = 'model.test_cfg.rcnn.score_thr'


def demo_run(root, config, generate, subfolder, **dataset_meta):
    """``(checkpoint, images)``: ``config``'s model, randomly initialised,
    and a folder of two images ``generate`` made."""
    data = generate(root / 'data', 1, 2, 128,
                    classes=Config.fromfile(config).metainfo['classes'])
    folder = root / 'images'
    folder.mkdir()
    for image in sorted((data.data_root / subfolder).glob('*.jpg'))[:2]:
        shutil.copy(image, folder)
    return (random_checkpoint(config, root / 'random.pth', **dataset_meta),
            sorted(folder.iterdir()))


@pytest.fixture(scope='module')
def det_run(tmp_path_factory):
    return demo_run(tmp_path_factory.mktemp('inference_det'), DET_DEMO,
                    generate_coco, 'val2017')


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
def test_segmentation_folder(tmp_path):
    from mmseg.apis import inference_model, init_model
    # A runner saves the dataset's palette too; mmseg's painting needs it.
    checkpoint, images = demo_run(
        tmp_path, SEG_DEMO, generate_ade20k, 'images/validation',
        palette=[[120, 120, 120], [80, 50, 50], [4, 200, 3]])
    out_dir = tmp_path / 'out'
    infer(SEG_DEMO, checkpoint, images[0].parent, out_dir)
    assert_painted(out_dir, images)

    model = init_model(str(SEG_DEMO), device='cpu')
    model.load_state_dict(load_checkpoint(checkpoint)['state_dict'])
    classes_seen = set()
    # mmseg's inferencer numbers its class maps in the input's order.
    for i, image in enumerate(images):
        saved = cv2.imread(str(out_dir / 'pred' / f'{i:08d}_pred.png'),
                           cv2.IMREAD_UNCHANGED)
        expected = inference_model(model, str(image)).pred_sem_seg.data[0]
        assert np.array_equal(saved, expected.numpy().astype(np.uint8))
        classes_seen.update(np.unique(saved).tolist())
    # Not one class everywhere, which any weights could give.
    assert len(classes_seen) > 1


def other_variant(state):
    """``state`` with GC ViT-T backbone weights instead of XXT's."""
    backbone = GCViT(arch='tiny', window_size=8).state_dict()
    return dict({k: v for k, v in state.items()
                 if not k.startswith('backbone.')},
                **{f'backbone.{k}': v for k, v in backbone.items()})


PROJ = 'backbone.patch_embed.proj.weight'


def test_unfit_checkpoint_refused_or_loaded_where_it_fits(det_run,
                                                         tmp_path):
    """The tool's inferencer refuses a bare tensor, also with
    --allow-partial-checkpoint, with which it loads the weights of another
    variant that fit (refused without it: the next test; the refusals of
    each kind of unfit weights: test_security.py)."""
    from mmdet.apis import DetInferencer
    state = load_checkpoint(det_run[0])['state_dict']
    checkpoint = tmp_path / 'w.pth'

    def inferencer(content, allow):
        torch.save(content, checkpoint)
        return TOOL['fitting'](DetInferencer, Namespace(
            checkpoint=str(checkpoint), allow_partial_checkpoint=allow))(
                model=str(DET_DEMO), weights=str(checkpoint), device='cpu')

    for allow in (False, True):
        with pytest.raises(CheckpointError) as error:
            inferencer(state[PROJ], allow)
        assert str(error.value).startswith(
            f'checkpoint {checkpoint} holds a Tensor, not a dict of weights')
    other = other_variant(state)
    loaded = inferencer({'state_dict': other}, True).model.state_dict()
    kept = {k: v for k, v in other.items()
            if k in loaded and v.shape == loaded[k].shape}
    assert all(torch.equal(loaded[k], v) for k, v in kept.items())
    assert len(kept) > len(loaded) / 2


def test_unfit_checkpoint_ends_the_tool_in_one_line(det_run, tmp_path):
    """A fresh run of the tool on another variant's weights ends in one
    line naming the checkpoint, before any prediction."""
    checkpoint = tmp_path / 'w.pth'
    torch.save({'state_dict': other_variant(
        load_checkpoint(det_run[0])['state_dict'])}, checkpoint)
    rc, output = run_tool([INFERENCE, DET_DEMO, checkpoint, det_run[1][0],
                           '--out-dir', tmp_path / 'out', '--device', 'cpu'],
                          cwd=tmp_path)
    line = assert_one_line_error(
        rc, output, f'checkpoint {checkpoint} does not fit the model: ',
        'weights NOT loaded because their shapes differ', 'are unused by '
        'the model', '--allow-partial-checkpoint')
    assert line.startswith('inference.py: error: ')
    assert not (tmp_path / 'out').exists()


def png_header(width, height):
    """The start of a PNG of ``width`` x ``height`` pixels: all that Pillow
    reads to size it (the pixel data is cut short)."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data)))

    return b'\x89PNG\r\n\x1a\n' + chunk(
        b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)) + \
        chunk(b'IDAT', zlib.compress(bytes(1000)))


def test_unusable_images_refused_in_one_line(tmp_path):
    """Every unusable image of the input is named, before the model is
    built (decoded as the dataset checker does); an image declaring more
    pixels than Pillow's limit is refused from its header, not decoded."""
    folder = tmp_path / 'images'
    folder.mkdir()
    Image.new('RGB', (64, 64), 'gray').save(folder / 'good.png')
    whole = (folder / 'good.png').read_bytes()
    files = {
        'empty.jpg': (b'', 'empty file'),
        'text.jpg': (b'not an image\n', 'truncated or corrupt: mmcv (cv2 '
                     'backend) cannot decode it'),
        'truncated.png': (whole[:len(whole) // 2], 'truncated or corrupt'),
        # 20000 x 20000: a 389 KB PNG of this size decodes to 1.2 GB.
        'bomb.png': (png_header(20000, 20000),
                     'too large to decode safely (Image size (400000000 '
                     'pixels) exceeds limit'),
    }
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    rc, output = run_tool([INFERENCE, DET_DEMO, tmp_path / 'missing.pth',
                           folder, '--out-dir', tmp_path / 'out'],
                          cwd=tmp_path)
    assert_one_line_error(
        rc, output, '4 of 5 input images cannot be used: ',
        *(f'{folder / name} ({reason}' for name, (_, reason) in
          files.items()), 'Replace or remove them')
    assert 'good.png' not in output


def test_input_listing(tmp_path):
    """An image, or a folder's images in name order; else one line that
    names the input."""
    list_images, error = TOOL['list_images'], TOOL['PreflightError']
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


def test_score_thr_for_segmentation_in_one_line(tmp_path):
    image = tmp_path / 'a.png'
    Image.new('RGB', (64, 64), 'gray').save(image)
    rc, output = run_tool([INFERENCE, SEG_DEMO, tmp_path / 'w.pth', image,
                           '--out-dir', tmp_path / 'out', '--score-thr',
                           '0.5'], cwd=tmp_path)
    assert_one_line_error(rc, output, '--score-thr applies to detection '
                          'configs only')
