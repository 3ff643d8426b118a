"""Writes original_layouts.json: every key and shape of the released isl-org ZoeDepth checkpoints.

    PYTHONPATH=. python tests/data/make_original_layouts.py   # rewrites tests/data/original_layouts.json

The layouts are what `state_dict()` of the original models holds, established by reading the module trees
(nothing here is imported from, or copied out of, those repositories; each block names the file it comes from):

* isl-org/ZoeDepth @ d87f17b (the ZoeD_M12_* release code):
  - zoedepth/models/zoedepth/zoedepth_v1.py        ZoeDepth (N and K): core, conv2, seed_bin_regressor,
    seed_projector, projectors[4], attractors[4], conditional_log_binomial; mlp sizes from the constructor defaults
  - zoedepth/models/zoedepth_nk/zoedepth_nk_v1.py  ZoeDepthNK: patch_transformer, mlp_classifier, and
    ModuleDicts keyed by "nyu"/"kitti"; Attractor(bin_embedding_dim, n_attractors[i], mlp_dim=...) passes
    n_attractors[i] as n_bins, so every NK attractor keeps the default 16 attractors
  - zoedepth/models/layers/{attractor,localbins_layers,dist_layers,patch_transformer}.py: `_net` Sequentials
    (weights at 0 and 2), the LogBinomial buffers k_idx (int64) and K_minus_1, nn.TransformerEncoder(4 layers,
    d_model 128, 4 heads, feed-forward 1024) with its fused in_proj
  - zoedepth/models/zoedepth/config_zoedepth*.json, zoedepth_nk/config_zoedepth_nk.json: DPT_BEiT_L_384,
    bin_embedding_dim 128, n_attractors [16, 8, 4, 1], bins "softplus" (N, NK) / "normed" (K), 64 bins
  - zoedepth/models/base_models/midas.py            MidasCore wraps the MiDaS model as `core.core`
* isl-org/MiDaS @ 4545977 (loaded by torch.hub as DPT_BEiT_L_384):
  - hubconf.py DPT_BEiT_L_384 -> DPTDepthModel(backbone="beitl16_384", readout "project" by default)
  - midas/dpt_depth.py: pretrained, scratch.refinenet1..4, scratch.output_conv (conv 0, 2, 4)
  - midas/blocks.py: _make_scratch layer1_rn..layer4_rn (no bias), FeatureFusionBlock_custom (out_conv,
    resConfUnit1, resConfUnit2 with conv1/conv2)
  - midas/backbones/utils.py make_backbone_default: act_postprocess1..4 = ProjectReadout (0.project.0),
    Conv2d 1x1 (3) and ConvTranspose2d k4 / ConvTranspose2d k2 / none / Conv2d 3x3 stride 2 (4)
  - midas/backbones/beit.py: timm.create_model("beit_large_patch16_384") as `pretrained.model`
* timm v0.6.12 (pinned by both repositories' environment files), timm/models/beit.py:
  beit_large_patch16_384 = Beit(img_size 384, patch 16, dim 1024, depth 24, 16 heads, mlp 4x, qkv_bias,
  no absolute position embedding, relative position bias per block, init_values -> gamma_1/gamma_2), with the
  defaults num_classes=1000 and global_pool="avg": `norm` is an Identity, `fc_norm` and `head` exist (unused by
  MiDaS). Attention: fused qkv (no bias), q_bias and v_bias parameters, k_bias a non-persistent buffer (not
  saved), relative_position_bias_table [(2*24-1)^2 + 3, heads] and the persistent buffer relative_position_index
  [24*24+1, 24*24+1] (int64; newer timm no longer saves it, which is why strict loads of these files fail there).

Keys are listed in state_dict order (a module's own parameters, then its buffers, then its children in
registration order). Shapes are independent of the input size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

D, DEPTH, HEADS, WINDOW = 1024, 24, 16, 24  # BEiT-L/16 at 384: a 24 x 24 patch grid
NECK = (256, 512, 1024, 1024)  # MiDaS BEiT-L reassemble widths
FEATURES = 256  # MiDaS `features`: fusion width and ZoeDepth's bottleneck
N_BINS, EMBED = 64, 128


def linear(prefix, out, inp, bias=True):
    return {f"{prefix}.weight": [out, inp], **({f"{prefix}.bias": [out]} if bias else {})}


def conv(prefix, out, inp, k, bias=True):
    return {f"{prefix}.weight": [out, inp, k, k], **({f"{prefix}.bias": [out]} if bias else {})}


def layer_norm(prefix, dim):
    return {f"{prefix}.weight": [dim], f"{prefix}.bias": [dim]}


def beit(prefix):
    keys = {f"{prefix}cls_token": [1, 1, D], **conv(f"{prefix}patch_embed.proj", D, 3, 16)}
    for i in range(DEPTH):
        b = f"{prefix}blocks.{i}."
        keys.update({f"{b}gamma_1": [D], f"{b}gamma_2": [D], **layer_norm(f"{b}norm1", D)})
        keys.update(
            {
                f"{b}attn.q_bias": [D],
                f"{b}attn.v_bias": [D],
                f"{b}attn.relative_position_bias_table": [(2 * WINDOW - 1) ** 2 + 3, HEADS],
                f"{b}attn.relative_position_index": [WINDOW**2 + 1, WINDOW**2 + 1],
                **linear(f"{b}attn.qkv", 3 * D, D, bias=False),
                **linear(f"{b}attn.proj", D, D),
                **layer_norm(f"{b}norm2", D),
                **linear(f"{b}mlp.fc1", 4 * D, D),
                **linear(f"{b}mlp.fc2", D, 4 * D),
            }
        )
    keys.update({**layer_norm(f"{prefix}fc_norm", D), **linear(f"{prefix}head", 1000, D)})
    return keys


def midas(prefix):
    keys = beit(f"{prefix}pretrained.model.")
    resize = {1: ("transpose", 4), 2: ("transpose", 2), 3: None, 4: ("conv", 3)}
    for n, width in enumerate(NECK, start=1):
        p = f"{prefix}pretrained.act_postprocess{n}"
        keys.update({**linear(f"{p}.0.project.0", D, 2 * D), **conv(f"{p}.3", width, D, 1)})
        if resize[n]:
            keys.update(conv(f"{p}.4", width, width, resize[n][1]))  # ConvTranspose2d [in, out, k, k]: in == out
    keys.update(dpt_scratch(prefix))
    p = f"{prefix}scratch.output_conv"
    keys.update({**conv(f"{p}.0", 128, FEATURES, 3), **conv(f"{p}.2", 32, 128, 3), **conv(f"{p}.4", 1, 32, 1)})
    return keys


def dpt_scratch(prefix):
    """MiDaS's and Depth Anything's DPT `scratch`: layer1_rn..layer4_rn (3x3, no bias) from the neck widths to
    FEATURES, and refinenet1..4 (out_conv and two residual units of two 3x3 convolutions)."""
    keys = {}
    for n, width in enumerate(NECK, start=1):
        keys.update(conv(f"{prefix}scratch.layer{n}_rn", FEATURES, width, 3, bias=False))
    for n in range(1, 5):
        p = f"{prefix}scratch.refinenet{n}"
        keys.update(conv(f"{p}.out_conv", FEATURES, FEATURES, 1))
        for unit in (1, 2):
            for c in (1, 2):
                keys.update(conv(f"{p}.resConfUnit{unit}.conv{c}", FEATURES, FEATURES, 3))
    return keys


def mlp_net(prefix, out, mid, inp):
    """The two 1x1 convolutions of a `_net` Sequential (indices 0 and 2; 1 and 3 are activations)."""
    return {**conv(f"{prefix}._net.0", mid, inp, 1), **conv(f"{prefix}._net.2", out, mid, 1)}


def log_binomial(prefix, in_features, bottleneck_factor):
    mid = (in_features + EMBED) // bottleneck_factor
    return {
        f"{prefix}.log_binomial_transform.k_idx": [1, N_BINS, 1, 1],
        f"{prefix}.log_binomial_transform.K_minus_1": [1, 1, 1, 1],
        **conv(f"{prefix}.mlp.0", mid, in_features + EMBED, 1),
        **conv(f"{prefix}.mlp.2", 4, mid, 1),
    }


def zoedepth(normed: bool):
    """ZoeD_M12_N (softplus bins) and ZoeD_M12_K (normed bins: two outputs per attractor)."""
    return {**midas("core.core."), **single_metric_head(normed)}


def single_metric_head(normed: bool):
    """What zoedepth_v1.py's ZoeDepth adds to its core: conv2, the seed bins and projector, four projectors and
    attractors (normed bins: two outputs per attractor), and the conditional log-binomial over the relative
    features (32) and relative depth (1)."""
    keys = conv("conv2", FEATURES, FEATURES, 1)
    keys.update(mlp_net("seed_bin_regressor", N_BINS, 256, FEATURES))  # SeedBinRegressor mlp_dim default 256
    keys.update(mlp_net("seed_projector", EMBED, 128, FEATURES))  # Projector mlp_dim default 128
    for i in range(4):
        keys.update(mlp_net(f"projectors.{i}", EMBED, 128, FEATURES))
    for i, n in enumerate((16, 8, 4, 1)):
        keys.update(mlp_net(f"attractors.{i}", 2 * n if normed else n, 128, EMBED))
    keys.update(log_binomial("conditional_log_binomial", 32 + 1, 2))  # relative depth concatenated
    return keys


def zoedepth_nk():
    keys = {**midas("core.core."), **conv("conv2", FEATURES, FEATURES, 1)}
    for i in range(4):
        p = f"patch_transformer.transformer_encoder.layers.{i}"
        keys.update(
            {
                f"{p}.self_attn.in_proj_weight": [3 * EMBED, EMBED],
                f"{p}.self_attn.in_proj_bias": [3 * EMBED],
                **linear(f"{p}.self_attn.out_proj", EMBED, EMBED),
                **linear(f"{p}.linear1", 1024, EMBED),
                **linear(f"{p}.linear2", EMBED, 1024),
                **layer_norm(f"{p}.norm1", EMBED),
                **layer_norm(f"{p}.norm2", EMBED),
            }
        )
    keys.update(conv("patch_transformer.embedding_convPxP", EMBED, FEATURES, 1))
    keys.update({**linear("mlp_classifier.0", 128, 128), **linear("mlp_classifier.2", 2, 128)})
    domains = ("nyu", "kitti")
    for d in domains:
        keys.update(mlp_net(f"seed_bin_regressors.{d}", N_BINS, EMBED // 2, FEATURES))
    keys.update(mlp_net("seed_projector", EMBED, EMBED // 2, FEATURES))
    for i in range(4):
        keys.update(mlp_net(f"projectors.{i}", EMBED, EMBED // 2, FEATURES))
    for d in domains:
        for i in range(4):
            keys.update(mlp_net(f"attractors.{d}.{i}", 16, EMBED, EMBED))  # 16 whatever n_attractors says
    for d in domains:
        keys.update(log_binomial(f"conditional_log_binomial.{d}", 32, 4))  # no relative depth in NK
    return keys


def layouts() -> dict:
    return {
        "_about": [line for line in __doc__.split("\n\n", 2)[2].splitlines() if line.strip()],
        "_int64_buffers": ["*.attn.relative_position_index", "*.log_binomial_transform.k_idx"],
        "ZoeD_M12_N": zoedepth(normed=False),
        "ZoeD_M12_K": zoedepth(normed=True),
        "ZoeD_M12_NK": zoedepth_nk(),
    }


def write_layouts(out: Path, written: dict) -> None:
    """Writes `written` as JSON with one key per line, so that a diff of the file reads as a diff of the layouts."""
    text = json.dumps(written, indent=1)
    out.write_text(
        re.sub(r"\[\s+([\d,\s]+?)\s+\]", lambda m: "[" + ", ".join(m[1].split(",\n")).replace(" ", "") + "]", text)
        + "\n"
    )
    print(out, {name: len(keys) for name, keys in written.items() if not name.startswith("_")})


if __name__ == "__main__":
    write_layouts(Path(__file__).with_name("original_layouts.json"), layouts())
