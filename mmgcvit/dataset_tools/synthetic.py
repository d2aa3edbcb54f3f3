"""Small, learnable datasets in the exact on-disk formats of COCO / ADE20K:
a few shapes (detection) or textured regions (segmentation) per image, with
exact boxes, polygons, masks and labels, for the stock loaders and metrics
and CPU demos. Each image draws from its own ``(seed, split, index)`` stream;
the data is written beside the target and renamed into place, and recorded
in ``ROOT/manifest.json``: the same parameters reuse it, others regenerate.
"""
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import mmcv
import numpy as np
from pycocotools import mask as mask_utils

MANIFEST = 'manifest.json'
GENERATOR = 'mmgcvit.dataset_tools.synthetic'
FORMAT_VERSION = 1
JPEG_QUALITY = 95
SPLITS = ('train', 'val')

# COCO's first three classes with their ids: only a prefix of COCO's list
# keeps every name under its own label in an unmodified 80-class config.
DEFAULT_COCO_CLASSES = ('person', 'bicycle', 'car')
DEFAULT_ADE20K_CLASSES = ('sky', 'floor', 'tree')
DEFAULT_SEG_CLASSES = ('background', 'road', 'grass')

# Unit polygons in [-1, 1]^2 touching all four sides (their extents are the
# sampled box); one shape and one colour per class.
_CIRCLE = np.linspace(0, 2 * np.pi, 32, endpoint=False)
SHAPES = {
    'rectangle': [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    'ellipse': list(zip(np.cos(_CIRCLE), np.sin(_CIRCLE))),
    'triangle': [(0, -1), (1, 1), (-1, 1)],
    'diamond': [(0, -1), (1, 0), (0, 1), (-1, 0)],
    'hexagon': [(-1, 0), (-0.5, -1), (0.5, -1), (1, 0), (0.5, 1), (-0.5, 1)],
    'cross': [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3),
              (0.3, 0.3), (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3),
              (-1, -0.3), (-0.3, -0.3)],
}
# Saturated BGR colours, far from the grey backgrounds.
PALETTE = [(40, 40, 220), (220, 60, 40), (40, 200, 40), (30, 210, 230),
           (200, 40, 200), (220, 200, 40), (0, 120, 255), (255, 120, 120),
           (120, 255, 120), (150, 0, 90)]


@dataclass
class GeneratedDataset:
    """A generated dataset: ``root`` (holds ``manifest.json``), the
    ``data_root`` a config names (``root/ADEChallengeData2016`` for ADE20K),
    ``classes`` in label order, per split ``counts`` of images and per class
    instances (COCO) or pixels / images_with (segmentation), and whether
    existing data with the same parameters was ``reused``."""
    root: Path
    data_root: Path
    kind: str
    classes: tuple
    counts: dict = field(default_factory=dict)
    reused: bool = False


def _image_rng(seed, split, index):
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _background(rng, height, width):
    """A grey-ish canvas with a random tint and mild per-pixel noise."""
    base = rng.integers(90, 170) + rng.integers(-15, 16, size=3)
    noise = rng.normal(0, 8, size=(height, width, 3))
    return np.clip(base + noise, 0, 255)


def _paint(canvas, mask, colour, rng):
    """Fill ``mask`` with ``colour`` plus a per-object shift and mild noise."""
    shifted = np.asarray(colour) + rng.integers(-15, 16, size=3)
    noise = rng.normal(0, 6, size=(int(mask.sum()), 3))
    canvas[mask.astype(bool)] = np.clip(shifted + noise, 0, 255)


def _write_jpg(img, path):
    mmcv.imwrite(img, str(path),
                 params=[cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def _rasterize(polygon, height, width):
    """The mask pycocotools (and thus CocoMetric) draws for a polygon."""
    rles = mask_utils.frPyObjects([polygon], height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def _shape_polygon(shape, box):
    """COCO polygon ``[x0, y0, x1, y1, ...]`` of ``shape`` filling ``box``."""
    x, y, w, h = box
    unit = np.asarray(SHAPES[shape], dtype=np.float64)
    points = np.stack([x + (unit[:, 0] + 1) * w / 2,
                       y + (unit[:, 1] + 1) * h / 2], axis=1)
    return [round(float(v), 2) for v in points.ravel()]


def _polygon_bbox(polygon):
    xs, ys = polygon[0::2], polygon[1::2]
    x0, y0 = min(xs), min(ys)
    return [x0, y0, round(max(xs) - x0, 2), round(max(ys) - y0, 2)]


def _sample_boxes(rng, height, width, count):
    """Up to ``count`` boxes inside the image, apart from one another (so
    no object occludes another); the first one always fits."""
    boxes = []
    for _ in range(50 * count):
        if len(boxes) == count:
            break
        w = rng.uniform(0.2, 0.45) * width
        h = rng.uniform(0.2, 0.45) * height
        x = rng.uniform(2, width - w - 2)
        y = rng.uniform(2, height - h - 2)
        # 3-pixel gap, so neither rasterized mask touches another.
        if all(x + w + 3 < bx or bx + bw + 3 < x or y + h + 3 < by
               or by + bh + 3 < y for bx, by, bw, bh in boxes):
            boxes.append((x, y, w, h))
    return boxes


def _pair(value):
    """An int or a pair, as a pair of ints."""
    return tuple(int(v) for v in (
        (value, value) if isinstance(value, int) else value))


def _coco_image(rng, height, width, num_classes, objects):
    """One image and its annotations as (category index, polygon) pairs."""
    canvas = _background(rng, height, width)
    count = int(rng.integers(objects[0], objects[1] + 1))
    shapes = list(SHAPES)
    instances = []
    for box in _sample_boxes(rng, height, width, count):
        label = int(rng.integers(num_classes))
        polygon = _shape_polygon(shapes[label % len(shapes)], box)
        mask = _rasterize(polygon, height, width)
        _paint(canvas, mask, PALETTE[label % len(PALETTE)], rng)
        instances.append((label, polygon, mask))
    return canvas.astype(np.uint8), instances


def _write_coco(tmp, params):
    height, width = params['img_size']
    classes = params['classes']
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(classes)]
    counts, files = {}, []
    image_id = ann_id = 0
    for split in SPLITS:
        images, annotations = [], []
        instances = dict.fromkeys(classes, 0)
        for index in range(params[f'num_{split}']):
            rng = _image_rng(params['seed'], split, index)
            img, objects = _coco_image(rng, height, width, len(classes),
                                       params['objects_per_image'])
            image_id += 1
            file_name = f'{image_id:012d}.jpg'
            rel = f'{split}2017/{file_name}'
            _write_jpg(img, tmp / rel)
            files.append(rel)
            images.append(dict(id=image_id, file_name=file_name,
                               width=width, height=height, license=1))
            for label, polygon, mask in objects:
                ann_id += 1
                annotations.append(dict(
                    id=ann_id, image_id=image_id, category_id=label + 1,
                    bbox=_polygon_bbox(polygon), area=int(mask.sum()),
                    segmentation=[polygon], iscrowd=0))
                instances[classes[label]] += 1
        coco = dict(
            info=dict(description='mmgcvit synthetic shapes', version='1.0',
                      year=2017, contributor='mmgcvit', url='',
                      date_created='2017-01-01'),
            licenses=[dict(id=1, name='CC0 1.0', url='')],
            images=images, annotations=annotations, categories=categories)
        rel = f'annotations/instances_{split}2017.json'
        (tmp / 'annotations').mkdir(exist_ok=True)
        (tmp / rel).write_text(json.dumps(coco))
        files.append(rel)
        counts[split] = dict(images=len(images), instances=instances)
    return counts, files


def _texture(rng, height, width, label):
    """Class ``label``'s look: its colour plus stripes whose period and
    direction depend on the class, so colour and texture both tell it."""
    yy, xx = np.mgrid[:height, :width]
    period = 4 + 2 * (label % 4)
    coord = (xx, yy, xx + yy, xx - yy)[label % 4]
    stripes = ((coord // period) % 2)[..., None] * 30.0 - 15.0
    colour = np.asarray(PALETTE[label % len(PALETTE)]) + rng.integers(
        -10, 11, size=3)
    return colour + stripes + rng.normal(0, 6, size=(height, width, 3))


def _seg_image(rng, height, width, num_classes):
    """An image and its label map: ``0..num_classes-1`` per region, -1 for
    an occasional "other" patch that the label formats ignore."""
    labels = np.full((height, width), int(rng.integers(num_classes)),
                     dtype=np.int16)
    count = int(rng.integers(2, 5))
    shapes = list(SHAPES)
    for box in _sample_boxes(rng, height, width, count):
        label = int(rng.integers(num_classes))
        polygon = _shape_polygon(shapes[int(rng.integers(len(shapes)))],
                                 box)
        labels[_rasterize(polygon, height, width).astype(bool)] = label
    if rng.random() < 0.5:
        x0, y0 = (int(v) for v in rng.integers(0, [width // 2, height // 2]))
        labels[y0:y0 + height // 6, x0:x0 + width // 6] = -1
    canvas = _background(rng, height, width)
    for label in np.unique(labels[labels >= 0]):
        region = labels == label
        canvas[region] = _texture(rng, height, width, int(label))[region]
    return np.clip(canvas, 0, 255).astype(np.uint8), labels


def _write_seg(tmp, params, layout, label_values):
    """Write a segmentation dataset.

    ``layout(split)`` gives the image and label folders (relative to ``tmp``)
    and the file stem; ``label_values`` maps region index (``-1`` =
    "other") to the value stored in the PNG.
    """
    height, width = params['img_size']
    classes = params['classes']
    counts, files = {}, []
    for split in SPLITS:
        img_dir, ann_dir, stem = layout(split)
        pixels = dict.fromkeys(classes, 0)
        with_class = dict.fromkeys(classes, 0)
        for index in range(params[f'num_{split}']):
            rng = _image_rng(params['seed'], split, index)
            img, labels = _seg_image(rng, height, width, len(classes))
            name = stem % (index + 1)
            _write_jpg(img, tmp / img_dir / f'{name}.jpg')
            png = label_values[labels + 1].astype(np.uint8)
            mmcv.imwrite(png, str(tmp / ann_dir / f'{name}.png'))
            files += [f'{img_dir}/{name}.jpg', f'{ann_dir}/{name}.png']
            for label, name_ in enumerate(classes):
                n = int((labels == label).sum())
                pixels[name_] += n
                with_class[name_] += int(n > 0)
        counts[split] = dict(images=params[f'num_{split}'], pixels=pixels,
                             images_with=with_class)
    return counts, files


def _generate(root, kind, params, write, data_subdir=''):
    """Reuse ``root`` if its manifest matches, else write it atomically."""
    root = Path(root).expanduser().absolute()
    params = json.loads(json.dumps(params))  # tuples -> lists, as on disk
    wanted = dict(generator=GENERATOR, version=FORMAT_VERSION, kind=kind,
                  params=params)
    classes = tuple(params['classes'])
    try:
        old = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        old = None
    if old is not None and all(old.get(k) == v for k, v in wanted.items()) \
            and all((root / f).is_file() for f in old.get('files', ())):
        print(f'Reusing the {kind} dataset at {root} (same parameters).')
        return GeneratedDataset(root, root / data_subdir, kind, classes,
                                old['counts'], reused=True)
    if root.exists() and old is None and any(root.iterdir()):
        raise FileExistsError(
            f'{root} is not empty and was not made by this generator (no '
            f'{MANIFEST}): pick another root or empty it yourself.')

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
    try:
        counts, files = write(tmp, params)
        manifest = dict(wanted, classes=list(classes), counts=counts,
                        files=files)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        # Move the old data aside (not delete) until the new one is in place,
        # so a failure never leaves the target half-written.
        trash = None
        if root.exists():
            trash = Path(tempfile.mkdtemp(prefix=f'.{root.name}.old-',
                                          dir=root.parent))
            os.replace(root, trash / 'data')
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    print(f'Generated the {kind} dataset at {root}: ' + ', '.join(
        f"{counts[s]['images']} {s}" for s in SPLITS) + ' images.')
    return GeneratedDataset(root, root / data_subdir, kind, classes, counts)


def _common_params(num_train, num_val, img_size, classes, seed):
    if int(num_train) < 1 or int(num_val) < 1:
        raise ValueError(f'num_train={num_train} and num_val={num_val} must '
                         'be at least 1.')
    classes = tuple(str(c) for c in classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f'classes={classes!r} must be non-empty, unique '
                         'names.')
    if min(_pair(img_size)) < 32:
        raise ValueError(f'img_size={img_size!r} is too small: use at least '
                         '32 pixels per side.')
    return dict(num_train=int(num_train), num_val=int(num_val),
                img_size=_pair(img_size), classes=classes, seed=int(seed))


def generate_coco(root, num_train=16, num_val=8, img_size=256,
                  classes=DEFAULT_COCO_CLASSES, objects_per_image=(1, 3),
                  seed=0):
    """A COCO instances dataset of coloured shapes, one shape per class:
    ``root/annotations/instances_{train,val}2017.json`` and
    ``root/{train,val}2017/*.jpg``; ``classes`` get ids ``1..n`` in order;
    ``img_size`` is a side or ``(height, width)``; ``objects_per_image`` an
    int or ``(min, max)`` (fewer when they do not fit apart). Returns a
    ``GeneratedDataset``."""
    params = _common_params(num_train, num_val, img_size, classes, seed)
    low, high = params['objects_per_image'] = _pair(objects_per_image)
    if not 1 <= low <= high:
        raise ValueError(
            f'objects_per_image={objects_per_image!r} must be a positive int '
            'or a (min, max) pair with 1 <= min <= max.')
    return _generate(root, 'coco', params, _write_coco)


def ade20k_class_ids(classes):
    """ADE20K label values (1..150) of ADE20K class names."""
    from mmseg.datasets import ADE20KDataset
    names = ADE20KDataset.METAINFO['classes']
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ValueError(f'{unknown} are not ADE20K classes: pick names from '
                         'mmseg.datasets.ADE20KDataset.METAINFO["classes"].')
    return [names.index(c) + 1 for c in classes]


def generate_ade20k(root, num_train=16, num_val=8, img_size=256,
                    classes=DEFAULT_ADE20K_CLASSES, seed=0):
    """An ADE20K-format dataset of textured regions:
    ``root/ADEChallengeData2016/{images,annotations}/{training,validation}/
    ADE_{train,val}_%08d.{jpg,png}``, label PNGs holding 0 for "other"
    (``reduce_zero_label`` drops it) and the ADE20K values (1..150) of
    ``classes``, which must be ADE20K class names."""
    params = _common_params(num_train, num_val, img_size, classes, seed)
    values = np.array([0] + ade20k_class_ids(params['classes']))
    folder = dict(train='training', val='validation')

    def layout(split):
        return (f'ADEChallengeData2016/images/{folder[split]}',
                f'ADEChallengeData2016/annotations/{folder[split]}',
                f'ADE_{split}_%08d')

    return _generate(root, 'ade20k', params,
                     lambda tmp, p: _write_seg(tmp, p, layout, values),
                     data_subdir='ADEChallengeData2016')


def generate_custom_seg(root, num_train=16, num_val=8, img_size=256,
                        classes=DEFAULT_SEG_CLASSES, seed=0):
    """A "your own data" segmentation dataset for mmseg's
    ``BaseSegDataset``: ``root/img_dir/{train,val}/*.jpg`` and
    ``root/ann_dir/{train,val}/*.png`` with labels ``0..len(classes)-1``
    and 255 (mmseg's default ``ignore_index``) on "other" patches."""
    params = _common_params(num_train, num_val, img_size, classes, seed)
    if len(params['classes']) > 255:
        raise ValueError('At most 255 classes fit a uint8 label PNG next to '
                         'the ignore value 255.')
    values = np.array([255] + list(range(len(params['classes']))))

    def layout(split):
        return f'img_dir/{split}', f'ann_dir/{split}', f'{split}_%06d'

    return _generate(root, 'custom_seg', params,
                     lambda tmp, p: _write_seg(tmp, p, layout, values))
