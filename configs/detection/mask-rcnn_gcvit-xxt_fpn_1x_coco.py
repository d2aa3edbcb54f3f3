_base_ = './_base_/mask-rcnn_gcvit_fpn_1x_coco.py'
checkpoint = 'checkpoints/gcvit_1k_xxtiny.pth.tar'
model = dict(
    backbone=dict(arch='xxtiny', drop_path_rate=0.2,
                  init_cfg=dict(checkpoint=checkpoint)))
