"""Check the dataset of any mmdet or mmseg config as their own dataset
classes load it.

``check_dataset`` builds the configured dataset with the library's registry
(under the config's ``default_scope``) and reports what the class loads and
what it drops: images its ``filter_cfg`` leaves out (and why), and, for
COCO jsons, the annotations ``CocoDataset.parse_data_info`` drops, the
categories outside ``metainfo.classes`` and a classes order that gives
categories each other's labels (with the ``classes = (...)`` line that fixes
it). What the libraries leave to a run is ours: every image is decoded fully
with the pipeline's own ``LoadImageFromFile`` (missing, empty, truncated,
oversized files; an EXIF orientation that turns the pixels against their
annotations), every annotation goes through the pipeline's own
``LoadAnnotations``, boxes must be finite, and segmentation label values must
be classes or the ignore index.
"""
import contextlib
import io
import os
import os.path as osp
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmengine.config import Config
from mmengine.registry import DATASETS, init_default_scope
from PIL import Image

SCOPES = ('mmdet', 'mmseg')
EXIF_ORIENTATION = 0x0112
TURNS_90 = (5, 6, 7, 8)  # orientations that swap width and height


class DatasetConfigError(Exception):
    """The config points at data that does not exist or cannot be built."""


@dataclass
class CheckReport:
    """What ``check_dataset`` found: ``errors`` drop or corrupt annotations
    (they fail the check), ``warnings`` are usable but worth a look;
    ``images`` / ``counts`` count per label the loaded images holding it and
    its instances (detection) or pixels (segmentation)."""
    task: str
    classes: tuple
    num_images: int = 0
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    images: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)

    @property
    def ok(self):
        return not self.errors

    @property
    def per_class(self):
        """Rows ``(class, images with it, instances or pixels)``."""
        return [(c, self.images[i], self.counts[i])
                for i, c in enumerate(self.classes)]

    def format(self, max_lines=20):
        """The per-class table (present classes only), then the problems."""
        unit = 'instances' if self.task == 'detection' else 'pixels'
        width = max([5] + [len(c) for c in self.classes])
        lines = [f'{self.task} dataset: {self.num_images} images, '
                 f'{len(self.classes)} classes',
                 f'{"class":<{width}}  {"images":>8}  {unit:>10}']
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
                             'more')
        lines.append(f'{len(self.errors)} errors, {len(self.warnings)} '
                     'warnings')
        return '\n'.join(lines)


def _leaves(ds_cfg, key):
    """The leaf dataset configs (inside RepeatDataset, ConcatDataset, ...)
    with their config keys."""
    if 'datasets' in ds_cfg:
        for i, part in enumerate(ds_cfg['datasets']):
            yield from _leaves(part, f'{key}.datasets[{i}]')
    elif 'dataset' in ds_cfg:
        yield from _leaves(ds_cfg['dataset'], f'{key}.dataset')
    else:
        yield ds_cfg, key


def split_dataset_cfgs(cfg):
    """``(split, leaf dataset config, its key)`` of every dataloader of the
    config that has a dataset."""
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader and 'dataset' in loader:
            for ds_cfg, key in _leaves(loader['dataset'],
                                       f'{split}_dataloader.dataset'):
                yield split, ds_cfg, key


def _check_paths(ds_cfg, key):
    """One line naming the config key of a missing data root / ann file /
    folder (the dataset class names only the path)."""
    root = ds_cfg.get('data_root') or ''
    paths = [(root, 'data_root'), (ds_cfg.get('ann_file'), 'ann_file')] + [
        (prefix, f'data_prefix.{name}')
        for name, prefix in (ds_cfg.get('data_prefix') or {}).items()]
    for path, name in paths:
        if path and not osp.exists(osp.join(root, path)):
            raise DatasetConfigError(
                f'{osp.join(root, path)} does not exist: fix {key}.{name} '
                'in the config (or --cfg-options).')


def _build(ds_cfg, key):
    """The dataset, or one line for whatever its data makes the class raise
    (a json nested too deep, ``images`` that are no list, ...)."""
    try:
        return DATASETS.build(ds_cfg)
    except Exception as error:  # anything the data makes the class raise
        message = (str(error).splitlines() or [''])[0][:200]
        source = osp.join(ds_cfg.get('data_root') or '',
                          ds_cfg.get('ann_file') or '')
        raise DatasetConfigError(
            f'{ds_cfg.get("type")} cannot load {source} '
            f'({type(error).__name__}: {message}): fix the data or {key} '
            'in the config.') from None


@dataclass
class _Decoded:
    """One image as a run decodes it: ``shape`` (height, width) that
    ``LoadImageFromFile`` returns, ``stored`` in the file, the EXIF
    ``orientation`` (1: none), or the ``problem`` that makes it unusable."""
    shape: tuple = None
    stored: tuple = None
    orientation: int = 1
    problem: str = None


def _decode(path, loader):
    """Decode ``path`` fully, as ``loader`` does in a run and with Pillow,
    which also finds truncated data a lenient decoder fills with grey."""
    try:
        content = fileio.get(path, backend_args=loader.backend_args)
    except FileNotFoundError:
        return _Decoded(problem='missing')
    except OSError as error:
        return _Decoded(problem=f'unreadable ({error})')
    if not content:
        return _Decoded(problem='empty file (0 bytes)')
    try:
        pil = Image.open(io.BytesIO(content))  # the header only
    except Image.DecompressionBombError as error:
        return _Decoded(problem=f'too large to decode ({error})')
    except Exception:  # a format only the loader's backend reads
        pil = None
    try:
        img = mmcv.imfrombytes(content, flag=loader.color_type,
                               backend=loader.imdecode_backend)
    except Exception:  # each backend raises its own kinds
        img = None
    if img is None:
        return _Decoded(problem='truncated or corrupt: mmcv '
                        f'({loader.imdecode_backend} backend) cannot '
                        'decode it')
    if pil is None:
        return _Decoded(img.shape[:2], img.shape[:2])
    try:
        pil.load()
    except (OSError, ValueError, SyntaxError) as error:
        return _Decoded(img.shape[:2], problem=f'truncated or corrupt '
                        f'({error})')
    orientation = pil.getexif().get(EXIF_ORIENTATION, 1)
    return _Decoded(img.shape[:2], (pil.height, pil.width),
                    orientation if orientation in range(2, 9) else 1)


def _orientation_fix(cfg, loader):
    """The ``--cfg-options`` that switch every pipeline's image loader to
    the other frame: stored pixels if ``loader`` turns images as their EXIF
    tag says (mmcv's cv2 / pillow backends with color_type 'color' or
    'grayscale'), turned ones otherwise."""
    turns = loader.color_type in ('color', 'grayscale') and \
        loader.imdecode_backend in ('cv2', 'pillow')
    color = 'grayscale' if 'grayscale' in loader.color_type else 'color'
    options = dict(color_type=color + '_ignore_orientation' * turns)
    if not turns and loader.imdecode_backend not in ('cv2', 'pillow'):
        options['imdecode_backend'] = 'cv2'
    keys = [f'{key}.pipeline.{i}' for _, ds_cfg, key in split_dataset_cfgs(cfg)
            for i, t in enumerate(ds_cfg.get('pipeline') or [])
            if str(t.get('type')).endswith('LoadImageFromFile')]
    return turns, '--cfg-options ' + ' '.join(
        f'{key}.{k}={v}' for key in keys for k, v in options.items())


def _check_image(path, image, annotated, exif, report):
    """The decoded image against the size its annotations give
    (``annotated``: (what, (height, width)) or None)."""
    what, size = annotated or ('', None)
    if image.problem:
        report.errors.append(f'{path}: {image.problem}')
    elif size is not None and size != image.shape:
        error = (f'{path}: decoded {image.shape[1]}x{image.shape[0]} but '
                 f'its {what} is {size[1]}x{size[0]}')
        if image.orientation in TURNS_90 and size == image.shape[::-1]:
            turns, fix = exif
            error += (f': LoadImageFromFile {"turns" if turns else "ignores"}'
                      f' its EXIF orientation {image.orientation}, and its '
                      f'{what} matches the '
                      f'{"stored" if turns else "turned"} pixels; make '
                      f'them agree with {fix}')
        report.errors.append(error)
    elif image.orientation != 1 and (image.orientation not in TURNS_90
                                     or image.shape == image.shape[::-1]):
        report.warnings.append(
            f'{path}: EXIF orientation {image.orientation}, which keeps the '
            'size: sizes cannot tell whether its annotations fit the stored '
            "or the turned pixels; look with mmdet's / mmseg's "
            f'browse_dataset.py; {exif[1]} switches the frame')


def _check_coco(dataset, report):
    """What ``CocoDataset`` drops from its json, and a classes order that
    gives the categories each other's names."""
    with fileio.get_local_path(dataset.ann_file, backend_args=dataset
                               .backend_args) as local, \
            contextlib.redirect_stdout(io.StringIO()):  # pycocotools' chat
        coco = dataset.COCOAPI(local)
    source = dataset.ann_file
    names = [coco.cats[i]['name'] for i in dataset.cat_ids]
    if names[:len(report.classes)] != list(report.classes)[:len(names)]:
        line = tuple(names + [c for c in report.classes if c not in names])
        report.errors.append(
            f'metainfo.classes lists the json categories in another order '
            f'than {source}: CocoDataset labels them in the order of its '
            'categories list (pycocotools getCatIds), so they get other '
            f'names; list them in that order: classes = {line!r}')
    if len(coco.imgs) != len(coco.dataset['images']):
        report.errors.append(f'{source} lists some image ids more than '
                             'once: CocoDataset loads each id once')
    outside = Counter()
    for ann in coco.anns.values():
        cat, img = ann.get('category_id'), coco.imgs.get(ann.get('image_id'))
        where = f'annotation id {ann.get("id")}'
        if img is None:
            report.errors.append(f'{where}: image_id {ann.get("image_id")} '
                                 'is not in images; CocoDataset drops it')
        elif cat not in coco.cats:
            report.errors.append(f'{where} ({img["file_name"]}): category_id'
                                 f' {cat} is no json category; CocoDataset '
                                 'drops it')
        elif cat not in dataset.cat_ids:
            outside[coco.cats[cat]['name'], cat] += 1
        elif not dataset.parse_data_info(dict(
                raw_ann_info=[ann], raw_img_info=dict(img, img_id=img['id'])
        ))['instances']:
            report.errors.append(f'{where} ({img["file_name"]}): '
                                 f'{_why_dropped(ann, img)}; CocoDataset '
                                 'drops it')
    if outside:
        listed = ', '.join(f'{name!r} (id {cat}, {n})'
                           for (name, cat), n in outside.most_common(5))
        report.warnings.append(
            f'{sum(outside.values())} annotations of json categories outside'
            f' metainfo.classes, which CocoDataset drops: {listed}' +
            (f' and {len(outside) - 5} more' if len(outside) > 5 else ''))


def _why_dropped(ann, img):
    """Which of ``CocoDataset.parse_data_info``'s conditions ``ann`` fails,
    in words."""
    bbox, area = ann['bbox'], ann.get('area')
    if ann.get('ignore', False):
        return "it has 'ignore' set"
    if not np.isfinite(np.asarray([*bbox, area], float)).all():
        return f'bbox {bbox} / area {area} is not finite (NaN or Inf)'
    if bbox[2] < 1 or bbox[3] < 1 or area <= 0:
        return f'bbox {bbox} / area {area} is under one pixel'
    return f'bbox {bbox} lies outside the {img["width"]}x{img["height"]} ' \
        'image'


def _report_dropped(ds_cfg, key, infos, kept, report):
    """The images the class lists but its ``filter_cfg`` drops, and why."""
    dropped = [i for i in infos if i['img_path'] not in kept]
    if not dropped:
        return
    filters = ds_cfg.get('filter_cfg') or {}
    reasons = {}
    for info in dropped:
        if min(info.get('width', 1e9), info.get('height', 1e9)) < \
                filters.get('min_size', 0):
            why = f'are smaller than {key}.filter_cfg.min_size'
        elif filters.get('filter_empty_gt') and not info.get('instances'):
            why = (f'hold no annotation of {key}.metainfo.classes '
                   '(filter_cfg.filter_empty_gt)')
        else:
            why = f'are not in {key}.indices'
        reasons.setdefault(why, []).append(osp.basename(info['img_path']))
    said = '; '.join(f'{len(v)} {why}, e.g. {v[:3]}'
                     for why, v in reasons.items())
    line = (f'{ds_cfg.get("type")} loads {len(kept)} of the {len(infos)} '
            f'images of {ds_cfg.get("ann_file") or key}, dropping those that'
            f' {said}')
    if kept:
        report.warnings.append(line)
    else:
        report.errors.append(line + ': nothing is left to load; fix the '
                             'data or these keys')


def _check_leaf(cfg, ds_cfg, key, report, workers):
    """One leaf dataset: built as configured and unfiltered, to name what
    its filters drop; then every image and its annotations."""
    from mmcv.transforms import LoadImageFromFile
    full = _build(dict(ds_cfg, filter_cfg=None, indices=None), key)
    try:
        dataset = DATASETS.build(ds_cfg)
        kept = {dataset.get_data_info(i)['img_path']
                for i in range(len(dataset))}
    except Exception:  # mmengine refuses a dataset its filters left empty
        kept = set()
    infos = [full.get_data_info(i) for i in range(len(full))]
    if report.task == 'detection':
        from mmdet.datasets import CocoDataset
        from mmdet.datasets.transforms import LoadAnnotations
        if isinstance(full, CocoDataset):
            _check_coco(full, report)
    else:
        from mmseg.datasets.transforms import LoadAnnotations
    report.num_images += len(kept)
    _report_dropped(ds_cfg, key, infos, kept, report)
    transforms = getattr(full.pipeline, 'transforms', [])
    loader = next((t for t in transforms if isinstance(
        t, LoadImageFromFile)), LoadImageFromFile())
    annotate = next((t for t in transforms if isinstance(
        t, LoadAnnotations)), LoadAnnotations())
    exif = _orientation_fix(cfg, loader)
    with ThreadPoolExecutor(workers) as pool:  # decoders release the GIL
        decoded = pool.map(lambda i: _decode(i['img_path'], loader), infos)
        for info, image in zip(infos, decoded):
            annotated = _check_annotations(
                info, image, annotate, info['img_path'] in kept, report,
                getattr(full, 'ignore_index', 255))
            _check_image(info['img_path'], image, annotated, exif, report)


def _check_annotations(info, image, annotate, kept, report, ignore_index):
    """The annotations of one image, through the pipeline's
    ``LoadAnnotations``; returns what it says the image size is."""
    path = info.get('seg_map_path') or info['img_path']
    boxes = [i['bbox'] for i in info.get('instances', [])]
    if not np.isfinite(np.asarray(boxes, float)).all():
        report.errors.append(f'{path}: boxes with NaN / Inf values that the '
                             'loader keeps; fix them')
    try:
        results = annotate(dict(info, seg_fields=[], ori_shape=image.shape
                                or (info.get('height'), info.get('width'))))
    except Exception as error:  # the finding: a run would stop here
        hint = ': an annotation without segmentation (give it a polygon ' \
            'or RLE mask, or remove it)' if "'mask'" in str(error) else ''
        report.errors.append(f'{path}: {type(annotate).__name__} cannot load'
                             f' its annotations ({type(error).__name__}: '
                             f'{error}){hint}')
        return None
    if report.task == 'detection':
        values, counts = np.unique([i['bbox_label'] for i in info[
            'instances']], return_counts=True)
        annotated = ('json width / height', (info['height'], info['width'])
                     ) if 'height' in info else None
    else:
        label = results['gt_seg_map']
        if label.ndim != 2:
            report.errors.append(f'{path}: label has shape {label.shape}, '
                                 'must be single-channel')
            return None
        values, counts = np.unique(label, return_counts=True)
        beyond = sorted(set(values.tolist()) - {ignore_index} - set(range(
            len(report.classes))))
        if beyond:
            report.errors.append(
                f'{path}: label values {beyond} are beyond the '
                f'{len(report.classes)} classes and not the ignore index '
                f'{ignore_index}' + ' (reduce_zero_label: PNG value = label '
                '+ 1)' * bool(info.get('reduce_zero_label')))
        annotated = 'label map', label.shape
    for value, count in zip(values.tolist(), counts.tolist()):
        if kept and value < len(report.classes):
            report.images[value] += 1
            report.counts[value] += count
    return annotated


def check_dataset(config, split='train', cfg_options=None, workers=None):
    """Check the dataset of ``{split}_dataloader`` of an mmdet / mmseg
    config (a path or an ``mmengine.Config``); ``workers`` threads decode
    the images (None: one per CPU, at most 8). Returns a ``CheckReport``;
    raises ``DatasetConfigError`` (one line) when the config names no such
    split, no known scope, missing paths, or data the class cannot load."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise DatasetConfigError(f'default_scope={scope!r}: set '
                                 f'default_scope to one of {SCOPES} in the '
                                 'config.')
    leaves = [(ds, key) for s, ds, key in split_dataset_cfgs(cfg)
              if s == split]
    if not leaves:
        raise DatasetConfigError(f'the config has no {split}_dataloader.'
                                 'dataset: pick another --split or add it.')
    init_default_scope(scope)
    report = None
    for ds_cfg, key in leaves:
        _check_paths(ds_cfg, key)
        if report is None:  # the classes of the first part name the labels
            metainfo = _build(dict(ds_cfg, lazy_init=True), key).metainfo
            report = CheckReport(
                'detection' if scope == 'mmdet' else 'segmentation',
                tuple(metainfo['classes']))
        _check_leaf(cfg, ds_cfg, key, report,
                    workers or min(8, os.cpu_count() or 1))
    return report
