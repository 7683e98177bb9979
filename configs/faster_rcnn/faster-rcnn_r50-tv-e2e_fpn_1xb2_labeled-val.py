# Evaluate the seed's torchvision Faster R-CNN (best_e2e_checkpoint.pth.tar) in mmdet, after
# tools/model_converters/torchvision_frcnn_to_mmdet.py. Inference only: every test-time setting
# is torchvision FasterRCNN's default, which the seed used.
#
# Left different; none changed a detection in tests/recipes/test_seed_checkpoints.py (400 of 400 matched):
# - Normalization runs after the resize (torchvision: before). Bilinear interpolation is linear,
#   so only float rounding differs (inputs within 1e-6).
# - RPN proposals are ranked by sigmoid score (torchvision: by logit), NMS'd with mmcv's
#   offset-per-level trick (torchvision on CPU: one NMS per level), and kept when w, h > 1e-3
#   (torchvision: >= 1e-3): the same up to ties and float rounding.
# - RoIs go to FPN levels by floor(log2(s / 56 + 1e-6)); torchvision's
#   floor(4 + log2(s / 224) + 1e-6) - 2 is the same rule with the epsilon placed elsewhere
#   (boundaries 2e-5 px apart).
# - Box decoding also clamps log(w, h) deltas below, at -log(1000/16) (torchvision: only above):
#   differs only for boxes shrunk more than 62x.
# - Detections are rescaled to the original image before the class-wise NMS (torchvision: after):
#   the x and y scale factors differ slightly (sizes are floored), so IoUs right at 0.5 can round
#   the other way.
# - Boxes under 0.01 px wide or high after clipping are kept (torchvision drops them before NMS).
_base_ = './faster-rcnn_r50-mocov2-pre_fpn_2xb2-step-37e_labeled.py'

min_size, max_size = 800, 1333  # GeneralizedRCNNTransform's defaults
batch_size = 2  # the seed evaluated 2 images per batch; padding to the pair's size moves features
num_workers = 2

model = dict(
    # ImageNet mean/std of [0, 1] RGB (GeneralizedRCNNTransform) on 0-255 BGR input; pad to 32
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(init_cfg=None),  # every weight comes from the converted checkpoint
    rpn_head=dict(
        # torchvision's anchors: base anchors rounded to pixels, P6 stride from the padded size
        anchor_generator=dict(type='TorchvisionAnchorGenerator'),
        # BoxCoder weights (1, 1, 1, 1)
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                        target_stds=[1., 1., 1., 1.])),
    roi_head=dict(
        # MultiScaleRoIAlign: sampling_ratio 2, aligned=False, torchvision's own kernel
        bbox_roi_extractor=dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2,
                                               aligned=False, use_torchvision=True)),
        # BoxCoder weights (10, 10, 5, 5) = 1 / stds
        bbox_head=dict(bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                                       target_stds=[0.1, 0.1, 0.2, 0.2]))),
    test_cfg=dict(
        # pre/post NMS top-n 1000 (per level / per image), NMS 0.7, boxes under 1e-3 px dropped
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
                 min_bbox_size=1e-3),
        # box_score_thresh 0.05 (strict >), class-wise NMS 0.5, 100 detections per image
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)))

test_pipeline = [
    # Pillow, no EXIF rotation (the recipe's): the seed's Image.open(f).convert('RGB') + ToTensor
    _base_.load_image,
    dict(type='TorchvisionResize', scale=(max_size, min_size)),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor', 'instances')),
]
val_dataloader = dict(batch_size=batch_size, num_workers=num_workers,
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# the seed's training recipe is the step-37e config's; nothing here trains
train_dataloader = train_cfg = optim_wrapper = param_scheduler = None
