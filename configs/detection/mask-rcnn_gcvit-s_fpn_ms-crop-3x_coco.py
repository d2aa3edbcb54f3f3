_base_ = './_base_/mask-rcnn_gcvit_fpn_ms-crop-3x_coco.py'
checkpoint = 'checkpoints/gcvit_1k_small.pth.tar'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
