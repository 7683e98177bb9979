# What the CPU demo configs (configs/*/*demo*_synthetic.py: a recipe at CPU-minute scale on the
# generated dataset) set alike. A demo lists it beside its recipe in `_base_` and reads it as
# `_base_.demo_...`: mmengine merges two bases only when no top-level key is in both, so every
# name here starts with `demo_`, which no recipe defines. A base cannot read its child's
# variables: what follows from a demo's own budget (batch, LR, epochs, warm-up, image size) stays
# in the demo, named at its top.

# the generated images are 160-320 px: a few hundred proposals and 64 sampled RoIs per image
# cover them (the recipes keep 1000-2000 and sample 512), part of what brings a CPU batch of 4
# from 3.4 to 1.9 s. The same counts in every demo, so tools/compare_recipes.py compares the
# recipes on one budget.
demo_proposals = dict(
    train_cfg=dict(rpn_proposal=dict(nms_pre=600, max_per_img=300),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=300)))

# the R50 demos start from a backbone of a 2-minute pretraining (the soft-teacher demo through the
# detector demo's weights), which gives large activations at first: the gradient norm is clipped
# to keep the first steps sane
demo_clip_grad = dict(max_norm=35, norm_type=2)
