# Mask R-CNN + FPN with GC ViT-T, fine-tuned on your own COCO-format
# instance dataset (docs/custom_data.md). Copy this file anywhere (it
# inherits through `mmgcvit::`, which the installed package resolves), then
# edit `classes`, `data_root` and, if your layout differs, the file names in
# the dataloaders below. Layout assumed here:
#
#   data/my_dataset/
#     annotations/train.json   COCO instances json: images, categories and
#     annotations/val.json     annotations (bbox + polygon or RLE mask)
#     train/*.jpg              images (json file_name relative to here)
#     val/*.jpg
#
# Schedule: the inherited 1x (12 epochs, x0.1 at 8 and 11, validation and a
# checkpoint every epoch); its AdamW lr 1e-4 is for 16 images per
# iteration, add --auto-scale-lr to rescale it to your GPUs x 2 images.
_base_ = 'mmgcvit::detection/mask-rcnn_gcvit-t_fpn_1x_coco.py'

# The json category names to train on, listed in the json's category order:
# CocoDataset gives label i to the i-th of these categories in that order
# and drops annotations of other categories (tools/misc/check_dataset.py
# reports both).
classes = ('scratch', 'dent', 'crack')
data_root = 'data/my_dataset/'
metainfo = dict(classes=classes)
num_classes = len(classes)

# Starting weights, pick one:
# (a) ImageNet GC ViT-T for the backbone, heads from scratch: the inherited
#     model.backbone.init_cfg downloads NVlabs' ImageNet-1K weights (timm's
#     release file, cached; NVlabs' licence CC-BY-NC-SA-4.0) on first use;
#     keep load_from = None.
# (b) a whole COCO-trained GC ViT-T Mask R-CNN (e.g. the epoch_36.pth of
#     mask-rcnn_gcvit-t_fpn_ms-crop-3x_coco.py): set load_from to its path
#     and model.backbone.init_cfg=None. Every weight is reused except the
#     class-specific layers whose shapes follow the class count
#     (roi_head.bbox_head.fc_cls / fc_reg, roi_head.mask_head.conv_logits):
#     they keep their fresh initialisation, and the log says so.
# (c) only the backbone of such a detector: keep load_from = None and set
#     model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH,
#     prefix='backbone.').
load_from = None

model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=num_classes),
        mask_head=dict(num_classes=num_classes)))

train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/')))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/val.json',
        data_prefix=dict(img='val/')))
test_dataloader = val_dataloader

# classwise: a per-class AP table (names from the json) after the summary.
val_evaluator = dict(
    ann_file=data_root + 'annotations/val.json', classwise=True)
test_evaluator = val_evaluator
