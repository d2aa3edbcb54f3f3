# mmdet's Cascade Mask R-CNN + FPN with a GC ViT backbone (GC ViT-T widths
# here) and the official GC ViT box heads (NVlabs detection/configs/gcvit/
# cascade_mask_rcnn_gcvit_tiny_3x_coco.py, ported to mmdet 3): per stage
# 4 shared 3x3 convs with SyncBN + 1 fc, class-specific regression of decoded
# boxes with a GIoU loss of weight 10.
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py', './gcvit.py']
model = dict(
    backbone=_base_.gcvit_backbone,
    neck=dict(in_channels=[64, 128, 256, 512]),
    # One head per stage, keeping each stage's regression target stds.
    roi_head=dict(bbox_head=[
        dict(
            type='Shared4Conv1FCBBoxHead',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=stage_head.bbox_coder.target_stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stage_head in _base_.model.roi_head.bbox_head
    ]))
