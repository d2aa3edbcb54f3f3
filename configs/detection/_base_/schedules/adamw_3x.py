# The official GC ViT 3x schedule (NVlabs detection/configs/_base_/
# schedules/schedule_3x.py): 36 epochs, x0.1 at epochs 27 and 33, linear
# warm-up from 0.001 x lr over 2500 iterations; optimiser as in 1x.
_base_ = './adamw_1x.py'
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=2500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]
