"""Check the dataset of an mmdet or mmseg config as their own classes load it.

The dataset is built with the library's registry, once as configured and
once without its filters, to name what the class drops and why (for COCO:
each annotation ``CocoDataset.parse_data_info`` drops, the categories outside
``metainfo.classes``, a classes order that swaps labels). What the libraries
leave to a run is ours: every image decoded fully with the pipeline's own
``LoadImageFromFile`` (broken files, EXIF turns against the annotations),
every annotation through its ``LoadAnnotations``, finite boxes, segmentation
label values among the classes.
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
from mmengine.registry import DATASETS, TRANSFORMS, init_default_scope
from PIL import Image

SCOPES = ('mmdet', 'mmseg')
EXIF_ORIENTATION = 0x0112
TURNS_90 = (5, 6, 7, 8)  # orientations that swap width and height


class DatasetConfigError(Exception):
    """The config points at data that does not exist or cannot be built."""


@dataclass
class CheckReport:
    """What ``check_dataset`` found: ``errors`` (they fail the check),
    ``warnings``, and per label the loaded images holding it (``images``)
    and its instances or pixels (``counts``)."""
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
        """The table of present classes, then the problems."""
        unit = 'instances' if self.task == 'detection' else 'pixels'
        rows = [('class', 'images', unit)] + [
            row for row in self.per_class if row[2]]
        width = max(len(r[0]) for r in rows)
        absent = len(self.classes) + 1 - len(rows)
        lines = [f'{self.task} dataset: {self.num_images} images, '
                 f'{len(self.classes)} classes ({absent} without any '
                 f'{unit})'] + [
                     f'{a:<{width}}  {b:>8}  {c:>10}' for a, b, c in rows]
        for title, items in (('ERROR', self.errors),
                             ('WARNING', self.warnings)):
            lines += [f'{title}: {item}' for item in items[:max_lines]] + [
                f'{title}: ... {len(items) - max_lines} more'] * (
                    len(items) > max_lines)
        return '\n'.join(lines + [f'{len(self.errors)} errors, '
                                  f'{len(self.warnings)} warnings'])


def _leaves(ds_cfg, key):
    """Leaf dataset configs (inside ConcatDataset, RepeatDataset, ...)."""
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


def _build(ds_cfg, key):
    """The dataset, or one line for whatever its data makes the class raise
    (a json nested too deep, ``images`` that are no list, ...)."""
    try:
        return DATASETS.build(ds_cfg)
    except Exception as error:  # anything the data makes the class raise
        source = osp.join(ds_cfg.get('data_root') or '',
                          ds_cfg.get('ann_file') or '')
        raise DatasetConfigError(
            f'{ds_cfg.get("type")} cannot load {source} ('
            f'{type(error).__name__}: '
            f'{(str(error).splitlines() or [""])[0][:200]}): fix the data '
            f'or {key} in the config.') from None


@dataclass
class _Decoded:
    """An image as a run decodes it, or why it cannot be used."""
    shape: tuple = None  # (height, width) LoadImageFromFile returns
    orientation: int = 1  # the EXIF tag, 1: none
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
        pil = Image.open(io.BytesIO(content))  # the header: refuse bombs
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
        return _Decoded(problem=f'truncated or corrupt: mmcv ('
                        f'{loader.imdecode_backend} backend) cannot decode it')
    if pil is None:
        return _Decoded(img.shape[:2])
    try:
        pil.load()
    except Exception as error:  # any decoding failure is the finding
        return _Decoded(problem=f'truncated or corrupt ({error})')
    orientation = pil.getexif().get(EXIF_ORIENTATION, 1)
    return _Decoded(img.shape[:2], orientation if orientation in range(
        2, 9) else 1)


def _orientation_fix(loader):
    """Whether ``loader`` turns images as their EXIF tag says (mmcv's cv2 /
    pillow backends with color_type 'color' or 'grayscale'), and the setting
    of every pipeline's loader that gives the other frame."""
    turns = loader.color_type in ('color', 'grayscale') and \
        loader.imdecode_backend in ('cv2', 'pillow')
    color = 'grayscale' if 'grayscale' in loader.color_type else 'color'
    return turns, (f"color_type='{color}{'_ignore_orientation' * turns}'" +
                   ", imdecode_backend='cv2'" * (not turns) +
                   " in every pipeline's LoadImageFromFile")


def _check_image(path, image, annotated, exif, report):
    """The decoded image against ``annotated``: (what, (height, width))
    the annotations give, or None."""
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
                      f'{what} matches the {"stored" if turns else "turned"}'
                      f' pixels; make them agree with {fix}')
        report.errors.append(error)
    elif image.orientation != 1 and (image.orientation not in TURNS_90
                                     or image.shape == image.shape[::-1]):
        report.warnings.append(
            f'{path}: EXIF orientation {image.orientation}, which keeps the '
            'size: sizes cannot tell whether its annotations fit the stored '
            "or the turned pixels; look with mmdet's / mmseg's "
            f'browse_dataset.py; the other frame: {exif[1]}')


def _check_coco(dataset, report):
    """What ``CocoDataset`` drops from its json (each annotation it parses
    alone through the class), and a classes order that swaps names."""
    with fileio.get_local_path(dataset.ann_file, backend_args=dataset
                               .backend_args) as local, \
            contextlib.redirect_stdout(io.StringIO()):  # pycocotools' chat
        coco = dataset.COCOAPI(local)
    names = [coco.cats[i]['name'] for i in dataset.cat_ids]  # json order
    if names[:len(report.classes)] != list(report.classes)[:len(names)]:
        line = tuple(names + [c for c in report.classes if c not in names])
        report.errors.append(
            f'metainfo.classes lists the json categories in another order '
            f'than {dataset.ann_file}: CocoDataset labels them in the order '
            'of its categories list (pycocotools getCatIds), so they get '
            f'other names; list them in that order: classes = {line!r}')
    if len(coco.imgs) != len(coco.dataset['images']):
        report.errors.append(f'{dataset.ann_file} lists some image ids more '
                             'than once: CocoDataset loads each id once')
    outside = Counter()
    for ann in coco.anns.values():
        cat, img = ann.get('category_id'), coco.imgs.get(ann.get('image_id'))
        where = f'annotation id {ann.get("id")}'
        if img is None:
            why = f'image_id {ann.get("image_id")} is not in images'
        elif cat not in coco.cats:
            why = f'category_id {cat} is no json category'
        elif cat not in dataset.cat_ids:
            outside[coco.cats[cat]['name'], cat] += 1
            continue
        elif dataset.parse_data_info(dict(raw_ann_info=[ann], raw_img_info=(
                dict(img, img_id=img['id']))))['instances']:
            continue
        else:
            why = _why_dropped(ann, img)
        where += f' ({img["file_name"]})' if img else ''
        report.errors.append(f'{where}: {why}; CocoDataset drops it')
    if outside:
        report.warnings.append(
            f'{sum(outside.values())} annotations of json categories outside'
            ' metainfo.classes, which CocoDataset drops: ' + ', '.join(
                f'{name!r} (id {cat}, {n})'
                for (name, cat), n in outside.most_common(5)) +
            (f' and {len(outside) - 5} more' if len(outside) > 5 else ''))


def _why_dropped(ann, img):
    """Which condition of ``CocoDataset.parse_data_info`` ``ann`` fails."""
    bbox, area = ann['bbox'], ann.get('area')
    if ann.get('ignore', False):
        return "it has 'ignore' set"
    if not np.isfinite(np.asarray([*bbox, area], float)).all():
        return f'bbox {bbox} / area {area} is not finite (NaN or Inf)'
    if bbox[2] < 1 or bbox[3] < 1 or area <= 0:
        return f'bbox {bbox} / area {area} is under one pixel'
    return f'bbox {bbox} lies outside the {img["width"]}x{img["height"]} image'


def _report_dropped(ds_cfg, key, infos, kept, report):
    """The images the unfiltered class lists but the configured drops."""
    filters, reasons = ds_cfg.get('filter_cfg') or {}, {}
    for info in infos:
        if info['img_path'] in kept:
            continue
        if min(info.get('width', 1e9), info.get('height', 1e9)) < \
                filters.get('min_size', 0):
            why = f'are smaller than {key}.filter_cfg.min_size'
        elif filters.get('filter_empty_gt') and not info.get('instances'):
            why = (f'hold no annotation of {key}.metainfo.classes '
                   '(filter_cfg.filter_empty_gt)')
        else:
            why = f'are not in {key}.indices'
        reasons.setdefault(why, []).append(osp.basename(info['img_path']))
    if reasons:
        line = (f'{ds_cfg.get("type")} loads {len(kept)} of the {len(infos)}'
                f' images of {ds_cfg.get("ann_file") or key}, dropping those'
                ' that ' + '; '.join(f'{len(v)} {why}, e.g. {v[:3]}'
                                     for why, v in reasons.items()))
        if kept:
            report.warnings.append(line)
        else:
            report.errors.append(f'{line}: nothing is left to load; fix the '
                                 'data or these keys')


def _check_leaf(ds_cfg, key, full, report, workers):
    """One leaf dataset, given its unfiltered build ``full``."""
    try:
        dataset = DATASETS.build(ds_cfg)
        kept = {dataset.get_data_info(i)['img_path']
                for i in range(len(dataset))}
    except Exception:  # mmengine refuses a dataset its filters left empty
        kept = set()
    infos = [full.get_data_info(i) for i in range(len(full))]
    if hasattr(full, 'COCOAPI'):  # mmdet's CocoDataset and its subclasses
        _check_coco(full, report)
    report.num_images += len(kept)
    _report_dropped(ds_cfg, key, infos, kept, report)
    # The pipeline's own loaders (the scope's defaults where it has none).
    steps = {type(t).__name__: t
             for t in getattr(full.pipeline, 'transforms', [])}
    loader, annotate = (steps.get(name) or TRANSFORMS.build(dict(type=name))
                        for name in ('LoadImageFromFile', 'LoadAnnotations'))
    exif = _orientation_fix(loader)
    with ThreadPoolExecutor(workers) as pool:  # decoders release the GIL
        decoded = pool.map(lambda i: _decode(i['img_path'], loader), infos)
        for info, image in zip(infos, decoded):
            annotated = _check_annotations(
                info, image, annotate, info['img_path'] in kept, report,
                getattr(full, 'ignore_index', 255))
            _check_image(info['img_path'], image, annotated, exif, report)


def _check_annotations(info, image, annotate, kept, report, ignore_index):
    """One image's annotations, through the pipeline's ``LoadAnnotations``;
    returns (what, size) they give the image, or None."""
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
    split, no known scope, or data the class cannot load (missing too)."""
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
        full = _build(dict(ds_cfg, filter_cfg=None, indices=None), key)
        # The classes of the first part name the labels.
        report = report or CheckReport(
            'detection' if scope == 'mmdet' else 'segmentation',
            tuple(full.metainfo['classes']))
        _check_leaf(ds_cfg, key, full, report,
                    workers or min(8, os.cpu_count() or 1))
    return report
