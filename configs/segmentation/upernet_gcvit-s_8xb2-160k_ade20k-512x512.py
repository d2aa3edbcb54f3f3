_base_ = ['./_base_/upernet_gcvit_8xb2-160k_ade20k-512x512.py']
checkpoint = 'checkpoints/gcvit_1k_small.pth.tar'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
