# DINO-4scale GC ViT, COCO 36 epochs: mmdet's DINO-4scale 3x schedule (lr
# x0.1 at epoch 30).
_base_ = './dino-4scale_gcvit_8xb2-12e_coco.py'
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[30],
        gamma=0.1)
]
