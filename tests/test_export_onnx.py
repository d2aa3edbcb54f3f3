"""tools/deployment/export_onnx.py: one dynamic export of the UPerNet GC
ViT-XXT config equals PyTorch's ``encode_decode`` in onnxruntime at other
sizes; what it cannot export is refused in one line."""
import sys

import onnxruntime as ort
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from helpers import (REPO, assert_one_line_error, build_without_pretrained,
                     rel_err, run, run_tool, with_custom_imports)

EXPORT = REPO / 'tools' / 'deployment' / 'export_onnx.py'
SEG_CONFIG = REPO / 'configs' / 'segmentation' / \
    'upernet_gcvit-xxt_8xb2-160k_ade20k-512x512.py'


def test_dynamic_segmentor_equals_pytorch_at_other_sizes(tmp_path):
    cfg = with_custom_imports(Config.fromfile(SEG_CONFIG), MODELS)
    torch.manual_seed(0)
    model = build_without_pretrained(cfg, MODELS)
    model.init_weights()
    checkpoint = tmp_path / 'seg.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    onnx_file = tmp_path / 'seg.onnx'
    run([sys.executable, EXPORT, SEG_CONFIG, checkpoint, '--out', onnx_file,
         '--shape', 128, 160, '--dynamic'], cwd=tmp_path)
    session = ort.InferenceSession(str(onnx_file),
                                   providers=['CPUExecutionProvider'])
    model.eval()
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


def test_detector_config_refused_in_one_line(tmp_path):
    config = REPO / 'configs' / 'detection' / 'mask-rcnn_gcvit-xxt_fpn_1x_coco.py'
    rc, output = run_tool([EXPORT, config, tmp_path / 'none.pth', '--out',
                           tmp_path / 'det.onnx'], cwd=tmp_path)
    assert_one_line_error(rc, output, "default_scope='mmdet'",
                          'docs/deployment.md')
