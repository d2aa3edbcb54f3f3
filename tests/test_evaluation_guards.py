"""``tools/test.py`` (mmdet's, with the hooks our configs select) refuses
to report results that measure nothing: a checkpoint that fits the model
only partly (``mmgcvit.LoadReportHook``) and an evaluation without metrics
(``mmgcvit.TestMetricsHook``) end in one line naming the problem and the
fix, with a non-zero exit. Files that are not the model's weights:
test_security.py."""
import pytest
import torch
from helpers import (TOOLS, assert_one_line_error, run_tool,
                     small_detection_config)
from mmengine.config import Config
from mmengine.registry import init_default_scope


@pytest.fixture(scope='module')
def detector(tmp_path_factory, coco_root):
    """A small GC ViT-XXT Mask R-CNN config and the state dict of its whole
    (untrained) model."""
    from mmdet.registry import MODELS
    folder = tmp_path_factory.mktemp('guards')
    config = small_detection_config(folder / 'det.py', coco_root,
                                    arch='xxtiny', images=2)
    init_default_scope('mmdet')
    return config, MODELS.build(Config.fromfile(config).model).state_dict()


def evaluate(config, state, tmp_path, *args):
    torch.save(dict(state_dict=state, meta=dict(iter=0)),
               tmp_path / 'model.pth')
    return run_tool([TOOLS / 'test.py', config, tmp_path / 'model.pth',
                     '--work-dir', tmp_path / 'work', *args], cwd=tmp_path)


def test_backbone_only_checkpoint_is_an_error(detector, tmp_path):
    config, whole = detector
    backbone = {k: v for k, v in whole.items() if k.startswith('backbone.')}
    rc, output = evaluate(config, backbone, tmp_path)
    assert_one_line_error(rc, output, 'model weights absent from it keep '
                          'their initialisation', 'neck.',
                          '--allow-partial-checkpoint')
    rc, output = evaluate(config, backbone, tmp_path,
                          '--allow-partial-checkpoint')
    assert rc == 0, output[-3000:]
    assert 'model weights absent from it keep their initialisation' in output


def test_evaluation_without_metrics_is_an_error(detector, tmp_path):
    """No detection scores above the threshold: CocoMetric returns {}."""
    config, whole = detector
    rc, output = evaluate(config, whole, tmp_path, '--cfg-options',
                          'model.test_cfg.rcnn.score_thr=1.01')
    assert_one_line_error(rc, output, 'produced no metrics')
