_base_ = './_base_/mask-rcnn_gcvit_fpn_1x_coco.py'
checkpoint = 'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-morevit/gcvit_xxtiny_224_nvidia-d1d86009.pth'  # noqa
model = dict(
    backbone=dict(arch='xxtiny', drop_path_rate=0.2,
                  init_cfg=dict(checkpoint=checkpoint)))
