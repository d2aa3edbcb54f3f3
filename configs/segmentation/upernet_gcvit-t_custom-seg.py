# UPerNet + GC ViT-T fine-tuned on your own semantic segmentation data
# (docs/custom_data.md). Copy this file anywhere (it inherits through
# `mmgcvit::`, which the installed package resolves), then edit the
# settings up to `num_classes`. Layout assumed here (mmseg's BaseSegDataset
# pairs an image and its label PNG by file stem):
#
#   data/my_seg_dataset/
#     img_dir/train/*.jpg   img_dir/val/*.jpg
#     ann_dir/train/*.png   ann_dir/val/*.png   single-channel label maps
#
# Schedule: 20k iterations of 2 images per GPU (the inherited recipe's
# AdamW lr 6e-5 is for 8 GPUs x 2), validation and a checkpoint every 2k.
_base_ = 'mmgcvit::segmentation/upernet_gcvit-t_8xb2-160k_ade20k-512x512.py'

classes = ('background', 'crack')
# One RGB colour per class, for painted ground truth and predictions.
palette = [[0, 0, 0], [255, 64, 0]]
data_root = 'data/my_seg_dataset/'
img_suffix = '.jpg'
seg_map_suffix = '.png'
# What the PNG values mean:
#   False: value k is classes[k] (0 .. len(classes) - 1);
#   True:  value 0 is "unlabelled" (ignored) and value k is classes[k - 1].
reduce_zero_label = False
# Pixels with this value (after reduce_zero_label) count in no loss and no
# metric.
ignore_index = 255
num_classes = len(classes)

# Starting weights, pick one:
# (a) ImageNet GC ViT-T for the backbone, heads from scratch: the inherited
#     model.backbone.init_cfg downloads NVlabs' ImageNet-1K weights (timm's
#     release file, cached; NVlabs' licence CC-BY-NC-SA-4.0) on first use;
#     keep load_from = None.
# (b) a whole ADE20K-trained GC ViT-T UPerNet (e.g. the iter_160000.pth of
#     upernet_gcvit-t_8xb2-160k_ade20k-512x512.py): set load_from to its
#     path and model.backbone.init_cfg=None. Every weight is reused except
#     the classifiers, whose shapes follow the class count
#     (decode_head.conv_seg, auxiliary_head.conv_seg): they keep their fresh
#     initialisation, and the log says so.
# (c) only the backbone of such a model: keep load_from = None and set
#     model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH,
#     prefix='backbone.').
load_from = None

model = dict(
    decode_head=dict(num_classes=num_classes, ignore_index=ignore_index),
    auxiliary_head=dict(num_classes=num_classes, ignore_index=ignore_index))

# ADE20K's pipelines without their fixed reduce_zero_label=True: here
# LoadAnnotations takes it from the dataset.
crop_size = (512, 512)
img_scale = (2048, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # After Resize: the metric compares with the label at full resolution.
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# Settings shared by the train and val datasets.
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix=img_suffix,
    seg_map_suffix=seg_map_suffix,
    reduce_zero_label=reduce_zero_label,
    ignore_index=ignore_index)
train_dataloader = dict(
    dataset=dict(
        **dataset,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ignore_index=ignore_index)
test_evaluator = val_evaluator

max_iters = 20000
interval = 2000
train_cfg = dict(max_iters=max_iters, val_interval=interval)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=max_iters,
         by_epoch=False),
]
default_hooks = dict(checkpoint=dict(interval=interval))
