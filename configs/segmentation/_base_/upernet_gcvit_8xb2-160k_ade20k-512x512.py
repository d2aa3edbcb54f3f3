# UPerNet + auxiliary FCN head with a GC ViT backbone on ADE20K: 512x512
# crops, 160k iterations of 16 images (8 GPUs x 2). The recipe is Swin's
# (mmseg configs/swin), which the GC ViT paper follows for ADE20K. Variant
# configs set the arch, its drop-path rate, the head widths and the
# ImageNet checkpoint: the URL of NVlabs' ImageNet-1K weights as timm
# publishes them, downloaded, hash-checked and cached on first use (NVlabs'
# licence, CC-BY-NC-SA-4.0; a local file instead: --cfg-options
# model.backbone.init_cfg.checkpoint=PATH; Large and the ImageNet-21K
# weights: https://huggingface.co/nvidia/GCViT, local path only). Drop-path
# rates are the variants' ImageNet-1K ones
# (official model definitions: XXT/XT/T 0.2, S 0.3, B 0.5), which the
# official detection configs also keep for fine-tuning.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    '../../mmgcvit_runtime.py',
]
default_scope = 'mmseg'
# What our configs add (configs/mmgcvit_runtime.py).
default_hooks = dict(
    checkpoint=dict(
        type='mmgcvit.AtomicCheckpointHook',
        backend_args=dict(backend='mmgcvit_atomic')))
train_cfg = dict(type='mmgcvit.ResumableIterBasedTrainLoop')
test_cfg = dict(type='mmgcvit.CheckedTestLoop')

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='GCViT',
        # Window 24 in every stage, as the official dense-prediction
        # backbone: it is the only window whose (2w-1)^2 x heads bias tables
        # give the paper's UPerNet sizes (T 58.45M, S 83.40M, B 124.70M;
        # 16 gives 58.13M / 82.92M / 124.06M, 32 gives 58.90M / 84.07M /
        # 125.59M). At 512^2 the stage maps are 128, 64, 32, 16: the last
        # stage fits one window, and the ImageNet 13x13 / 27x27 tables are
        # bicubic-resized to 47x47 on loading.
        window_size=24,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        with_cp=False,
        fused_attn=True,
        init_cfg=dict(type='Pretrained')),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

# AdamW 6e-5 with weight decay 0.01, none on the relative-position tables
# and norms; fp32, `--amp` for mixed precision on GPUs.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    # Plain-dict param groups: compile=True can trace the optimizer step.
    constructor='mmgcvit.PlainDictOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys=dict(
            relative_position_bias_table=dict(decay_mult=0.),
            norm=dict(decay_mult=0.))))
# Linear warm-up over 1500 iterations, then linear (power 1) decay to 0.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000,
         by_epoch=False),
]

# 8 GPUs x 2 images = 16 images per iteration.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
