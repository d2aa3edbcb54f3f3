"""Check the dataset of an mmdet or mmseg config as their own classes load it:
built as configured and without its filters, to name what the class drops
(for COCO: each annotation, as ``CocoDataset.parse_data_info`` itself
judges it, and a classes order that swaps labels). Ours is what they leave
to a run: every image decoded fully (broken files, EXIF turns), every
annotation through the pipeline's ``LoadAnnotations``, label values."""
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

TURNS_90 = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class DatasetConfigError(Exception):
    """The config points at data that does not exist or cannot be built."""


@dataclass
class CheckReport:
    """``errors`` fail the check; ``counts``: the instances (detection) or
    pixels (segmentation) of each label in the images the dataset loads."""
    task: str
    classes: tuple = ()
    num_images: int = 0
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    @property
    def ok(self):
        return not self.errors

    def format(self, max_lines=20):
        """The classes present, then the problems."""
        unit = 'instances' if self.task == 'detection' else 'pixels'
        lines = [f'{self.task} dataset: {self.num_images} images, {unit} '
                 f'per class of {len(self.classes)}:'] + [
                     f'  {c}: {self.counts[i]}'
                     for i, c in enumerate(self.classes) if self.counts[i]]
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


def decode_image(path, loader):
    """``(height, width)`` or why it cannot be, and the EXIF orientation, of
    ``path`` decoded in full as ``loader`` (a ``LoadImageFromFile``) does in
    a run. Pillow decodes it first: it refuses decompression bombs from the
    header and finds the truncated data a lenient decoder fills with grey."""
    try:
        content = fileio.get(path, backend_args=loader.backend_args)
    except OSError as error:
        return 'missing' if isinstance(error, FileNotFoundError) else \
            f'unreadable ({error})', 1
    if not content:
        return 'empty file (0 bytes)', 1
    orientation = 1
    try:
        with Image.open(io.BytesIO(content)) as pil:
            pil.load()
            orientation = pil.getexif().get(0x0112, 1)  # Orientation tag
    except Image.UnidentifiedImageError:
        pass  # a format only the loader's backend reads
    except Image.DecompressionBombError as error:
        return f'too large to decode safely ({error})', 1
    except Exception as error:  # any decoding failure is the finding
        return f'truncated or corrupt ({error})', 1
    with contextlib.suppress(Exception):  # each backend raises its own
        return mmcv.imfrombytes(content, flag=loader.color_type,
                                backend=loader.imdecode_backend).shape[:2], \
            orientation if orientation in range(2, 9) else 1
    return (f'truncated or corrupt: mmcv ({loader.imdecode_backend} '
            'backend) cannot decode it'), 1


def _check_image(info, decoded, loader, annotate, kept, report, ignore):
    """One image (``decoded``) and its annotations, which the pipeline's
    ``annotate`` loads; counts the labels of a ``kept`` image."""
    (shape, orientation), path = decoded, info['img_path']
    if isinstance(shape, str):
        return report.errors.append(f'{path}: {shape}')
    label_path = info.get('seg_map_path') or path
    if not np.isfinite(np.asarray([i['bbox'] for i in info.get(
            'instances', [])], float)).all():
        report.errors.append(f'{label_path}: boxes with NaN / Inf values '
                             'that the loader keeps; fix them')
    try:
        results = annotate(dict(info, seg_fields=[], ori_shape=shape))
    except Exception as error:  # the finding: a run would stop here
        hint = ': an annotation without segmentation (give it a polygon ' \
            'or RLE mask, or remove it)' if "'mask'" in str(error) else ''
        return report.errors.append(
            f'{label_path}: {type(annotate).__name__} cannot load its '
            f'annotations ({type(error).__name__}: {error}){hint}')
    if report.task == 'detection':
        labels = np.asarray([i['bbox_label'] for i in info['instances']])
        what, size = 'json width / height', (info.get('height', shape[0]),
                                             info.get('width', shape[1]))
    else:
        labels = results['gt_seg_map']
        what, size = 'label map', labels.shape[:2]
        beyond = sorted(set(np.unique(labels).tolist()) - {ignore} -
                        set(range(len(report.classes))))
        if beyond:
            report.errors.append(
                f'{label_path}: label values {beyond} are beyond the '
                f'{len(report.classes)} classes and not the ignore index '
                f'{ignore}' + ' (reduce_zero_label: PNG value = label + 1)' *
                bool(info.get('reduce_zero_label')))
    values, counts = np.unique(labels, return_counts=True)
    report.counts.update({v: n * kept for v, n in zip(
        values.tolist(), counts.tolist()) if v < len(report.classes)})
    # Whether the loader turns images as their tag says (mmcv's cv2 and
    # pillow backends with color_type 'color' or 'grayscale'), and the
    # setting that gives the other frame.
    turns = loader.color_type in ('color', 'grayscale') and \
        loader.imdecode_backend in ('cv2', 'pillow')
    color = 'grayscale' if 'grayscale' in loader.color_type else 'color'
    fix = (f"color_type='{color}{'_ignore_orientation' * turns}'" +
           ", imdecode_backend='cv2'" * (not turns) +
           " in every pipeline's LoadImageFromFile")
    if size != shape:
        report.errors.append(
            f'{path}: decoded {shape[1]}x{shape[0]} but its {what} is '
            f'{size[1]}x{size[0]}' + (
                f': LoadImageFromFile {"turns" if turns else "ignores"} its '
                f'EXIF orientation {orientation}, and its {what} matches the '
                f'{"stored" if turns else "turned"} pixels; make them agree '
                f'with {fix}') * (orientation in TURNS_90 and
                                  size == shape[::-1]))
    elif orientation != 1 and (orientation not in TURNS_90
                               or shape == shape[::-1]):
        report.warnings.append(
            f'{path}: EXIF orientation {orientation}, which keeps the size: '
            'sizes cannot tell whether its annotations fit the stored or the '
            "turned pixels; look with mmdet's / mmseg's browse_dataset.py; "
            f'the other frame: {fix}')


def _check_coco(dataset, report):
    """What ``CocoDataset`` drops from its json, and a classes order that
    gives the categories other names."""
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
    outside = Counter()
    for ann in coco.anns.values():
        cat, img = ann.get('category_id'), coco.imgs.get(ann.get('image_id'))
        if img is None:
            report.errors.append(f'annotation id {ann.get("id")}: image_id '
                                 f'{ann.get("image_id")} is not in images')
        elif cat not in dataset.cat_ids:
            outside[coco.cats.get(cat, {}).get('name', 'no category'),
                    cat] += 1
        elif not dataset.parse_data_info(dict(
                raw_ann_info=[ann], raw_img_info=dict(img, img_id=img['id'])
        ))['instances']:  # outside the image, under a pixel, NaN, ignore
            report.errors.append(
                f'annotation id {ann["id"]} ({img["file_name"]}): bbox '
                f'{ann["bbox"]}, area {ann.get("area")}, ignore '
                f'{ann.get("ignore", False)} in the {img["width"]}x'
                f'{img["height"]} image; CocoDataset drops it')
    if outside:
        report.warnings.append(
            f'{sum(outside.values())} annotations of categories outside '
            'metainfo.classes, which CocoDataset drops: ' + ', '.join(
                f'{name!r} (id {cat}, {n})' for (name, cat), n in
                outside.items()))


def _check_leaf(ds_cfg, key, report):
    """One leaf dataset: the images its class drops, then every image."""
    try:
        full = DATASETS.build(dict(ds_cfg, filter_cfg=None, indices=None))
    except Exception as error:  # a missing file, a json nested too deep...
        source = osp.join(ds_cfg.get('data_root') or '',
                          ds_cfg.get('ann_file') or '')
        raise DatasetConfigError(
            f'{ds_cfg.get("type")} cannot load {source} ('
            f'{type(error).__name__}: '
            f'{(str(error).splitlines() or [""])[0][:200]}): fix the data '
            f'or {key} in the config.') from None
    report.classes = report.classes or tuple(full.metainfo['classes'])
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
    dropped = [osp.basename(i['img_path']) for i in infos
               if i['img_path'] not in kept]
    if dropped:
        (report.warnings if kept else report.errors).append(
            f'{ds_cfg.get("type")} loads {len(kept)} of the {len(infos)} '
            f'images of {ds_cfg.get("ann_file") or key}, dropping '
            f'{dropped[:3]}{" ..." * (len(dropped) > 3)} for {key}.'
            f'filter_cfg={ds_cfg.get("filter_cfg")} / indices='
            f'{ds_cfg.get("indices")}' + ('' if kept else ': nothing is left '
                                          'to load; fix the data or these'))
    # The pipeline's own loaders (the scope's defaults where it has none).
    steps = {type(t).__name__: t
             for t in getattr(full.pipeline, 'transforms', [])}
    loader, annotate = (steps.get(name) or TRANSFORMS.build(dict(type=name))
                        for name in ('LoadImageFromFile', 'LoadAnnotations'))
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        # Decoders release the GIL.
        for info, decoded in zip(infos, pool.map(
                lambda i: decode_image(i['img_path'], loader), infos)):
            _check_image(info, decoded, loader, annotate, info['img_path']
                         in kept, report, getattr(full, 'ignore_index', 255))


def check_dataset(config, split='train', cfg_options=None):
    """A ``CheckReport`` on ``{split}_dataloader``'s dataset of an mmdet or
    mmseg config (a path or a ``Config``); raises ``DatasetConfigError``
    (one line) for no such split, no known scope, or data the class cannot
    load."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise DatasetConfigError(f'default_scope={scope!r}: set '
                                 "default_scope to 'mmdet' or 'mmseg' in "
                                 'the config.')
    leaves = [(ds, key) for s, ds, key in split_dataset_cfgs(cfg)
              if s == split]
    if not leaves:
        raise DatasetConfigError(f'the config has no {split}_dataloader.'
                                 'dataset: pick another --split or add it.')
    init_default_scope(scope)
    # The classes of the first part name the labels.
    report = CheckReport('detection' if scope == 'mmdet' else 'segmentation')
    for ds_cfg, key in leaves:
        _check_leaf(ds_cfg, key, report)
    return report
