"""Check the dataset of any mmdet (COCO-style) or mmseg config.

The stock loaders silently drop what they cannot use (COCO annotations with
unknown categories or boxes outside the image, images without boxes) and
fail late, mid-training, on broken segmentation labels.  ``check_dataset``
builds the configured dataset with the library's own registry, reads every
annotation, and reports:

* detection: images and instances per class; from the raw COCO json,
  annotations whose category id is not a json category or whose category is
  not a configured class, boxes partly / fully outside the image, boxes with
  non-positive width / height or area, empty / degenerate polygons,
  annotations of unknown images, duplicate ids, json sizes that differ from
  the image files, missing / unreadable images, images without annotations
  (a warning: the training loader drops them);
* segmentation: images and pixels per class; label values outside the
  classes (after ``reduce_zero_label`` / ``label_map``) other than the
  ignore index, multi-channel labels, image / label size mismatches,
  missing / unreadable files.

It paints the ground truth of a few images (those with problems first) with
mmdet's ``DetLocalVisualizer`` / mmseg's ``SegLocalVisualizer``.
"""
import json
import os.path as osp
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mmcv
import numpy as np
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

SCOPES = ('mmdet', 'mmseg')


class DatasetConfigError(Exception):
    """The config points at data that does not exist or cannot be built."""


@dataclass
class CheckReport:
    """What ``check_dataset`` found.

    Attributes:
        task: ``'detection'`` or ``'segmentation'``.
        classes: the configured class names.
        num_images: images the dataset lists.
        per_class: rows ``(class, images with it, instances or pixels)``.
        errors: problems that drop or corrupt annotations (fail the check).
        warnings: suspicious but usable data.
        drawn: paths of the PNGs painted with the ground truth.
    """
    task: str
    classes: tuple
    num_images: int = 0
    per_class: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    drawn: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.errors

    def format(self, max_lines=20):
        """A readable summary: the per-class table, then the problems."""
        unit = 'instances' if self.task == 'detection' else 'pixels'
        width = max([len('class')] + [len(str(r[0])) for r in self.per_class])
        lines = [f'{self.task} dataset: {self.num_images} images, '
                 f'{len(self.classes)} classes',
                 f'{"class":<{width}}  {"images":>8}  {unit:>10}']
        # Only present classes: an 80 / 150 class table of zeros hides them.
        lines += [f'{name:<{width}}  {images:>8}  {count:>10}'
                  for name, images, count in self.per_class if count]
        absent = sum(1 for row in self.per_class if not row[2])
        if absent:
            lines.append(f'({absent} classes without any {unit})')
        for title, items in (('ERROR', self.errors),
                             ('WARNING', self.warnings)):
            lines += [f'{title}: {item}' for item in items[:max_lines]]
            if len(items) > max_lines:
                lines.append(f'{title}: ... and {len(items) - max_lines} '
                             'more of the same kinds')
        lines.append(f'{len(self.errors)} errors, {len(self.warnings)} '
                     'warnings')
        return '\n'.join(lines)


def _dataset_cfgs(cfg, key):
    """The leaf dataset configs under ``key`` (unwrapping RepeatDataset,
    ClassBalancedDataset and ConcatDataset), each with its config key."""
    node = cfg.get(key.split('.')[0])
    if node is None or 'dataset' not in node:
        raise DatasetConfigError(f'the config has no {key}.dataset: pick '
                                 'another '
                                 '--split or add it to the config.')
    todo, leaves = [(node['dataset'], f'{key}.dataset')], []
    while todo:
        ds, name = todo.pop(0)
        if 'datasets' in ds:
            todo += [(d, f'{name}.datasets[{i}]')
                     for i, d in enumerate(ds['datasets'])]
        elif 'dataset' in ds:
            todo.append((ds['dataset'], f'{name}.dataset'))
        else:
            leaves.append((ds, name))
    return leaves


def _require(path, key):
    if not osp.exists(path):
        raise DatasetConfigError(f'{path} does not exist: fix {key} in the '
                                 'config (or --cfg-options).')


def _check_paths(ds_cfg, key):
    """Clear one-line errors for a missing data root / ann file / folder,
    before the dataset class fails with a less helpful message."""
    data_root = ds_cfg.get('data_root') or ''
    if data_root:
        _require(data_root, f'{key}.data_root')
    ann_file = ds_cfg.get('ann_file') or ''
    if ann_file:
        _require(osp.join(data_root, ann_file), f'{key}.ann_file')
    for name, prefix in (ds_cfg.get('data_prefix') or {}).items():
        if prefix:
            _require(osp.join(data_root, prefix),
                     f'{key}.data_prefix.{name}')


def _image_size(path):
    """(height, width) from the file header, or None if unreadable."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError):
        return None


def _polygon_problem(polygon):
    if len(polygon) < 6 or len(polygon) % 2:
        return f'polygon with {len(polygon)} coordinates (needs an even ' \
               'number, at least 6)'
    xs, ys = np.asarray(polygon[0::2]), np.asarray(polygon[1::2])
    area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
    if area <= 0:
        return 'polygon of zero area'
    return None


def _check_coco_annotation(ann, img, cat_names, classes):
    """Problems of one raw COCO annotation; the first ones make the stock
    ``CocoDataset`` drop it."""
    where = f'annotation id {ann.get("id")} (image {img["file_name"]})'
    cat = ann.get('category_id')
    if cat not in cat_names:
        return [f'{where}: category_id {cat} is not among the json '
                'categories; the loader drops it']
    if cat_names[cat] not in classes:
        return [f'{where}: category {cat_names[cat]!r} (id {cat}) is not a '
                'configured class (metainfo.classes); the loader drops it']
    bbox = ann.get('bbox')
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return [f'{where}: bbox {bbox!r} is not [x, y, w, h]']
    x, y, w, h = bbox
    if w <= 0 or h <= 0 or ann.get('area', 1) <= 0:
        return [f'{where}: bbox {bbox} / area {ann.get("area")} is not '
                'positive; the loader drops it']
    width, height = img['width'], img['height']
    problems = []
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        problems.append(f'{where}: bbox {bbox} lies outside the '
                        f'{width}x{height} image; the loader drops it')
    elif x < 0 or y < 0 or x + w > width or y + h > height:
        problems.append(f'{where}: bbox {bbox} is partly outside the '
                        f'{width}x{height} image')
    seg = ann.get('segmentation')
    if isinstance(seg, list):
        bad = [p for p in map(_polygon_problem, seg) if p] if seg else [
            'empty polygon list']
        problems += [f'{where}: {p}' for p in bad]
    return problems


def _check_coco_json(dataset, report):
    """Checks on the raw json, which sees what the loader silently drops."""
    try:
        with open(dataset.ann_file) as f:
            coco = json.load(f)
    except (OSError, ValueError) as error:
        report.errors.append(f'cannot read {dataset.ann_file}: {error}')
        return set()
    cat_names = {c['id']: c['name'] for c in coco.get('categories', [])}
    classes = set(report.classes)
    missing = sorted(classes - set(cat_names.values()))
    if missing:
        report.warnings.append(
            f'{len(missing)} configured classes have no category in '
            f'{dataset.ann_file}, e.g. {missing[:5]}')
    # CocoDataset numbers the json categories found among the classes in id
    # order, not by their position in metainfo.classes.
    shifted = [f'{cat_names[c]!r}->{report.classes[label]!r}'
               for c, label in getattr(dataset, 'cat2label', {}).items()
               if cat_names.get(c) != report.classes[label]]
    if shifted:
        report.warnings.append(
            f'the loader gives json categories the labels of other class '
            f'names ({", ".join(shifted[:5])}): predictions are displayed '
            'under the wrong names and COCO-pretrained heads do not match; '
            'list the json categories, in id order, as metainfo.classes')
    images = {}
    for img in coco.get('images', []):
        if img['id'] in images:
            report.errors.append(f'duplicate image id {img["id"]}')
        images[img['id']] = img
    ann_ids, annotated, bad_images = set(), set(), set()
    for ann in coco.get('annotations', []):
        if ann.get('id') in ann_ids:
            report.errors.append(f'duplicate annotation id {ann.get("id")}')
        ann_ids.add(ann.get('id'))
        img = images.get(ann.get('image_id'))
        if img is None:
            report.errors.append(f'annotation id {ann.get("id")}: image_id '
                                 f'{ann.get("image_id")} is not in images')
            continue
        annotated.add(img['id'])
        problems = _check_coco_annotation(ann, img, cat_names, classes)
        report.errors += problems
        if problems:
            bad_images.add(img['file_name'])
    empty = [img['file_name'] for i, img in images.items()
             if i not in annotated]
    if empty:
        report.warnings.append(
            f'{len(empty)} images have no annotations (training with '
            f'filter_empty_gt drops them), e.g. {empty[:3]}')
    return bad_images


def _check_detection(dataset, report):
    bad_images = set()
    if dataset.ann_file.endswith('.json'):
        bad_images = _check_coco_json(dataset, report)
    images, instances = Counter(), Counter()
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        size = _image_size(info['img_path'])
        name = osp.basename(info['img_path'])
        if size is None:
            report.errors.append(f'{info["img_path"]}: missing or unreadable')
            bad_images.add(name)
        elif 'height' in info and size != (info['height'], info['width']):
            report.errors.append(
                f'{info["img_path"]}: the file is {size[1]}x{size[0]} but the '
                f'annotation says {info["width"]}x{info["height"]}')
            bad_images.add(name)
        labels = [i['bbox_label'] for i in info['instances']]
        instances.update(labels)
        images.update(set(labels))
        for label in set(labels) - set(range(len(report.classes))):
            report.errors.append(f'{info["img_path"]}: label {label} is '
                                 'beyond the configured classes')
            bad_images.add(name)
    report.per_class = [(c, images[i], instances[i])
                        for i, c in enumerate(report.classes)]
    return bad_images


def _check_segmentation(dataset, report):
    from mmseg.datasets.transforms import LoadAnnotations
    load = LoadAnnotations()
    num_classes = len(report.classes)
    valid = set(range(num_classes)) | {dataset.ignore_index}
    images, pixels, bad_images = Counter(), Counter(), set()
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        name = osp.basename(info['img_path'])
        size = _image_size(info['img_path'])
        if size is None:
            report.errors.append(f'{info["img_path"]}: missing or unreadable')
            bad_images.add(name)
        try:
            label = load(dict(info, seg_fields=[]))['gt_seg_map']
        except Exception as error:  # any decoding failure is the finding
            report.errors.append(f'{info["seg_map_path"]}: missing or '
                                 f'unreadable ({error})')
            bad_images.add(name)
            continue
        if label.ndim != 2:
            report.errors.append(f'{info["seg_map_path"]}: label has shape '
                                 f'{label.shape}, must be single-channel')
            bad_images.add(name)
            continue
        if size is not None and size != label.shape:
            report.errors.append(
                f'{info["seg_map_path"]}: label is {label.shape[1]}x'
                f'{label.shape[0]} but the image is {size[1]}x{size[0]}')
            bad_images.add(name)
        values, counts = np.unique(label, return_counts=True)
        beyond = sorted(int(v) for v in set(values.tolist()) - valid)
        if beyond:
            note = ' (after reduce_zero_label: PNG value = label + 1)' \
                if info.get('reduce_zero_label') else ''
            report.errors.append(
                f'{info["seg_map_path"]}: label values {beyond} are beyond '
                f'the {num_classes} classes and not the ignore index '
                f'{dataset.ignore_index}{note}')
            bad_images.add(name)
        for value, count in zip(values.tolist(), counts.tolist()):
            if value < num_classes:
                pixels[value] += count
                images[value] += 1
    report.per_class = [(c, images[i], pixels[i])
                        for i, c in enumerate(report.classes)]
    return bad_images


def _plain_instances(data_sample):
    """DetLocalVisualizer draws tensors / bool arrays, not the box and mask
    structures that PackDetInputs packs."""
    from mmdet.structures.bbox import BaseBoxes
    from mmdet.structures.mask import BaseInstanceMasks
    gt = data_sample.get('gt_instances')
    if gt is None:
        return
    if isinstance(gt.get('bboxes'), BaseBoxes):
        gt.bboxes = gt.bboxes.tensor
    if isinstance(gt.get('masks'), BaseInstanceMasks):
        gt.masks = gt.masks.to_ndarray().astype(bool)


def _draw(dataset, task, indices, out_dir):
    """Paint the ground truth of ``indices`` with the library visualizer,
    loading each sample with the library's own transforms."""
    from mmengine.registry import TRANSFORMS, VISUALIZERS
    if task == 'detection':
        info0 = dataset.get_data_info(indices[0]) if indices else {}
        with_mask = any('mask' in i for i in info0.get('instances', []))
        steps = [dict(type='LoadImageFromFile'),
                 dict(type='LoadAnnotations', with_bbox=True,
                      with_mask=with_mask),
                 dict(type='PackDetInputs')]
        vis_type = 'DetLocalVisualizer'
    else:
        steps = [dict(type='LoadImageFromFile'),
                 dict(type='LoadAnnotations'),
                 dict(type='PackSegInputs')]
        vis_type = 'SegLocalVisualizer'
    transforms = [TRANSFORMS.build(s) for s in steps]
    visualizer = VISUALIZERS.build(
        dict(type=vis_type, name=f'check_dataset_{id(dataset)}'))
    visualizer.dataset_meta = dataset.metainfo
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn, failures = [], []
    for index in indices:
        results = dataset.get_data_info(index)
        name = Path(results['img_path']).stem
        try:
            for transform in transforms:
                results = transform(results)
            _plain_instances(results['data_samples'])
            image = results['inputs'].permute(1, 2, 0).numpy()[..., ::-1]
            out_file = str(out_dir / f'{name}.png')
            visualizer.add_datasample(name, np.ascontiguousarray(image),
                                      results['data_samples'],
                                      draw_pred=False, out_file=out_file)
            drawn.append(out_file)
        except Exception as error:  # already reported by the checks
            failures.append(f'could not draw {name}: {error}')
    return drawn, failures


def check_dataset(config, split='train', out_dir=None, show_number=4,
                  cfg_options=None):
    """Check the dataset of ``{split}_dataloader`` in an mmdet / mmseg
    config (a path or an ``mmengine.Config``).

    Args:
        config: config path or ``Config``; its ``default_scope`` (``mmdet``
            or ``mmseg``) selects the checks.
        split: ``'train'``, ``'val'`` or ``'test'``.
        out_dir: where to write the painted ground truth PNGs; None: none.
        show_number: images to paint per dataset (problematic ones first;
            each part of a ConcatDataset counts as one dataset).
        cfg_options: dict merged into the config.

    Returns:
        CheckReport

    Raises:
        DatasetConfigError: missing data root / ann file / image folder,
            unknown scope, or a dataset that cannot be built.
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise DatasetConfigError(
            f'default_scope={scope!r}: set default_scope to one of {SCOPES} '
            'in the config.')
    init_default_scope(scope)
    from mmengine.registry import DATASETS
    task = 'detection' if scope == 'mmdet' else 'segmentation'
    report = None
    for ds_cfg, key in _dataset_cfgs(cfg, f'{split}_dataloader'):
        _check_paths(ds_cfg, key)
        try:
            dataset = DATASETS.build(ds_cfg)
        except Exception as error:
            raise DatasetConfigError(
                f'building {key} failed: {type(error).__name__}: {error}'
            ) from error
        part = CheckReport(task, tuple(dataset.metainfo['classes']),
                           num_images=len(dataset))
        check = _check_detection if task == 'detection' else \
            _check_segmentation
        bad = check(dataset, part)
        if out_dir and show_number > 0:
            order = sorted(range(len(dataset)), key=lambda i: osp.basename(
                dataset.get_data_info(i)['img_path']) not in bad)
            part.drawn, failures = _draw(dataset, task,
                                         order[:show_number], out_dir)
            part.warnings += failures
        report = part if report is None else _merge(report, part)
    return report


def _merge(a, b):
    """One report for the leaves of a ConcatDataset."""
    rows = {name: (imgs, count) for name, imgs, count in a.per_class}
    for name, imgs, count in b.per_class:
        old = rows.get(name, (0, 0))
        rows[name] = (old[0] + imgs, old[1] + count)
    return CheckReport(a.task, a.classes, a.num_images + b.num_images,
                       [(n, *v) for n, v in rows.items()],
                       a.errors + b.errors, a.warnings + b.warnings,
                       a.drawn + b.drawn)
