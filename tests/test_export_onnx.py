"""tools/deployment/export_onnx.py: one export of the UPerNet GC
ViT-XXT config equals PyTorch's ``encode_decode`` in onnxruntime at other
sizes, one of the Mask R-CNN GC ViT-XXT config mmdet's ``predict``; what it
cannot export is refused in one line."""
import sys

import onnxruntime as ort
import pytest
import torch
from mmengine.config import Config
from mmdet.registry import MODELS as DET_MODELS
from mmdet.structures import DetDataSample
from mmseg.registry import MODELS
from torchvision.ops import box_iou

from helpers import (REPO, assert_one_line_error, build_without_pretrained,
                     rel_err, run, run_tool, with_custom_imports)

EXPORT = REPO / 'tools' / 'deployment' / 'export_onnx.py'
SEG_CONFIG = REPO / 'configs' / 'segmentation' / \
    'upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py'
DET_CONFIGS = REPO / 'configs' / 'detection'


def random_weights(config, registry, path):
    """``config``'s model, freshly initialised (seeded), saved at
    ``path``; returns the model."""
    cfg = with_custom_imports(Config.fromfile(config), registry)
    torch.manual_seed(0)
    model = build_without_pretrained(cfg, registry)
    model.init_weights()
    torch.save({'state_dict': model.state_dict()}, path)
    return model.eval()


def test_segmentor_equals_pytorch_at_other_sizes(tmp_path):
    checkpoint = tmp_path / 'seg.pth'
    model = random_weights(SEG_CONFIG, MODELS, checkpoint)
    onnx_file = tmp_path / 'seg.onnx'
    # Traced where every global query map is already the window (24 x 24):
    # the resize other sizes need must stay in the graph.
    run([sys.executable, EXPORT, SEG_CONFIG, checkpoint, '--out', onnx_file,
         '--shape', 768, 768, '--dynamic'], cwd=tmp_path)
    session = ort.InferenceSession(str(onnx_file),
                                   providers=['CPUExecutionProvider'])
    # Sizes whose last stage (3 x 7, 6 x 4) the pyramid pooling's 2, 3 and 6
    # bins do not divide, with windows partly outside the image.
    for h, w in [(96, 224), (192, 128)]:
        image = torch.randn(2, 3, h, w)
        with torch.no_grad():
            expected = model.encode_decode(
                image, [dict(img_shape=(h, w))] * 2)
        got = torch.from_numpy(session.run(None, {'input': image.numpy()})[0])
        assert got.shape == (2, 150, h, w)
        assert rel_err(got, expected) < 1e-3, (h, w)


def test_mask_rcnn_equals_mmdet_predict_at_other_sizes(tmp_path):
    config = DET_CONFIGS / 'mask-rcnn_gcvit-xxt_fpn_1x_coco.py'
    checkpoint = tmp_path / 'det.pth'
    model = random_weights(config, DET_MODELS, checkpoint)
    # A fresh model scores every class about 1/81: keep all boxes.
    model.test_cfg.rcnn.score_thr = 0.
    onnx_file = tmp_path / 'det.onnx'
    run([sys.executable, EXPORT, config, checkpoint, '--out', onnx_file,
         '--shape', 256, 320, '--dynamic', '--cfg-options',
         'model.test_cfg.rcnn.score_thr=0'], cwd=tmp_path)
    session = ort.InferenceSession(str(onnx_file),
                                   providers=['CPUExecutionProvider'])
    # Other numbers of anchors per level than traced (its top-k), and of
    # proposals (64 x 96: fewer than 1000 after NMS).
    for h, w in [(64, 96), (320, 224)]:
        image = torch.randn(1, 3, h, w)
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        with torch.no_grad():
            expected = model.predict(image, [sample],
                                     rescale=False)[0].pred_instances
        dets, labels, masks = session.run(None, {'input': image.numpy()})
        dets, labels = torch.from_numpy(dets[0]), torch.from_numpy(labels[0])
        assert len(dets) == len(expected) == 100 and masks.shape == (
            1, 100, 28, 28), (h, w)
        # Each box's best match among PyTorch's, of its class: same box
        # and score (near-equal scores may come in another order).
        iou = box_iou(dets[:, :4], expected.bboxes)
        iou[labels[:, None] != expected.labels[None]] = 0
        best, match = iou.max(1)
        assert best.min() >= 0.99, (h, w)
        assert (dets[:, 4] - expected.scores[match]).abs().max() < 1e-3


@pytest.mark.parametrize('config,more,expected', [
    ('cascade-mask-rcnn_gcvit-t_fpn_4conv1fc-giou_ms-crop-3x_coco.py', [],
     ('Cascade Mask R-CNN and DINO', 'docs/deployment.md')),
    ('mask-rcnn_gcvit-xxt_fpn_1x_coco.py', ['--check', 256, 320],
     ('--check at sizes other than --shape needs --dynamic', )),
    # A file that holds a bare tensor (written below), not a dict.
    ('mask-rcnn_gcvit-xxt_fpn_1x_coco.py', [],
     ('holds a Tensor, not a dict of weights', )),
])
def test_what_cannot_export_refused_in_one_line(tmp_path, config, more,
                                                 expected):
    checkpoint = tmp_path / 'w.pth'
    torch.save(torch.zeros(3), checkpoint)
    rc, output = run_tool([EXPORT, DET_CONFIGS / config, checkpoint,
                           '--out', tmp_path / 'det.onnx', *more],
                          cwd=tmp_path)
    assert_one_line_error(rc, output, *expected)
