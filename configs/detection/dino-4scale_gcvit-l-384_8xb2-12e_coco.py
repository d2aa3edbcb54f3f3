_base_ = './_base_/dino-4scale_gcvit_8xb2-12e_coco.py'
# GC ViT-L pre-trained on ImageNet-21K, at 384x384 input. NVlabs publish
# it only on their model page: the "ImageNet-21K Pretrained Models" table of
# https://github.com/NVlabs/GCVit, row "GC ViT-L, 384 x 384". Download it
# to this path, or point `checkpoint` at your copy.
checkpoint = 'checkpoints/gcvit_21k_large_384.pth.tar'
# Drop path 0.2 and activation checkpointing as mmdet's Swin-L DINO and
# NVIDIA TAO's DINO GC ViT-L-384 backbone.
model = dict(
    backbone=dict(arch='large-384', drop_path_rate=0.2, with_cp=True,
                  init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[384, 768, 1536]))
