_base_ = './_base_/mask-rcnn_gcvit_fpn_ms-crop-3x_coco.py'
checkpoint = 'checkpoints/gcvit_1k_tiny.pth.tar'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.2,
                  init_cfg=dict(checkpoint=checkpoint)))
