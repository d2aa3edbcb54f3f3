_base_ = './_base_/dino-4scale_gcvit_8xb2-36e_coco.py'
# ImageNet-21K weights: see dino-4scale_gcvit-l-384_8xb2-12e_coco.py.
checkpoint = 'checkpoints/gcvit_21k_large_384.pth.tar'
model = dict(
    backbone=dict(arch='large-384', drop_path_rate=0.2, with_cp=True,
                  init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[384, 768, 1536]))
