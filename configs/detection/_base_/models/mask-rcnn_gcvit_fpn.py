# mmdet's Mask R-CNN + FPN with a GC ViT backbone (GC ViT-T widths here).
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', './gcvit.py']
model = dict(
    backbone=_base_.gcvit_backbone,
    neck=dict(in_channels=[64, 128, 256, 512]))
