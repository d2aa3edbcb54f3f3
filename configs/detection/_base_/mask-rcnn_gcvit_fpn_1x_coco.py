# Mask R-CNN + FPN, GC ViT backbone, COCO 1x: single scale 1333x800.
_base_ = [
    './models/mask-rcnn_gcvit_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './schedules/adamw_1x.py',
    './default_runtime.py',
]
