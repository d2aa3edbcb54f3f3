"""Check the dataset of any mmdet (COCO-style) or mmseg config.

The stock loaders silently drop what they cannot use (COCO annotations with
unknown categories or boxes outside the image, images without boxes) and
fail late, mid-training, on broken images and labels.  ``check_dataset``
builds the configured dataset with the library's own registry, reads every
annotation, decodes every image fully with the pipeline's own
``LoadImageFromFile`` settings, and reports:

* detection: images and instances per class; from the raw COCO json, a
  ``metainfo.classes`` order that gives categories each other's labels
  (with the ``classes = (...)`` line that fixes it), json categories left
  out of the classes (one summary line), annotations whose category id is
  not a json category, boxes partly / fully outside the image, boxes with
  non-finite or non-positive values, empty / degenerate polygons,
  annotations of unknown images, duplicate ids, json sizes that differ
  from the decoded images, images without annotations (a warning: the
  training loader drops them);
* segmentation: images and pixels per class; label values outside the
  classes (after ``reduce_zero_label`` / ``label_map``) other than the
  ignore index, multi-channel labels, image / label size mismatches;
* both: missing, empty, truncated or undecodable images, and images whose
  EXIF orientation tag makes mmcv decode them turned (or, with an
  ``*_ignore_orientation`` loader, not turned) against their annotations.

It paints the ground truth of a few images (those with problems first) with
mmdet's ``DetLocalVisualizer`` / mmseg's ``SegLocalVisualizer``.
"""
import io
import json
import math
import os
import os.path as osp
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image, UnidentifiedImageError

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


def split_dataset_cfgs(cfg):
    """``(split, leaf dataset config, its key)`` of every dataloader of the
    config that has a dataset."""
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader and 'dataset' in loader:
            for ds_cfg, key in _dataset_cfgs(cfg, f'{split}_dataloader'):
                yield split, ds_cfg, key


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


EXIF_ORIENTATION = 0x0112
# EXIF orientations that swap width and height (90-degree turns).
TURNS_90 = (5, 6, 7, 8)


@dataclass
class _Decoded:
    """One image as a run decodes it.

    Attributes:
        shape: (height, width) of the pixels ``LoadImageFromFile`` returns.
        stored: (height, width) of the pixels as stored in the file.
        orientation: the EXIF orientation tag, 1 when there is none.
        problem: why the image cannot be used (None: it can).
    """
    shape: tuple = None
    stored: tuple = None
    orientation: int = 1
    problem: str = None


def _image_loader(dataset):
    """The pipeline's ``LoadImageFromFile`` (what a run decodes images
    with); mmcv's defaults when the pipeline has none."""
    from mmcv.transforms import LoadImageFromFile
    return next((t for t in getattr(dataset.pipeline, 'transforms', [])
                 if isinstance(t, LoadImageFromFile)), LoadImageFromFile())


def _decode(path, loader):
    """Read and decode ``path`` fully, as ``loader`` does in a run, and with
    Pillow, which also reports truncated data that a lenient decoder (older
    OpenCV) fills with grey."""
    try:
        content = fileio.get(path, backend_args=loader.backend_args)
    except FileNotFoundError:
        return _Decoded(problem='missing')
    except OSError as error:
        return _Decoded(problem=f'unreadable ({error})')
    if not content:
        return _Decoded(problem='empty file (0 bytes)')
    backend = loader.imdecode_backend
    try:
        img = mmcv.imfrombytes(content, flag=loader.color_type,
                               backend=backend)
    except Exception:  # each backend raises its own kinds
        img = None
    if img is None:
        return _Decoded(problem=f'truncated or corrupt: mmcv ({backend} '
                        'backend) cannot decode it')
    shape = img.shape[:2]
    try:
        with Image.open(io.BytesIO(content)) as pil:
            pil.load()
            stored = pil.height, pil.width
            orientation = pil.getexif().get(EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return _Decoded(shape, shape)  # a file only the loader reads
    except (OSError, ValueError, SyntaxError) as error:
        return _Decoded(shape, problem=f'truncated or corrupt ({error})')
    return _Decoded(shape, stored, orientation if orientation in range(
        2, 9) else 1)


def _decode_all(paths, loader, workers):
    """``_decode`` of each path (decoders release the GIL: threads)."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda path: _decode(path, loader), paths))


def _loader_turns(loader):
    """Whether ``loader`` turns images as their EXIF orientation says:
    mmcv's cv2 and pillow backends do for color_type 'color' and
    'grayscale'; 'unchanged', '*_ignore_orientation' and the turbojpeg /
    tifffile backends keep the stored pixels."""
    return loader.color_type in ('color', 'grayscale') and \
        loader.imdecode_backend in ('cv2', 'pillow')


def _loader_keys(cfg):
    """The config keys of every ``LoadImageFromFile`` in the dataloaders'
    pipelines, e.g. ``train_dataloader.dataset.pipeline.0``."""
    return [f'{key}.pipeline.{i}'
            for _, ds_cfg, key in split_dataset_cfgs(cfg)
            for i, t in enumerate(ds_cfg.get('pipeline') or [])
            if isinstance(t, dict)
            and str(t.get('type')).split('.')[-1] == 'LoadImageFromFile']


def _orientation_fix(loader, keys):
    """The flags that switch every pipeline's loader to the other frame:
    stored pixels when ``loader`` turns images, turned ones otherwise."""
    if _loader_turns(loader):
        options = {'color_type': {'grayscale': 'grayscale_ignore_orientation'}
                   .get(loader.color_type, 'color_ignore_orientation')}
    else:
        options = {'color_type': 'grayscale' if 'grayscale' in str(
            loader.color_type) else 'color'}
        if loader.imdecode_backend not in ('cv2', 'pillow'):
            options['imdecode_backend'] = 'cv2'
    if not keys:
        return ('LoadImageFromFile(' + ', '.join(
            f'{k}={v!r}' for k, v in options.items()) + ') in every '
                'pipeline')
    return '--cfg-options ' + ' '.join(f'{key}.{k}={v}' for key in keys
                                       for k, v in options.items())


def _check_orientation(rows, loader, keys, annotated, report):
    """Compare, for each image with an EXIF orientation tag, the frame the
    loader decodes (turned or stored) with the size its annotation has.

    Args:
        rows: ``(name, _Decoded, annotated (height, width))`` per decoded
            image with an orientation tag.
        keys: ``_loader_keys`` of the config.
        annotated: what the annotated size is, for the messages.

    Returns:
        the names of the images whose annotations may miss their objects.
    """
    turns = _loader_turns(loader)
    fix = _orientation_fix(loader, keys)
    how = (f'LoadImageFromFile (color_type={loader.color_type!r}, '
           f'imdecode_backend={loader.imdecode_backend!r}) decodes them ' +
           ('turned as the tag says' if turns else
            'as stored, ignoring the tag'))
    wrong, unknown, fine, neither = [], [], [], []
    for name, decoded, size in rows:
        stored = decoded.stored
        turned = stored[::-1] if decoded.orientation in TURNS_90 else stored
        example = (f'{name}: orientation {decoded.orientation}, decoded '
                   f'{decoded.shape[1]}x{decoded.shape[0]}, annotated '
                   f'{size[1]}x{size[0]}')
        if stored == turned and size == decoded.shape:
            unknown.append((name, example))
        elif size == decoded.shape:
            fine.append((name, example))
        elif size == (stored if turns else turned):
            wrong.append((name, example))
        else:
            neither.append((name, example))
            report.errors.append(f'{example}: the {annotated} fit neither '
                                 'the stored nor the turned pixels')

    def some(items):
        shown = '; '.join(e for _, e in items[:3])
        return shown + ('; ...' if len(items) > 3 else '')

    if wrong:
        report.errors.append(
            f'EXIF orientation tag on {len(wrong)} image(s) ({some(wrong)}): '
            f'{how}, but their {annotated} fit the '
            f'{"stored" if turns else "turned"} pixels, so the annotations '
            f'miss their objects; make pixels and annotations agree with '
            f'{fix}')
    if unknown:
        report.warnings.append(
            f'EXIF orientation tag that keeps the size on {len(unknown)} '
            f'image(s) ({some(unknown)}): {how}; sizes cannot tell whether '
            'they were annotated on the stored or the turned pixels: if the '
            'painted ground truth (--out-dir) misses the objects, use '
            f'{fix}')
    if fine:
        report.warnings.append(
            f'EXIF orientation tag on {len(fine)} image(s) ({some(fine)}): '
            f'{how}, which their {annotated} match; keep LoadImageFromFile '
            'as it is in every pipeline')
    return {name for name, _ in wrong + unknown + neither}


def _polygon_problem(polygon):
    if len(polygon) < 6 or len(polygon) % 2:
        return f'polygon with {len(polygon)} coordinates (needs an even ' \
               'number, at least 6)'
    if not _finite(polygon):
        return 'polygon with NaN / Inf coordinates'
    xs, ys = np.asarray(polygon[0::2]), np.asarray(polygon[1::2])
    area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
    if area <= 0:
        return 'polygon of zero area'
    return None


def _finite(values):
    return all(isinstance(v, (int, float)) and math.isfinite(v)
               for v in values)


def _check_coco_annotation(ann, img, where, loads_masks):
    """Problems of one raw COCO annotation of a configured class; the first
    ones make the stock ``CocoDataset`` drop it."""
    bbox = ann.get('bbox')
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return [f'{where}: bbox {bbox!r} is not [x, y, w, h]']
    if not _finite([*bbox, ann.get('area', 1)]):
        return [f'{where}: bbox {bbox} / area {ann.get("area")} is not '
                'finite (NaN or Inf): fix or remove the annotation']
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
    if not seg and loads_masks:
        problems.append(f'{where}: {EMPTY_SEGMENTATION}: give it a polygon '
                        'or RLE mask, or remove it')
    elif isinstance(seg, list):
        problems += [f'{where}: {p}' for p in map(_polygon_problem, seg) if p]
    return problems


# What CocoDataset + LoadAnnotations(with_mask=True) make of an annotation
# with an empty segmentation.
EMPTY_SEGMENTATION = ("empty segmentation, which LoadAnnotations("
                      "with_mask=True) cannot load (KeyError: 'mask')")


def selected_categories(categories, classes):
    """The json categories mmdet's ``CocoDataset`` trains on, in label
    order: pycocotools' ``getCatIds(catNms=classes)`` keeps the order of the
    json's ``categories`` list, whatever the order of ``classes``."""
    wanted = set(classes)
    return [c for c in categories if c.get('name') in wanted]


def classes_line(categories, classes):
    """The ``classes = (...)`` line under which every selected json
    category gets its own name: the selected categories in json order, then
    the classes without a json category (they get no label)."""
    names = [c['name'] for c in selected_categories(categories, classes)]
    names += [c for c in classes if c not in set(names)]
    return f'classes = {tuple(names)!r}'


def _left_out(coco, images, classes, drops_empty):
    """One line on the json categories outside ``classes``: the annotations
    the loader drops and the images training then drops; None if none."""
    wanted = set(classes)
    names = {c['id']: c['name'] for c in coco.get('categories', [])}
    dropped, kept_images, touched = Counter(), set(), set()
    for ann in coco.get('annotations', []):
        cat, image = ann.get('category_id'), ann.get('image_id')
        if image not in images or cat not in names:
            continue
        if names[cat] in wanted:
            kept_images.add(image)
        else:
            dropped[cat] += 1
            touched.add(image)
    if not dropped:
        return None
    listed = ', '.join(f'{names[c]!r} (id {c}, {n} annotations)'
                       for c, n in dropped.most_common(5))
    more = f' and {len(dropped) - 5} more' if len(dropped) > 5 else ''
    lost = len(touched - kept_images)
    images_note = (f'training drops the {lost} image(s) left without any '
                   '(filter_empty_gt)' if drops_empty else
                   f'{lost} image(s) are left without any')
    return (f'json categories outside metainfo.classes: {listed}{more}; the '
            f'loader drops these {sum(dropped.values())} annotations, and '
            f'{images_note}')


def _loader_keeps(ann, img, category_ids):
    """Whether mmdet's ``CocoDataset.parse_data_info`` keeps ``ann``: its
    conditions, in its expressions (so NaN behaves as there)."""
    bbox = ann.get('bbox')
    if ann.get('ignore', False) or ann.get('category_id') not in \
            category_ids or not isinstance(bbox, (list, tuple)) or \
            len(bbox) != 4 or not _finite([*bbox, ann.get('area', 0)]):
        return False
    x1, y1, w, h = bbox
    inter_w = max(0, min(x1 + w, img['width']) - max(x1, 0))
    inter_h = max(0, min(y1 + h, img['height']) - max(y1, 0))
    return inter_w * inter_h != 0 and not (
        ann.get('area', 0) <= 0 or w < 1 or h < 1)


def coco_run_problems(coco, ann_file, key, classes, filter_cfg=None,
                      test_mode=False, loads_masks=False):
    """The problems of a COCO json that stop a run of mmdet's
    ``CocoDataset`` (one line each, naming the fix): no image left for the
    dataset, or annotations ``LoadAnnotations(with_mask=True)`` cannot
    load.

    Args:
        coco: the parsed json.
        ann_file: its path, for the messages.
        key: the dataset's config key, e.g. ``train_dataloader.dataset``.
        classes: the dataset's ``metainfo.classes``.
        filter_cfg, test_mode: the dataset's.
        loads_masks: whether the pipeline loads masks.
    """
    images = {img.get('id'): img for img in coco.get('images', [])}
    if not images:
        return [f'{ann_file} lists no images: point {key}.ann_file at the '
                "json of the dataset's images"]
    selected = selected_categories(coco.get('categories', []), classes)
    ids = {c['id'] for c in selected}
    anns = [a for a in coco.get('annotations', [])
            if a.get('image_id') in images]
    problems = []
    if filter_cfg and not test_mode:
        kept = set(images)
        if filter_cfg.get('filter_empty_gt'):
            kept = {a['image_id'] for a in anns
                    if a.get('category_id') in ids}
            every = [c['name'] for c in coco.get('categories', [])]
            if not anns:
                problems.append(
                    f'{ann_file} has no annotations, and {key}.filter_cfg.'
                    'filter_empty_gt drops images without any, so no image '
                    f'is left to train on: point {key}.ann_file at the '
                    'annotated json')
            elif not kept:
                problems.append(
                    f'none of the {len(anns)} annotations in {ann_file} has '
                    f'a category among {key}.metainfo.classes, so '
                    'filter_empty_gt leaves no image to train on: set '
                    'metainfo.classes to json category names, e.g. '
                    f'{classes_line(coco.get("categories", []), every)}')
        min_size = filter_cfg.get('min_size', 0)
        if kept and all(min(images[i]['width'], images[i]['height']) <
                        min_size for i in kept):
            problems.append(
                f'all {len(kept)} images {key} would keep from {ann_file} '
                f'are smaller than {key}.filter_cfg.min_size={min_size}, '
                f'which drops them: lower {key}.filter_cfg.min_size')
    if loads_masks:
        empty = [a for a in anns if not a.get('segmentation') and
                 _loader_keeps(a, images[a['image_id']], ids)]
        if empty:
            first = empty[0]
            problems.append(
                f'{len(empty)} annotations in {ann_file} have an '
                f'{EMPTY_SEGMENTATION} (e.g. annotation id {first.get("id")} '
                f'of {images[first["image_id"]].get("file_name")}): give '
                'each a polygon or RLE mask, or remove them')
    return problems


def is_coco_json(ds_cfg):
    """Whether ``ds_cfg`` builds an mmdet ``CocoDataset`` (or a subclass)
    from a local json (the default scope selects the registry)."""
    if not str(ds_cfg.get('ann_file') or '').endswith('.json') or \
            ds_cfg.get('backend_args'):
        return False
    cls = _dataset_class(ds_cfg)
    try:
        from mmdet.datasets import CocoDataset
    except ImportError:  # an mmseg-only installation
        return False
    return isinstance(cls, type) and issubclass(cls, CocoDataset)


def _dataset_class(ds_cfg):
    """The class ``ds_cfg['type']`` names in the default scope."""
    from mmengine.registry import DATASETS
    if not isinstance(ds_cfg.get('type'), str):
        return ds_cfg.get('type')
    with DATASETS.switch_scope_and_registry(None) as registry:
        return registry.get(ds_cfg['type'])


def configured_classes(ds_cfg):
    """The dataset's ``metainfo.classes``: the config's, else its class's."""
    classes = (ds_cfg.get('metainfo') or {}).get('classes')
    if classes is None:
        classes = _dataset_class(ds_cfg).METAINFO['classes']
    return tuple(classes)


def pipeline_loads_masks(ds_cfg):
    """Whether the dataset's pipeline config loads instance masks."""
    return any(isinstance(t, dict) and 'LoadAnnotations' in str(
        t.get('type')) and t.get('with_mask') for t in
        ds_cfg.get('pipeline') or [])


def read_coco_run_problems(ds_cfg, key, masks=True):
    """``coco_run_problems`` of a COCO-json dataset config (read from its
    ``ann_file``), with unreadable jsons as a problem; [] for datasets of
    other kinds. ``masks=False`` leaves out the mask loading problems."""
    if not is_coco_json(ds_cfg):
        return []
    ann_file = osp.join(ds_cfg.get('data_root') or '', ds_cfg['ann_file'])
    try:
        with open(ann_file) as f:
            coco = json.load(f)
    except (OSError, ValueError) as error:
        return [f'{ann_file} is not a readable json ({error}): fix it or '
                f'{key}.ann_file']
    return coco_run_problems(coco, ann_file, key, configured_classes(ds_cfg),
                             ds_cfg.get('filter_cfg'),
                             ds_cfg.get('test_mode', False),
                             masks and pipeline_loads_masks(ds_cfg))


def _check_coco_json(dataset, report, loads_masks):
    """Checks on the raw json, which sees what the loader silently drops."""
    try:
        with open(dataset.ann_file) as f:
            coco = json.load(f)
    except (OSError, ValueError) as error:
        report.errors.append(f'cannot read {dataset.ann_file}: {error}')
        return set()
    categories = coco.get('categories', [])
    cat_names = {c['id']: c['name'] for c in categories}
    classes = set(report.classes)
    missing = sorted(classes - set(cat_names.values()))
    if missing:
        report.warnings.append(
            f'{len(missing)} configured classes have no category in '
            f'{dataset.ann_file}, e.g. {missing[:5]}')
    named = Counter(c['name'] for c in categories)
    twice = sorted(n for n, k in named.items() if k > 1 and n in classes)
    if twice:
        report.errors.append(
            f'{dataset.ann_file} has several categories named {twice}: the '
            'loader gives each its own label; merge them into one category '
            'id')
    shifted = [f'{c["name"]!r} -> {report.classes[label]!r}'
               for label, c in enumerate(selected_categories(categories,
                                                             classes))
               if label < len(report.classes)
               and c['name'] != report.classes[label]]
    if shifted and not twice:
        report.errors.append(
            'metainfo.classes lists the json categories in another order '
            f'than {dataset.ann_file}: CocoDataset numbers them in the '
            "order of the json's categories list, so they get other names "
            f'({", ".join(shifted[:5])}); list them in that order: '
            f'{classes_line(categories, report.classes)}')
    images = {}
    for img in coco.get('images', []):
        if img['id'] in images:
            report.errors.append(f'duplicate image id {img["id"]}')
        images[img['id']] = img
    drops_empty = bool((dataset.filter_cfg or {}).get(
        'filter_empty_gt')) and not dataset.test_mode
    left_out = _left_out(coco, images, classes, drops_empty)
    if left_out:
        report.warnings.append(left_out)
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
        where = f'annotation id {ann.get("id")} (image {img["file_name"]})'
        cat = ann.get('category_id')
        if cat not in cat_names:
            problems = [f'{where}: category_id {cat} is not among the json '
                        'categories; the loader drops it']
        elif cat_names[cat] in classes:
            problems = _check_coco_annotation(ann, img, where, loads_masks)
        else:
            problems = []  # summed up by _left_out
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


def _check_detection(dataset, report, keys, workers):
    loader = _image_loader(dataset)
    loads_masks = any(getattr(t, 'with_mask', False) for t in getattr(
        dataset.pipeline, 'transforms', []))
    bad_images = set()
    if dataset.ann_file.endswith('.json'):
        bad_images = _check_coco_json(dataset, report, loads_masks)
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    decoded = _decode_all([i['img_path'] for i in infos], loader, workers)
    images, instances, oriented = Counter(), Counter(), []
    for info, image in zip(infos, decoded):
        name = osp.basename(info['img_path'])
        size = (info.get('height'), info.get('width'))
        if image.problem:
            report.errors.append(f'{info["img_path"]}: {image.problem}')
            bad_images.add(name)
        elif image.orientation != 1:
            oriented.append((name, image, size))
        elif 'height' in info and image.shape != size:
            report.errors.append(
                f'{info["img_path"]}: the file is {image.shape[1]}x'
                f'{image.shape[0]} but the annotation says '
                f'{info["width"]}x{info["height"]}')
            bad_images.add(name)
        labels = [i['bbox_label'] for i in info['instances']]
        instances.update(labels)
        images.update(set(labels))
        for label in set(labels) - set(range(len(report.classes))):
            report.errors.append(f'{info["img_path"]}: label {label} is '
                                 'beyond the configured classes')
            bad_images.add(name)
    bad_images |= _check_orientation(oriented, loader, keys,
                                     'json width / height', report)
    report.per_class = [(c, images[i], instances[i])
                        for i, c in enumerate(report.classes)]
    return bad_images


def _check_segmentation(dataset, report, keys, workers):
    from mmseg.datasets.transforms import LoadAnnotations
    load = LoadAnnotations()
    loader = _image_loader(dataset)
    num_classes = len(report.classes)
    valid = set(range(num_classes)) | {dataset.ignore_index}
    images, pixels, bad_images = Counter(), Counter(), set()
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    decoded = _decode_all([i['img_path'] for i in infos], loader, workers)
    oriented = []
    for info, image in zip(infos, decoded):
        name = osp.basename(info['img_path'])
        if image.problem:
            report.errors.append(f'{info["img_path"]}: {image.problem}')
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
        if image.orientation != 1 and not image.problem:
            oriented.append((name, image, label.shape))
        elif image.shape is not None and image.shape != label.shape:
            report.errors.append(
                f'{info["seg_map_path"]}: label is {label.shape[1]}x'
                f'{label.shape[0]} but the image is {image.shape[1]}x'
                f'{image.shape[0]}')
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
    bad_images |= _check_orientation(oriented, loader, keys, 'label maps',
                                     report)
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
        steps = [dict(type='LoadAnnotations', with_bbox=True,
                      with_mask=with_mask),
                 dict(type='PackDetInputs')]
        vis_type = 'DetLocalVisualizer'
    else:
        steps = [dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
        vis_type = 'SegLocalVisualizer'
    # The run's own image loader: its EXIF handling is what is checked.
    transforms = [_image_loader(dataset)] + [
        TRANSFORMS.build(s) for s in steps]
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
                  cfg_options=None, workers=None):
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
        workers: threads decoding images; None: one per CPU, at most 8.

    Returns:
        CheckReport

    Raises:
        DatasetConfigError: missing data root / ann file / image folder,
            unknown scope, or a COCO json that leaves the dataset without
            images, or a dataset that cannot be built.
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
    keys = _loader_keys(cfg)
    workers = workers or min(8, os.cpu_count() or 1)
    report = None
    for ds_cfg, key in _dataset_cfgs(cfg, f'{split}_dataloader'):
        _check_paths(ds_cfg, key)
        # The annotations LoadAnnotations cannot load are listed one by one
        # below; what leaves the dataset empty stops the build.
        blockers = read_coco_run_problems(ds_cfg, key, masks=False)
        if blockers:
            raise DatasetConfigError(blockers[0])
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
        bad = check(dataset, part, keys, workers)
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
