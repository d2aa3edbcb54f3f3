"""Helpers shared by the test modules (no test module imports another)."""
import contextlib
import importlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mmengine
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / 'tools'
TRAIN = TOOLS / 'train.py'
# mmdet's and mmseg's own train.py, where mim installs them.
MMDET_TRAIN, MMSEG_TRAIN, MMDET_TEST = (
    Path(importlib.util.find_spec(package).origin).parent /
    f'.mim/tools/{tool}.py' for package, tool in (
        ('mmdet', 'train'), ('mmseg', 'train'), ('mmdet', 'test')))

# --- skips and devices -------------------------------------------------------

# The CUDA cases run the GPU's SDPA kernels (memory-efficient / cuDNN with a
# bias) where the CPU cases run its flash kernel; without a GPU they are
# reported as skipped.
DEVICES = [
    'cpu',
    pytest.param(
        'cuda',
        marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason='needs a CUDA GPU'))
]


# fp16 autocast on the CPU came with torch 2.4 (and get_autocast_dtype).
CPU_FP16_AUTOCAST = hasattr(torch, 'get_autocast_dtype')


def skip_without_autocast(device, dtype):
    if device == 'cpu' and dtype == torch.float16 and not CPU_FP16_AUTOCAST:
        pytest.skip(f'torch {torch.__version__} has no CPU fp16 autocast')


# --- models ------------------------------------------------------------------

# Small custom arch for the expensive shapes: both block kinds per stage.
TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def assert_tables_resized(state, source_tables):
    """Every bias table of ``state`` equals the bicubic resize (to window
    24: 47x47) of the source table under its key."""
    for key, table in source_tables.items():
        heads, side = table.shape[1], round(table.shape[0]**0.5)
        expected = torch.nn.functional.interpolate(
            table.T.reshape(1, heads, side, side), size=(47, 47),
            mode='bicubic').reshape(heads, -1).T
        assert torch.allclose(state[key], expected, atol=1e-6), key


def with_custom_imports(cfg, registry):
    """``cfg`` (``Config.fromfile`` ran its ``custom_imports``) with its
    default scope set, as the Runner does; GCViT is in ``registry``."""
    init_default_scope(cfg.default_scope)
    assert registry.get('GCViT') is not None, (
        f'importing {cfg.custom_imports["imports"]} did not register GCViT '
        f'into {registry.scope}::MODELS')
    return cfg


def build_without_pretrained(cfg, registry):
    model_cfg = cfg.model.copy()
    model_cfg.backbone = dict(model_cfg.backbone, init_cfg=None)
    return registry.build(model_cfg)


def random_checkpoint(config, path, options=None, **dataset_meta):
    """``config``'s model (``options``: ``--cfg-options`` edits), freshly
    initialised without its ImageNet weights, saved at ``path`` with its
    classes (and ``dataset_meta``) as a runner saves them; returns
    ``path``."""
    from mmengine.registry import MODELS
    cfg = Config.fromfile(config)  # which imports its custom_imports
    cfg.merge_from_dict(dict(options or {},
                             **{'model.backbone.init_cfg': None}))
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    model.init_weights()
    metainfo = dict(cfg.get('metainfo', {}), **dataset_meta)
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': metainfo}}, path)
    return path


# --- running tools -----------------------------------------------------------

def run_tool(args, cwd, timeout=900, python=sys.executable, env=None):
    """Run a Python tool (in ``env``, default this process's environment);
    return (returncode, stdout + stderr)."""
    result = subprocess.run(
        [str(python), *map(str, args)], cwd=cwd, capture_output=True,
        text=True, timeout=timeout,
        env=dict(os.environ if env is None else env, PYTHONUNBUFFERED='1'))
    return result.returncode, result.stdout + result.stderr


def run(cmd, cwd, timeout=600, env=None):
    """Run ``cmd`` (an interpreter and its arguments), failing the test
    with its output when it fails."""
    rc, output = run_tool(cmd[1:], cwd, timeout, cmd[0], env)
    assert rc == 0, f'{cmd} failed:\n{output[-6000:]}'
    return output


def train(config, work_dir, *args):
    return run([sys.executable, TOOLS / 'train.py', config, '--work-dir',
                work_dir, *args], cwd=work_dir.parent)


def evaluate(config, checkpoint, work_dir, *args):
    """Run tools/test.py; return the metrics it saved."""
    output = run([sys.executable, TOOLS / 'test.py', config, checkpoint,
                  '--work-dir', work_dir, *args], cwd=work_dir.parent)
    saved = saved_test_metrics(work_dir)
    assert saved, f'tools/test.py saved no metrics:\n{output[-3000:]}'
    return json.loads(saved.read_text()), output


def saved_test_metrics(work_dir):
    """The newest test run's metrics under ``work_dir``, or None: mmengine's
    ``LoggerHook`` writes them to ``<timestamp>/<timestamp>.json``."""
    saved = sorted(path for path in work_dir.glob('*/*.json')
                   if path.stem == path.parent.name)
    return saved[-1] if saved else None


def assert_one_line_error(rc, output, *expected):
    """The tool failed with one ``error:`` line naming ``expected``, before
    training (no traceback, no iteration logged); returns the line."""
    assert rc != 0, output[-3000:]
    assert 'Traceback' not in output, output[-3000:]
    assert 'Epoch(train)' not in output and 'Iter(train)' not in output
    errors = [line for line in output.splitlines() if ': error: ' in line]
    assert len(errors) == 1, output[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def last_checkpoint(work_dir):
    return Path((work_dir / 'last_checkpoint').read_text().strip())


# --- scaled-down shipped configs --------------------------------------------

DET_CONFIG = (REPO / 'configs' / 'detection' /
              'mask-rcnn_gcvit-t_fpn_1x_coco.py')

SMALL_DET = """
_base_ = '{base}'
data_root = '{root}/'
metainfo = dict(classes={classes!r})
ch = {channels}
model = dict(
    backbone=dict(arch='{arch}', with_cp={with_cp}, init_cfg=None),
    # Narrower FPN and heads (256 in the config): the backbone is what is
    # tested.
    neck=dict(out_channels=ch),
    rpn_head=dict(in_channels=ch, feat_channels=ch),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=dict(in_channels=ch, fc_out_channels=4 * ch, num_classes=3),
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=dict(in_channels=ch, conv_out_channels=ch, num_classes=3)),
    # Fewer RoIs per image than COCO's 512: 128 px images have few objects.
    train_cfg=dict(rcnn=dict(sampler=dict(num=64))))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, indices={images},
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, indices=2,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs={epochs}, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                        begin=0, end=4)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval={ckpt_every}))
randomness = dict(seed=0, deterministic=True)
"""


def small_detection_config(path, coco_root, arch='tiny', with_cp=False,
                           size=128, batch=1, images=16, epochs=1,
                           ckpt_every=1000, channels=32):
    """Write the real Mask R-CNN GC ViT-T config, scaled down (SMALL_DET), to
    ``path``."""
    classes = tuple(c['name'] for c in json.loads(
        (Path(coco_root) / 'annotations' /
         'instances_train2017.json').read_text())['categories'])
    path.write_text(SMALL_DET.format(
        base=DET_CONFIG, root=coco_root, classes=classes, arch=arch,
        with_cp=with_cp, size=size, batch=batch, images=images, epochs=epochs,
        ckpt_every=ckpt_every, channels=channels))
    return path


SIZE = '(128,128)'
# Images the scaled-down configs test on (det_scaled_down also trains on as
# many).
TEST_IMAGES = 4


def det_scaled_down(coco_root, epochs=1, *more):
    """``--cfg-options`` shrinking the config to a few seconds of CPU; every
    detection kept, so that CocoMetric has something to score; the heads
    predict the generated data's three classes (CocoMetric maps labels to
    the categories of the annotation file)."""
    options = [
        'model.backbone.init_cfg=None',
        'model.roi_head.bbox_head.num_classes=3',
        'model.roi_head.mask_head.num_classes=3',
        'model.train_cfg.rpn_proposal.max_per_img=100',
        'model.test_cfg.rpn.max_per_img=100',
        'model.test_cfg.rcnn.score_thr=0.0',
        f'train_dataloader.dataset.pipeline.2.scale={SIZE}',
        f'train_cfg.max_epochs={epochs}',
        'param_scheduler.0.end=2',
        'default_hooks.logger.interval=1',
    ]
    for split in ('train', 'val', 'test'):
        options += [
            f'{split}_dataloader.batch_size=2',
            f'{split}_dataloader.num_workers=0',
            f'{split}_dataloader.persistent_workers=False',
            f'{split}_dataloader.dataset.data_root={coco_root}/',
            f'{split}_dataloader.dataset.indices={TEST_IMAGES}',
        ]
    for split in ('val', 'test'):
        options += [
            f'{split}_dataloader.dataset.pipeline.1.scale={SIZE}',
            f'{split}_evaluator.ann_file='
            f'{coco_root}/annotations/instances_val2017.json',
        ]
    return ['--cfg-options', *options, *more]


# Iterations of the scaled-down segmentation runs.
SEG_ITERS = 4


def seg_scaled_down(data_root):
    """``--cfg-options`` turning the 8-GPU 512x512 160k recipe into a few
    CPU iterations on ``data_root`` (128x128 generated images); fp32 as
    the config."""
    options = {
        'model.backbone.init_cfg': None,
        'model.data_preprocessor.size': (64, 64),
        # UPerNet's 512-channel fusion dominates CPU time; the backbone
        # stays as configured.
        'model.decode_head.channels': 64,
        'model.auxiliary_head.channels': 32,
        # ade20k.py's train pipeline: [2] RandomResize, [3] RandomCrop.
        'train_dataloader.dataset.pipeline.2.scale': (256, 64),
        'train_dataloader.dataset.pipeline.3.crop_size': (64, 64),
        'train_dataloader.batch_size': 2,
        'train_cfg.max_iters': SEG_ITERS,
        'train_cfg.val_interval': SEG_ITERS,
        # Warm-up then decay, in the recipe's order, over the short run.
        'param_scheduler.0.end': SEG_ITERS // 2,
        'param_scheduler.1.begin': SEG_ITERS // 2,
        'param_scheduler.1.end': SEG_ITERS,
        'default_hooks.checkpoint.interval': SEG_ITERS,
        'default_hooks.logger.interval': 1,
    }
    for split in ('train', 'val', 'test'):
        options[f'{split}_dataloader.dataset.data_root'] = data_root
        options[f'{split}_dataloader.num_workers'] = 0
        options[f'{split}_dataloader.persistent_workers'] = False
    for split in ('val', 'test'):
        # The test pipeline's [1] Resize; the first TEST_IMAGES images.
        options[f'{split}_dataloader.dataset.pipeline.1.scale'] = (256, 64)
        options[f'{split}_dataloader.dataset.indices'] = TEST_IMAGES
    return ['--cfg-options'] + [
        f'{key}={value}'.replace(' ', '') for key, value in options.items()
    ]


class ReleaseServer:
    """Files served at ``http://127.0.0.1:<port>/<path>`` from ``files``
    (path -> bytes); every GET is recorded in ``requests``. ``cut`` paths
    announce their full length but send half; ``custom`` paths are answered
    by their function, given the request handler (misbehaving servers)."""

    def __init__(self):
        import http.server
        import threading

        self.files, self.requests, self.cut, self.custom = {}, [], set(), {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):

            def do_GET(self):
                server.requests.append(self.path)
                path = self.path.split('?')[0].lstrip('/')
                if path in server.custom:
                    server.custom[path](self)
                    return
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                if path in server.cut:
                    body = body[:len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                     Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def url(self, path):
        return f'http://127.0.0.1:{self.httpd.server_port}/{path}'

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --- metrics recomputed from dumped predictions ------------------------------

# What mmdet's CocoMetric reports per IoU type, as indices of COCOeval.stats.
COCO_STATS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
# CocoMetric rounds to 3 decimals, IoUMetric percentages to 2: a
# recomputation agrees to within half the last digit, plus float noise
# (IoUMetric sums and divides in float32).
COCO_TOLERANCE = 5e-4 + 1e-9
SEG_TOLERANCE = 5e-3 + 1e-4


def with_dumped_predictions(config, dump, directory):
    """A config in ``directory`` that is ``config`` with mmengine's
    ``DumpResults`` appended to its test evaluator, pickling every
    evaluated data sample (predictions included) to ``dump``."""
    evaluator = Config.fromfile(config).test_evaluator
    evaluators = [e.to_dict() for e in (
        evaluator if isinstance(evaluator, list) else [evaluator])]
    path = Path(directory) / f'{Path(config).stem}_dump.py'
    path.write_text(
        f'_base_ = {str(config)!r}\n'
        f'test_evaluator = {evaluators!r} + '
        f'[dict(type="DumpResults", out_file_path={str(dump)!r})]\n')
    return path


def _xywh(box):
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _coco_results(samples, cat_ids, iou_type):
    results = []
    for sample in samples:
        pred = sample['pred_instances']
        for i, label in enumerate(pred['labels'].tolist()):
            result = dict(image_id=sample['img_id'],
                          category_id=cat_ids[label],
                          score=float(pred['scores'][i]))
            if iou_type == 'bbox':
                result['bbox'] = _xywh(pred['bboxes'][i])
            else:
                rle = dict(pred['masks'][i])
                if isinstance(rle['counts'], bytes):
                    rle['counts'] = rle['counts'].decode()
                result['segmentation'] = rle
            results.append(result)
    return results


def coco_map_from_dump(dump, ann_file):
    """CocoMetric's ``coco/{bbox,segm}_<stat>`` (unrounded; segm where the
    predictions have masks), recomputed with pycocotools' COCOeval from a
    ``DumpDetResults`` pickle as CocoMetric scores: label ``i`` is the
    json's ``i``-th category, every image of the json counts."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    samples = mmengine.load(dump)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        cat_ids = [c['id'] for c in json.loads(
            Path(ann_file).read_text())['categories']]
        metrics = {}
        masks = 'masks' in samples[0]['pred_instances']
        for iou_type in ('bbox', 'segm') if masks else ('bbox', ):
            coco_eval = COCOeval(
                gt, gt.loadRes(_coco_results(samples, cat_ids, iou_type)),
                iou_type)
            coco_eval.params.maxDets = [100, 300, 1000]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
            metrics.update({f'coco/{iou_type}_{name}': coco_eval.stats[i]
                            for i, name in enumerate(COCO_STATS)})
    return metrics


def assert_coco_metrics_recomputed(metrics, dump, ann_file, num_images=None):
    """COCO ``metrics`` came from predictions on the first ``num_images``
    images of ``ann_file`` (the dataset's ``indices``; default all), each
    once, and equal pycocotools' own evaluation of those predictions
    (``dump``: the run's ``--out`` or ``DumpDetResults`` file)."""
    images = json.loads(Path(ann_file).read_text())['images']
    seen = sorted(sample['img_id'] for sample in mmengine.load(dump))
    assert seen == sorted(image['id'] for image in images[:num_images]), (
        f'evaluated images {seen}, not the first {num_images} of {ann_file}')
    expected = coco_map_from_dump(dump, ann_file)
    reported = {key: metrics.get(key) for key in expected}
    assert reported == pytest.approx(expected, abs=COCO_TOLERANCE), (
        f'reported {reported}, pycocotools says {expected}')


def label_map(ann_dir, stem, reduce_zero_label, seg_map_suffix='.png'):
    """The ground truth of image ``stem`` as mmseg's ``LoadAnnotations``
    reads its PNG in ``ann_dir``. ``reduce_zero_label``: PNG value 0 is
    unlabelled and value ``k`` is class ``k - 1``."""
    label = np.array(Image.open(Path(ann_dir) / f'{stem}{seg_map_suffix}'),
                     dtype=np.int64)
    if reduce_zero_label:
        # mmseg's reduction: 0 and 255 become 255, k becomes k - 1.
        label = np.where((label == 0) | (label == 255), 255, label - 1)
    return label


def _pixel_data(sample, key):
    return np.asarray(sample[key]['data']).squeeze(0)


def miou_from_dump(dump, ann_dir, num_classes, reduce_zero_label,
                   ignore_index=255, seg_map_suffix='.png'):
    """IoUMetric's ``aAcc`` / ``mIoU`` / ``mAcc`` (percent, unrounded),
    recomputed in numpy from the predicted label maps of a ``DumpResults``
    pickle and the ground-truth PNGs in ``ann_dir`` (paired by file
    stem)."""
    intersect, pred_area, label_area = (np.zeros(num_classes, np.int64)
                                        for _ in range(3))
    for sample in mmengine.load(dump):
        pred = _pixel_data(sample, 'pred_sem_seg')
        stem = Path(sample['img_path']).stem
        label = label_map(ann_dir, stem, reduce_zero_label, seg_map_suffix)
        assert pred.shape == label.shape, (stem, pred.shape, label.shape)
        valid = label != ignore_index
        pred, label = pred[valid], label[valid]
        assert pred.min(initial=0) >= 0 and pred.max(initial=0) < \
            num_classes, f'{stem}: predicted labels beyond {num_classes}'
        intersect += np.bincount(pred[pred == label], minlength=num_classes)
        pred_area += np.bincount(pred, minlength=num_classes)
        label_area += np.bincount(label, minlength=num_classes)
    union = pred_area + label_area - intersect
    with np.errstate(divide='ignore', invalid='ignore'):
        iou, acc = intersect / union, intersect / label_area
    return dict(aAcc=100 * intersect.sum() / label_area.sum(),
                mIoU=100 * np.nanmean(iou), mAcc=100 * np.nanmean(acc))


def assert_miou_recomputed(metrics, dump, img_dir, ann_dir, num_images,
                           **dataset):
    """IoUMetric's ``metrics`` came from predictions on the first
    ``num_images`` images of ``img_dir`` (sorted, as mmseg's datasets),
    each once, scored against their label PNGs as read from disk, and equal
    ``miou_from_dump`` (given ``dataset``) of those predictions and PNGs."""
    samples = mmengine.load(dump)
    seen = sorted(Path(sample['img_path']).name for sample in samples)
    expected_images = sorted(p.name for p in Path(img_dir).iterdir())
    assert seen == expected_images[:num_images], (
        f'evaluated images {seen}, not the first {num_images} of {img_dir}')
    keys = ('reduce_zero_label', 'seg_map_suffix')
    for sample in samples:
        stem = Path(sample['img_path']).stem
        assert np.array_equal(
            _pixel_data(sample, 'gt_sem_seg'),
            label_map(ann_dir, stem, **{k: v for k, v in dataset.items()
                                        if k in keys})), (
            f'the evaluator scored {stem} against other labels than its PNG')
    expected = miou_from_dump(dump, ann_dir, **dataset)
    reported = {key: metrics.get(key) for key in expected}
    assert reported == pytest.approx(expected, abs=SEG_TOLERANCE), (
        f'reported {reported}, numpy says {expected}')


@contextlib.contextmanager
def mmengine_log():
    """The messages mmengine's current logger emits inside the block, as
    ``(level name, message)``; a handler rather than capsys, since the
    logger may hold a stream from before a test's capture."""
    import logging

    from mmengine.logging import MMLogger

    class Records(logging.Handler):

        def emit(self, record):
            messages.append((record.levelname, record.getMessage()))

    messages, handler = [], Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
