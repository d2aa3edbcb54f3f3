"""``tools/test.py`` (mmdet's, with the hooks our configs select) refuses
to report results that measure nothing: a checkpoint that does not fit the
model (``check_weights_fit``), non-finite weights, an evaluation without
metrics, files that are not checkpoints; and ``--resume`` explains a
damaged ``last_checkpoint``. Each case ends in one line naming the problem
and the fix, with a non-zero exit."""
import pytest
import torch
from helpers import (TINY, TOOLS, assert_one_line_error, run_tool,
                     small_detection_config)
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmgcvit.checkpoint import CheckpointError, load_checkpoint
from mmgcvit.engine import PreflightError, check_weights_fit
from mmgcvit.engine.preflight import check_checkpoint_flags
from mmgcvit.models import GCViT

TEST = TOOLS / 'test.py'


@pytest.fixture(scope='module')
def detector(tmp_path_factory, coco_root):
    """A small GC ViT-XXT Mask R-CNN config and a checkpoint of its whole
    (untrained) model, as mmengine writes them."""
    from mmdet.registry import MODELS
    folder = tmp_path_factory.mktemp('guards')
    config = small_detection_config(folder / 'det.py', coco_root,
                                    arch='xxtiny', images=2)
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(config).model)
    checkpoint = folder / 'whole.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=0)),
               checkpoint)
    return config, checkpoint


def evaluate(config, checkpoint, tmp_path, *args):
    return run_tool([TEST, config, checkpoint, '--work-dir',
                     tmp_path / 'work', *args], cwd=tmp_path)


def with_state(path, source, edit):
    checkpoint = load_checkpoint(source)
    edit(checkpoint['state_dict'])
    torch.save(checkpoint, path)
    return path


def test_backbone_only_checkpoint_is_an_error(detector, tmp_path):
    config, whole = detector
    partial = with_state(tmp_path / 'backbone.pth', whole, lambda state: [
        state.pop(k) for k in list(state) if not k.startswith('backbone.')])
    rc, output = evaluate(config, partial, tmp_path)
    assert_one_line_error(rc, output, 'model weights absent from it keep '
                          'their initialisation', 'neck.',
                          '--allow-partial-checkpoint')
    rc, output = evaluate(config, partial, tmp_path,
                          '--allow-partial-checkpoint')
    assert rc == 0, output[-3000:]
    assert 'model weights absent from it keep their initialisation' in output


def backbone_state(arch):
    return GCViT(arch=arch).state_dict()


def test_weights_of_another_variant_do_not_fit():
    """GC ViT-T weights into an XXT model: a partial fit at best."""
    model = GCViT(arch='xxtiny')
    with pytest.raises(CheckpointError) as caught:
        check_weights_fit(backbone_state('tiny'), model)
    message = str(caught.value)
    assert 'levels.0.blocks.2.' in message  # XXT has 2 blocks in stage 1
    assert 'unused by the model' in message
    assert '--allow-partial-checkpoint' in message
    assert '\n' not in message
    warning = check_weights_fit(backbone_state('tiny'), model,
                                allow_partial=True)
    assert warning.startswith('the checkpoint does not fit the model')
    assert check_weights_fit(backbone_state('xxtiny'), model) is None


@pytest.mark.parametrize('edit, phrase', [
    (lambda value: value.long(), 'of a kind the model cannot take'),
    (lambda value: value.tolist(), 'not tensors'),
])
def test_values_that_cannot_be_weights(edit, phrase):
    """Integers where the model has floats, lists instead of tensors:
    refused even with a partial fit allowed."""
    state = backbone_state(TINY)
    key = 'patch_embed.proj.weight'
    state[key] = edit(state[key])
    with pytest.raises(CheckpointError, match=f'{phrase}.*{key}'):
        check_weights_fit(state, GCViT(arch=TINY), allow_partial=True)


def test_non_finite_weights_are_an_error(detector, tmp_path):
    config, whole = detector
    key = 'roi_head.bbox_head.fc_cls.weight'
    broken = with_state(tmp_path / 'nan.pth', whole,
                        lambda state: state[key].view(-1)[0].fill_(
                            float('nan')))
    rc, output = evaluate(config, broken, tmp_path)
    assert_one_line_error(rc, output, 'NaN or Inf values in 1 weights', key)


def test_evaluation_without_metrics_is_an_error(detector, tmp_path):
    """No detection scores above the threshold: CocoMetric returns {}."""
    config, whole = detector
    rc, output = evaluate(config, whole, tmp_path, '--cfg-options',
                          'model.test_cfg.rcnn.score_thr=1.01')
    assert_one_line_error(rc, output, 'produced no metrics')


@pytest.mark.parametrize('content,phrase', [
    (b'', 'is an empty file'),
    (b'epoch 12 loss 0.3\n', 'not a checkpoint'),
])
def test_files_that_are_not_checkpoints(detector, tmp_path, content,
                                        phrase):
    config, _ = detector
    path = tmp_path / 'epoch_12.pth'
    path.write_bytes(content)
    rc, output = evaluate(config, path, tmp_path)
    assert_one_line_error(rc, output, phrase, 'epoch_12.pth')


def test_binary_last_checkpoint_named_on_resume(tmp_path):
    (tmp_path / 'last_checkpoint').write_bytes(b'\xff\xfe\x00garbage')
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(tmp_path)))
    with pytest.raises(PreflightError, match='last_checkpoint.*not the text '
                       'path of a checkpoint.*delete'):
        check_checkpoint_flags(cfg)
