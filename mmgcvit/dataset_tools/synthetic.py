"""Small, learnable datasets in the on-disk formats of COCO, ADE20K and
mmseg's ``BaseSegDataset``: shapes apart from one another, one shape and
colour per class, with exact boxes, polygons, masks (pycocotools' own) and
labels. Each image draws from its own ``(seed, split, index)`` stream.
``root/manifest.json`` marks the data as generated (and records how): it is
written first, so that a later call replaces even a half-written folder.
"""
import json
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import mmcv
import numpy as np
from pycocotools import mask as mask_utils

MANIFEST = 'manifest.json'
SPLITS = ('train', 'val')
# Unit polygons in [-1, 1]^2 touching all four sides, so that their extents
# are the sampled box.
_CIRCLE = np.linspace(0, 2 * np.pi, 32, endpoint=False)
SHAPES = ([(-1, -1), (1, -1), (1, 1), (-1, 1)],
          list(zip(np.cos(_CIRCLE), np.sin(_CIRCLE))),
          [(0, -1), (1, 1), (-1, 1)], [(0, -1), (1, 0), (0, 1), (-1, 0)])
# Saturated BGR colours, far from the grey COCO backgrounds.
PALETTE = [(40, 40, 220), (220, 60, 40), (40, 200, 40), (30, 210, 230),
           (200, 40, 200), (220, 200, 40), (0, 120, 255), (150, 0, 90)]


@dataclass
class GeneratedDataset:
    """``data_root``: what a config names; ``classes`` in label order."""
    root: Path
    data_root: Path
    classes: tuple


def _scene(rng, height, width, num_classes, background):
    """An image and its objects ``(label, polygon, mask)``: up to 3 shapes
    3 pixels apart (no mask touches another) on a grey canvas, or on the
    class ``background`` filling the image."""
    canvas = rng.normal(rng.integers(90, 170), 8, (height, width, 3))
    objects, boxes = [], []
    if background is not None:
        objects.append((background, None, np.ones((height, width), bool)))
    for _ in range(50):
        w, h = rng.uniform(0.2, 0.45, 2) * (width, height)
        x, y = rng.uniform(2, (width - w - 2, height - h - 2))
        if all(x + w + 3 < bx or bx + bw + 3 < x or y + h + 3 < by or
               by + bh + 3 < y for bx, by, bw, bh in boxes):
            boxes.append((x, y, w, h))
            label = int(rng.integers(num_classes))
            unit = np.asarray(SHAPES[label % len(SHAPES)])
            polygon = [round(float(v), 2) for v in np.stack(
                [x + (unit[:, 0] + 1) * w / 2, y + (unit[:, 1] + 1) * h / 2],
                axis=1).ravel()]
            mask = mask_utils.decode(mask_utils.frPyObjects(
                [polygon], height, width))[..., 0].astype(bool)
            objects.append((label, polygon, mask))
        if len(boxes) == 3:
            break
    for label, _, mask in objects:  # a colour per class, noise per object
        colour = np.asarray(PALETTE[label % len(PALETTE)]) + rng.integers(
            -15, 16, 3)
        canvas[mask] = colour + rng.normal(0, 6, (int(mask.sum()), 3))
    return np.clip(canvas, 0, 255).astype(np.uint8), objects


def _images(p, filled):
    """``(split, index, rng, image, objects)`` of every image to write."""
    for split in SPLITS:
        for index in range(p[f'num_{split}']):
            rng = np.random.default_rng([p['seed'], SPLITS.index(split),
                                         index])
            num_classes = len(p['classes'])
            yield split, index, rng, *_scene(
                rng, *p['img_size'], num_classes,
                int(rng.integers(num_classes)) if filled else None)


def _write_jpg(img, path):
    mmcv.imwrite(img, str(path), params=[cv2.IMWRITE_JPEG_QUALITY, 95])


def _write_coco(root, p):
    coco = {split: dict(images=[], annotations=[], categories=[
        dict(id=i + 1, name=c) for i, c in enumerate(p['classes'])])
        for split in SPLITS}
    for split, index, _, img, objects in _images(p, filled=False):
        data = coco[split]
        data['images'].append(dict(
            id=index + 1, file_name=f'{index + 1:012d}.jpg',
            height=img.shape[0], width=img.shape[1]))
        _write_jpg(img, root / f'{split}2017/{index + 1:012d}.jpg')
        for label, polygon, mask in objects:
            xs, ys = polygon[0::2], polygon[1::2]
            data['annotations'].append(dict(
                id=len(data['annotations']) + 1, image_id=index + 1,
                category_id=label + 1, bbox=[
                    min(xs), min(ys), round(max(xs) - min(xs), 2),
                    round(max(ys) - min(ys), 2)],
                area=int(mask.sum()), segmentation=[polygon], iscrowd=0))
    (root / 'annotations').mkdir()
    for split, data in coco.items():
        (root / f'annotations/instances_{split}2017.json').write_text(
            json.dumps(data))


def _write_seg(root, p, path, dirs, values):
    """``path``: of an image and its label map, less the suffix (``{dir}``:
    ``dirs[0]`` or ``dirs[1]``, ``{split}``: train / val, ``{ade}``:
    training / validation, ``{i}``: the index); ``values[label + 1]``: a
    label's PNG value, ``values[0]``: that of the occasional "other" patch
    the label formats ignore."""
    height, width = p['img_size']
    for split, index, rng, img, objects in _images(p, filled=True):
        labels = np.zeros((height, width), int)
        for label, _, mask in objects:
            labels[mask] = label + 1
        if rng.random() < 0.5:
            x, y = rng.integers(0, (width // 2, height // 2))
            labels[y:y + height // 6, x:x + width // 6] = 0
        names = dict(split=split, i=index + 1, ade=dict(
            train='training', val='validation')[split])
        _write_jpg(img, f'{root / path.format(dir=dirs[0], **names)}.jpg')
        mmcv.imwrite(values[labels].astype(np.uint8),
                     f'{root / path.format(dir=dirs[1], **names)}.png')


def _generate(args, write, data_subdir=''):
    """Write a dataset at ``args['root']`` (the generator's arguments),
    replacing one generated there before."""
    root = Path(args['root']).expanduser().absolute()
    img_size = args['img_size']
    params = json.loads(json.dumps(dict(  # tuples as lists, as on disk
        {k: args[k] for k in ('num_train', 'num_val', 'classes', 'seed')},
        img_size=(img_size, ) * 2 if isinstance(img_size, int) else img_size)))
    classes = tuple(params['classes'])
    if len(set(classes)) != len(classes) or min(params['img_size']) < 32:
        raise ValueError(f'classes={classes} must be unique names and '
                         f'img_size={img_size} at least 32 pixels.')
    if root.exists() and any(root.iterdir()) and \
            not (root / MANIFEST).is_file():
        raise FileExistsError(
            f'{root} is not empty and was not made by this generator (no '
            f'{MANIFEST}): pick another root or empty it yourself.')
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / MANIFEST).write_text(json.dumps(params))
    write(root, params)
    return GeneratedDataset(root, root / data_subdir, classes)


def generate_coco(root, num_train=16, num_val=8, img_size=256,
                  classes=('person', 'bicycle', 'car'), seed=0):
    """``root/annotations/instances_{train,val}2017.json`` and
    ``root/{train,val}2017/*.jpg``; ``classes`` get the ids ``1..n`` (the
    default, COCO's first three, keeps every name under its own label in an
    80-class config); ``img_size``: a side or ``(height, width)``."""
    return _generate(dict(locals()), _write_coco)


def generate_ade20k(root, num_train=16, num_val=8, img_size=256,
                    classes=('sky', 'floor', 'tree'), seed=0):
    """``root/ADEChallengeData2016/{images,annotations}/{training,
    validation}/ADE_{train,val}_%08d.{jpg,png}``, labels the ADE20K values
    (1..150) of ``classes`` (ADE20K names) and 0 on "other"."""
    from mmseg.datasets import ADE20KDataset
    names = ADE20KDataset.METAINFO['classes']
    if set(classes) - set(names):
        raise ValueError(f'{sorted(set(classes) - set(names))} are not '
                         'ADE20K classes: pick names from mmseg.datasets.'
                         'ADE20KDataset.METAINFO["classes"].')
    return _generate(dict(locals()), partial(
        _write_seg, path='ADEChallengeData2016/{dir}/{ade}/'
        'ADE_{split}_{i:08d}',
        dirs=('images', 'annotations'),
        values=np.array([0] + [names.index(c) + 1 for c in classes])),
        'ADEChallengeData2016')


def generate_custom_seg(root, num_train=16, num_val=8, img_size=256,
                        classes=('background', 'road', 'grass'), seed=0):
    """Your own data as mmseg's ``BaseSegDataset`` reads it:
    ``root/{img_dir,ann_dir}/{train,val}/*.{jpg,png}``, labels
    ``0..len(classes)-1`` and 255 (mmseg's ``ignore_index``) on "other"."""
    return _generate(dict(locals()), partial(
        _write_seg, path='{dir}/{split}/{split}_{i:06d}',
        dirs=('img_dir', 'ann_dir'),
        values=np.array([255] + list(range(len(classes))))))
