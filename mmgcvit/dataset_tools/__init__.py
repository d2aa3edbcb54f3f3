"""Dataset tooling, no Dataset classes: generators of small datasets in the
COCO / ADE20K / mmseg custom formats, and a check of an mmdet or mmseg
config's dataset as their own classes load it."""
from .check import CheckReport, DatasetConfigError, check_dataset
from .synthetic import (GeneratedDataset, generate_ade20k, generate_coco,
                        generate_custom_seg)

__all__ = [
    'GeneratedDataset', 'generate_coco', 'generate_ade20k',
    'generate_custom_seg', 'check_dataset', 'CheckReport',
    'DatasetConfigError'
]
