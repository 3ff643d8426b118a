"""The config of an original isl-org checkpoint (`ZoeD_M12_{N,K,NK}.pt`), read from its tensors.

The architecture (widths, depth, heads, bins) comes from the tensor shapes, the rest from the released configs
(zoedepth/models/zoedepth*/config_zoedepth*.json). It differs from the configs on the hub in one respect, on
purpose: LayerNorm eps is 1e-6, what timm's BEiT ran with, where the converted hub configs carry BEiT's default
1e-12 (a ~1e-5 relative change in depth). `with_kitti_max_depth_80` is the documented way out of the ZoeD_M12_K
depth-range quirk.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

import numpy as np

from zoedepth_jax.config import DEFAULT_DEPTH_RANGE, BeitConfig, BinConfiguration, ZoeDepthConfig
from zoedepth_jax.domains import DEPTH_RANGES, DOMAINS
from zoedepth_jax.errors import CheckpointError, ConfigError
from zoedepth_jax.weights.original_names import BLOCK_KEY

VARIANTS = ("N", "K", "NK")
TIMM_LAYER_NORM_EPS = 1e-6  # timm's BEiT norm_layer = partial(nn.LayerNorm, eps=1e-6)


def normalize_variant(variant: str) -> str:
    """ "N", "k", "NK", "ZoeD_M12_NK", "ZoeD_N" -> "N" / "K" / "NK"."""
    name = str(variant).upper().removeprefix("ZOED_").removeprefix("M12_")
    if name not in VARIANTS:
        raise ConfigError(f"variant = {variant!r}: expected one of {', '.join(VARIANTS)} (ZoeD_M12_N, _K or _NK)")
    return name


def detect_variant(state: Mapping[str, np.ndarray], source: str = "checkpoint") -> str:
    """NK has the router and per-domain heads; N and K differ in their attractors: K's normed attractors emit
    two channels per attractor (the last stage has one attractor), N's softplus attractors one."""
    if any(key.startswith(("patch_transformer.", "seed_bin_regressors.")) for key in state):
        return "NK"
    key = "attractors.3._net.2.weight"
    if key not in state:
        raise CheckpointError(f"{source} lacks {key}: it holds no ZoeDepth metric head (N, K or NK)")
    channels = state[key].shape[0]
    if channels not in (1, 2):
        raise CheckpointError(f"{source}: {key} has {channels} output channels; ZoeD_M12_N has 1, ZoeD_M12_K 2")
    return "N" if channels == 1 else "K"


def _shape(state: Mapping[str, np.ndarray], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source} lacks {key}, which every original ZoeDepth checkpoint holds")
    return tuple(state[key].shape)


def _count(state: Mapping[str, np.ndarray], pattern: str) -> int:
    return len({m[1] for key in state if (m := re.match(pattern, key))})


def _backbone_config(state: Mapping[str, np.ndarray], source: str) -> BeitConfig:
    hidden = _shape(state, "core.core.pretrained.model.cls_token", source)[-1]
    patch = _shape(state, "core.core.pretrained.model.patch_embed.proj.weight", source)[-1]
    layers = _count(state, BLOCK_KEY)
    table = _shape(state, "core.core.pretrained.model.blocks.0.attn.relative_position_bias_table", source)
    side = math.isqrt(max(table[0] - 3, 0))  # (2 * window - 1) ** 2 relative offsets + 3 for the CLS token
    if side % 2 == 0 or side * side + 3 != table[0]:
        raise CheckpointError(f"{source}: a relative-position table of {table[0]} rows fits no square patch grid")
    if layers % 4:
        # MiDaS hooks the last block of each quarter of the depth (blocks 5, 11, 17, 23 of BEiT-L).
        raise CheckpointError(f"{source}: {layers} BEiT blocks do not split into MiDaS's four stages; pass config=")
    return BeitConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=table[1],
        intermediate_size=_shape(state, "core.core.pretrained.model.blocks.0.mlp.fc1.weight", source)[0],
        patch_size=patch,
        image_size=(side + 1) // 2 * patch,
        layer_norm_eps=TIMM_LAYER_NORM_EPS,
        out_indices=tuple(layers // 4 * q for q in (1, 2, 3, 4)),
    )


def original_config(
    state: Mapping[str, np.ndarray], variant: str | None = None, source: str = "checkpoint"
) -> ZoeDepthConfig:
    """The config of an original checkpoint: sizes from its tensors, the rest from the released configs.
    `variant`, if given, must agree with the keys."""
    found = detect_variant(state, source)
    if variant is not None and normalize_variant(variant) != found:
        raise CheckpointError(
            f"{source} holds the ZoeD_M12_{found} layout, but variant={variant!r} was asked for "
            f"({'router and two heads' if found == 'NK' else 'one metric head'} found)"
        )
    core = _core_fields(state, source)
    heads = _router_and_heads(state, source) if found == "NK" else _single_head(state, found, source)
    config = ZoeDepthConfig(**core, **heads)
    try:
        config.validate()
    except ConfigError as e:
        raise CheckpointError(f"{source}: the architecture read from its tensors is not supported: {e}") from None
    return config


def _core_fields(state: Mapping[str, np.ndarray], source: str) -> dict:
    """Backbone, neck, relative head and the metric heads' shared settings: the same in all three variants."""
    midas = "core.core.pretrained."
    fusion = _shape(state, "core.core.scratch.layer1_rn.weight", source)[0]
    return dict(
        backbone_config=_backbone_config(state, source),
        readout_type="project",
        neck_hidden_sizes=tuple(_shape(state, f"{midas}act_postprocess{n}.3.weight", source)[0] for n in range(1, 5)),
        fusion_hidden_size=fusion,
        bottleneck_features=fusion,
        num_relative_features=_shape(state, "core.core.scratch.output_conv.2.weight", source)[0],
        bin_embedding_dim=_shape(state, "seed_projector._net.2.weight", source)[0],
        attractor_alpha=1000,  # the released configs' values (recorded only: see config.attractor_alpha)
        attractor_gamma=2,
        attractor_kind="mean",
        min_temp=0.0212,
        max_temp=50.0,
    )


def _router_and_heads(state: Mapping[str, np.ndarray], source: str) -> dict:
    """ZoeD_M12_NK: one softplus head per domain, in the router's order, and the patch-transformer router."""
    domains = sorted({m[1] for key in state if (m := re.match(r"seed_bin_regressors\.([^.]+)\.", key))})
    if domains != sorted(DOMAINS):
        raise CheckpointError(f"{source}: heads {domains}; the NK router chooses between exactly nyu and kitti")
    bins = tuple(
        BinConfiguration(d, _shape(state, f"seed_bin_regressors.{d}._net.2.weight", source)[0], *DEPTH_RANGES[d])
        for d in DOMAINS
    )
    encoder = "patch_transformer.transformer_encoder.layers."
    return dict(
        bin_centers_type="softplus",
        bin_configurations=bins,
        num_patch_transformer_layers=_count(state, re.escape(encoder) + r"(\d+)\."),
        patch_transformer_hidden_size=_shape(state, "patch_transformer.embedding_convPxP.weight", source)[0],
        patch_transformer_intermediate_size=_shape(state, f"{encoder}0.linear1.weight", source)[0],
        patch_transformer_num_attention_heads=4,  # PatchTransformerEncoder's default; not in the weights
    )


def _single_head(state: Mapping[str, np.ndarray], variant: str, source: str) -> dict:
    """ZoeD_M12_N (softplus attractors, one channel each) or ZoeD_M12_K (normed, two channels each)."""
    stages = [_shape(state, f"attractors.{i}._net.2.weight", source)[0] for i in range(4)]
    n_bins = _shape(state, "seed_bin_regressor._net.2.weight", source)[0]
    name = "nyu" if variant == "N" else "kitti"
    # The single-head files' configs set no depth range: they run with ZoeDepth's default, ZoeD_M12_K too (see
    # with_kitti_max_depth_80).
    return dict(
        bin_centers_type="softplus" if variant == "N" else "normed",
        bin_configurations=(BinConfiguration(name, n_bins, *DEFAULT_DEPTH_RANGE),),
        num_attractors=tuple(c if variant == "N" else c // 2 for c in stages),
    )


def with_kitti_max_depth_80(config: ZoeDepthConfig) -> ZoeDepthConfig:
    """ZoeD_M12_K (and transformers' Intel/zoedepth-kitti, converted from it) with bins over 1e-3..80 m.

    The released ZoeD_M12_K config never sets max_depth, so inference (torch.hub `ZoeD_K`, and transformers)
    runs the normed bins over ZoeDepth's default 1e-3..10 m; the original KITTI evaluation merges the KITTI
    dataset config, max_depth 80, and that is where the published KITTI numbers come from. Off by default, so
    that outputs match the original inference code and transformers.
    """
    bins = config.bin_configurations
    if config.is_multi_domain or config.bin_centers_type != "normed":
        raise ConfigError(
            "kitti_max_depth_80 applies only to the KITTI model (ZoeD_M12_K, Intel/zoedepth-kitti: one head with "
            f"normed bins); this checkpoint has {len(bins)} head(s) with {config.bin_centers_type} bins"
        )
    return config.replace(bin_configurations=(dataclasses.replace(bins[0], max_depth=DEPTH_RANGES["kitti"][1]),))
