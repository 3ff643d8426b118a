"""Writes depth_anything_v1_layouts.json: every key and shape of the Depth Anything V1 metric checkpoints.

    PYTHONPATH=. python tests/data/make_depth_anything_v1_layouts.py   # rewrites depth_anything_v1_layouts.json

The files are `depth_anything_metric_depth_indoor.pt` and `depth_anything_metric_depth_outdoor.pt` (the Hugging Face
Space LiheYoung/Depth-Anything, folder checkpoints_metric_depth). The layouts are what `state_dict()` of the
original model holds, established by reading the module trees (nothing here is imported from, or copied out of,
that repository; each block names the file it comes from):

* LiheYoung/Depth-Anything @ 1d03336 (Apache-2.0), folder metric_depth/:
  - zoedepth/trainers/base_trainer.py save_checkpoint: `{"model": state_dict, "optimizer": None, "epoch": n}`
  - zoedepth/models/zoedepth/zoedepth_v1.py       ZoeDepth: core (DepthAnythingCore), conv2, seed_bin_regressor,
    seed_projector, projectors[4], attractors[4], conditional_log_binomial; mlp sizes from the constructor
    defaults; the log-binomial takes 32 relative features + the relative depth
  - zoedepth/models/zoedepth/config_zoedepth.json n_bins 64, bin_embedding_dim 128, n_attractors [16, 8, 4, 1],
    bin_centers_type "softplus"; config_zoedepth_kitti.json switches to "normed" bins, but only when a run passes
    config_version=kitti: train_mono.py and evaluate.py, as the metric_depth README runs them for both files
    (`-d nyu` / `-d kitti`, no config_version), build the softplus head, so both released files hold it and
    their keys and shapes are the same. With normed bins the attractors' last convolutions would have two output
    channels per attractor (`_normed_head` below).
  - zoedepth/models/layers/{attractor,localbins_layers,dist_layers}.py: `_net` Sequentials (weights at 0 and 2),
    the LogBinomial buffers k_idx (int64) and K_minus_1
  - zoedepth/models/base_models/depth_anything.py DepthAnythingCore wraps DPT_DINOv2 as `core.core`; its `prep`
    (resize, normalisation) holds no tensors
  - zoedepth/models/base_models/dpt_dinov2/dpt.py DPT_DINOv2: `pretrained` (torch.hub 'dinov2_vitl14' from the
    vendored torchhub folder, pretrained=False) and `depth_head` = DPTHead(1024, features 256, use_bn False,
    out_channels [256, 512, 1024, 1024], use_clstoken False): projects[4] (1x1), resize_layers (ConvTranspose2d
    k4 s4, ConvTranspose2d k2 s2, Identity, Conv2d 3x3 s2), no readout_projects, scratch: layer1_rn..layer4_rn
    (3x3, no bias), refinenet1..4, output_conv1 (3x3, 256 -> 128), output_conv2 (3x3 128 -> 32, ReLU, 1x1 32 -> 1,
    ReLU, Identity)
  - zoedepth/models/base_models/dpt_dinov2/blocks.py: FeatureFusionBlock (out_conv, resConfUnit1, resConfUnit2
    with conv1/conv2, biases as bn is False; FloatFunctional holds no tensors)
* the vendored DINOv2, torchhub/facebookresearch_dinov2_main/ of the same commit:
  - hubconf.py dinov2_vitl14: img_size 518, patch 14, init_values 1.0, block_chunks 0, no register tokens
  - vision_transformer.py vit_large: dim 1024, depth 24, 16 heads, mlp_ratio 4, qkv_bias; parameters cls_token,
    pos_embed [1, 1 + 37*37, 1024], mask_token [1, 1024]; patch_embed, blocks, norm (LayerNorm eps 1e-6),
    head = Identity
  - dinov2/layers/{block,attention,layer_scale,mlp,patch_embed}.py: block = norm1, attn (qkv fused with bias,
    proj), ls1.gamma, norm2, mlp (fc1, fc2), ls2.gamma; patch_embed.proj is a 14x14 convolution

Keys are listed in state_dict order (a module's own parameters, then its buffers, then its children in
registration order). Shapes are independent of the input size.
"""

from __future__ import annotations

from pathlib import Path

from make_original_layouts import conv, dpt_scratch, layer_norm, linear, single_metric_head, write_layouts

D, DEPTH, PATCH, GRID = 1024, 24, 14, 37  # DINOv2 ViT-L/14 pretrained at 518: a 37 x 37 patch grid
NECK = (256, 512, 1024, 1024)  # DPTHead out_channels
FEATURES = 256  # DPTHead features: fusion width and ZoeDepth's bottleneck
RELATIVE = 32  # output_conv2's hidden width: the relative features of ZoeDepth's head (single_metric_head's 32)


def dinov2(prefix):
    keys = {f"{prefix}cls_token": [1, 1, D], f"{prefix}pos_embed": [1, 1 + GRID * GRID, D]}
    keys[f"{prefix}mask_token"] = [1, D]
    keys.update(conv(f"{prefix}patch_embed.proj", D, 3, PATCH))
    for i in range(DEPTH):
        b = f"{prefix}blocks.{i}."
        keys.update({**layer_norm(f"{b}norm1", D), **linear(f"{b}attn.qkv", 3 * D, D), **linear(f"{b}attn.proj", D, D)})
        keys.update({f"{b}ls1.gamma": [D], **layer_norm(f"{b}norm2", D)})
        keys.update({**linear(f"{b}mlp.fc1", 4 * D, D), **linear(f"{b}mlp.fc2", D, 4 * D), f"{b}ls2.gamma": [D]})
    keys.update(layer_norm(f"{prefix}norm", D))
    return keys


def dpt_head(prefix):
    keys = {}
    for k, width in enumerate(NECK):
        keys.update(conv(f"{prefix}projects.{k}", width, D, 1))
    for k, kernel in ((0, 4), (1, 2), (3, 3)):  # resize_layers.2 is an Identity
        keys.update(conv(f"{prefix}resize_layers.{k}", NECK[k], NECK[k], kernel))  # ConvTranspose2d [in, out, k, k]
    keys.update(dpt_scratch(prefix))
    keys.update(conv(f"{prefix}scratch.output_conv1", FEATURES // 2, FEATURES, 3))
    keys.update(conv(f"{prefix}scratch.output_conv2.0", RELATIVE, FEATURES // 2, 3))
    keys.update(conv(f"{prefix}scratch.output_conv2.2", 1, RELATIVE, 1))
    return keys


def zoedepth(normed: bool):
    return {**dinov2("core.core.pretrained."), **dpt_head("core.core.depth_head."), **single_metric_head(normed)}


def layouts() -> dict:
    softplus, normed = zoedepth(normed=False), zoedepth(normed=True)
    return {
        "_about": [line for line in __doc__.split("\n\n", 2)[2].splitlines() if line.strip()],
        "_int64_buffers": ["*.log_binomial_transform.k_idx"],
        "depth_anything_metric_depth_indoor": softplus,
        "depth_anything_metric_depth_outdoor": softplus,
        "_normed_head": {key: shape for key, shape in normed.items() if softplus[key] != shape},
    }


if __name__ == "__main__":
    write_layouts(Path(__file__).with_name("depth_anything_v1_layouts.json"), layouts())
