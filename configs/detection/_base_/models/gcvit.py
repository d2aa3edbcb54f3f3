# The GC ViT backbone settings shared by the detector bases. Variant configs
# set `arch`, `drop_path_rate` and `init_cfg.checkpoint`: the URL of NVlabs'
# ImageNet-1K weights as timm publishes them (timm's `gcvit_<arch>.in1k`),
# downloaded, checked against the hash in the file name and cached on first
# use. They are NVlabs' weights under NVlabs' licence (CC-BY-NC-SA-4.0:
# non-commercial). A local file instead:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH. Large and the
# ImageNet-21K weights have no such URL: download them from
# https://huggingface.co/nvidia/GCViT and pass the local path.
# Drop-path: 0.2 for T is the official detection configs' value, which is
# also T's ImageNet rate. No official S/B (or XXT/XT) detection configs or
# paper values exist; they keep their ImageNet-1K rates as T does (official
# model definitions: XXT/XT 0.2, S 0.3, B 0.5), as our ADE20K configs do.
gcvit_backbone = dict(
    _delete_=True,
    type='GCViT',
    arch='tiny',
    # Window 24 in every stage, as the official detection backbone (its
    # relative-position tables give the paper's detector sizes; the ImageNet
    # 13x13 / 27x27 tables are bicubic-resized to 47x47 on loading).
    window_size=24,
    drop_path_rate=0.2,
    out_indices=(0, 1, 2, 3),
    frozen_stages=-1,
    with_cp=False,
    fused_attn=True,
    init_cfg=dict(type='Pretrained'))
