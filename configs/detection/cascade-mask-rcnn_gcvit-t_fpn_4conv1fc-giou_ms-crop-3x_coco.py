_base_ = './_base_/cascade-mask-rcnn_gcvit_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
checkpoint = 'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-morevit/gcvit_tiny_224_nvidia-ac783954.pth'  # noqa
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.2,
                  init_cfg=dict(checkpoint=checkpoint)))
