_base_ = ['./_base_/upernet_gcvit_8xb2-160k_ade20k-512x512.py']
checkpoint = 'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-morevit/gcvit_xtiny_224_nvidia-274b92b7.pth'  # noqa
model = dict(
    backbone=dict(
        arch='xtiny',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
