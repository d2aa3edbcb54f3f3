# Cascade Mask R-CNN + FPN (4conv-1fc SyncBN box heads, GIoU), GC ViT
# backbone, COCO 3x with multi-scale + crop training: the paper's Cascade
# Mask R-CNN setting.
_base_ = [
    './models/cascade-mask-rcnn_gcvit_fpn_4conv1fc-giou.py',
    './datasets/coco_instance_ms-crop.py',
    './schedules/adamw_3x.py',
    './default_runtime.py',
]
