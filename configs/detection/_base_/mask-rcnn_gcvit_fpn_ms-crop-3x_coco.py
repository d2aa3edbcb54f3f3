# Mask R-CNN + FPN, GC ViT backbone, COCO 3x with multi-scale + crop
# training: the paper's Mask R-CNN setting.
_base_ = [
    './models/mask-rcnn_gcvit_fpn.py',
    './datasets/coco_instance_ms-crop.py',
    './schedules/adamw_3x.py',
    './default_runtime.py',
]
