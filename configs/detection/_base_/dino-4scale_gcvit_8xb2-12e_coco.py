# mmdet's DINO-4scale (900 queries, 6 encoder / 6 decoder layers, box
# refinement, two-stage queries, denoising queries; COCO 12 epochs, lr x0.1
# at epoch 11; multi-scale + crop training) with a GC ViT backbone (GC ViT-T
# widths here). As mmdet's R-50 DINO-4scale takes C3-C5, stages 2-4
# (strides 8, 16, 32) go to the channel mapper, whose extra stride-2 conv
# makes the fourth scale.
_base_ = [
    'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    './models/gcvit.py',
    '../../mmgcvit_runtime.py',
]
model = dict(
    backbone=dict(_base_.gcvit_backbone, out_indices=(1, 2, 3)),
    neck=dict(in_channels=[128, 256, 512]))

# DINO's optimiser (AdamW lr 1e-4, weight decay 1e-4, backbone lr x0.1,
# gradient L2 norm clipped at 0.1; fp32, `--amp` for mixed precision on GPUs),
# and, as the GC ViT recipe has it, no weight decay on the backbone's relative-
# position tables and norms. mmengine applies only the longest custom key found
# in a parameter's name, so those keys (longer than 'backbone') carry the
# backbone lr multiplier too; GC ViT's LayerNorms are its norm0..norm3 modules
# (DINO's own are `norms.<i>`, `norm` and `memory_trans_norm`: they keep DINO's
# decay). mmcv's deformable attention kernel takes fp16 (AMP's default dtype),
# not bf16.
backbone_no_decay = dict(lr_mult=0.1, decay_mult=0.)
optim_wrapper = dict(
    # Plain-dict param groups: compile=True can trace the optimizer step.
    constructor='mmgcvit.PlainDictOptimWrapperConstructor',
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'relative_position_bias_table': backbone_no_decay,
            **{
                f'norm{i}.{name}': backbone_no_decay
                for i in range(4) for name in ('weight', 'bias')
            },
        }))

# What our configs add (the DINO base brings mmdet's runtime, not ours).
default_hooks = dict(
    checkpoint=dict(
        type='mmgcvit.AtomicCheckpointHook',
        backend_args=dict(backend='mmgcvit_atomic')))
train_cfg = dict(type='mmgcvit.ResumableEpochBasedTrainLoop')
test_cfg = dict(type='mmgcvit.CheckedTestLoop')
