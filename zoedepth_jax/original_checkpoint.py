"""The original isl-org ZoeDepth checkpoints (`ZoeD_M12_N.pt`, `ZoeD_M12_K.pt`, `ZoeD_M12_NK.pt`): names and config.

A released file is a pickle `{"model": state_dict, ...}` keyed by the original module names: timm's BEiT inside
MiDaS's DPT (`core.core.pretrained.model.blocks.3.attn.qkv.weight`), MiDaS's `scratch` (`refinenet4`, ...) and
ZoeDepth's heads (`seed_bin_regressor._net.0.weight`, `patch_transformer.transformer_encoder.layers.0...`).
Reading the file is `weights.read_original_checkpoint`; this module holds no I/O.

Loading goes original names -> transformers names (`ROWS` below) -> Flax tree (`checkpoint_map`, the same table
that reads the hub's `model.safetensors`). Renaming into the transformers layout rather than straight into Flax
paths keeps one table that knows the Flax tree (transposes, transposed convolutions, domain names); the row for
row correspondence with transformers' own `convert_zoedepth_to_hf.py` can be checked by eye; and both steps
account for every key: each original key matches exactly one row of `ROWS` or `DROPPED` (anything else is a
CheckpointError listing the keys), and `checkpoint_map` then requires every parameter filled exactly once.

`original_config` reads the architecture from the tensor shapes (widths, depth, heads, bins) and takes the rest
from the released configs. It differs from the configs on the hub in one respect, on purpose: LayerNorm eps is
1e-6, what timm's BEiT ran with, where the converted hub configs carry BEiT's default 1e-12 (a ~1e-5 relative
change in depth). `with_kitti_max_depth_80` is the documented way out of the ZoeD_M12_K depth-range quirk.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

import numpy as np

from zoedepth_jax.checkpoint_map import problems_message
from zoedepth_jax.config import BeitConfig, BinConfiguration, ZoeDepthConfig
from zoedepth_jax.errors import CheckpointError, ConfigError

VARIANTS = ("N", "K", "NK")
TIMM_LAYER_NORM_EPS = 1e-6  # timm's BEiT norm_layer = partial(nn.LayerNorm, eps=1e-6)

# Regex pieces: named groups become template fields (see `_fields` for the derived ones).
_BEIT = r"core\.core\.pretrained\.model\."
_BLOCK = _BEIT + r"blocks\.(?P<i>\d+)\."
_MIDAS = r"core\.core\."
_P = r"(?P<p>weight|bias)"
_N = r"(?P<n>[1-4])"  # MiDaS numbers its four stages from 1
_NET = r"_net\.(?P<s>[02])\." + _P  # a `_net` Sequential: 1x1 convs at 0 and 2, activations between
_DOMAIN = r"(?P<d>[a-z]+)"
_ENCODER = r"patch_transformer\.transformer_encoder\.layers\.(?P<i>\d+)\."
_LAYER = "backbone.encoder.layer.{i}."
_QKV = ("query", "key", "value")


def _split_in_three(w: np.ndarray) -> list[np.ndarray]:
    """A fused [3 * dim, ...] projection (timm `qkv`, torch MultiheadAttention `in_proj`) -> query, key, value."""
    if w.ndim < 1 or w.shape[0] % 3:
        raise ValueError("not three equal parts")
    return np.split(w, 3, axis=0)


# (pattern, transformers name(s), transform): the first row whose pattern matches the whole key wins. A tuple of
# names takes the pieces of `_split_in_three`; otherwise the tensor is passed on unchanged.
ROWS: tuple[tuple[str, str | tuple[str, ...], object], ...] = (
    # timm BEiT-L/16 (MiDaS `pretrained.model`)
    (_BEIT + r"cls_token", "backbone.embeddings.cls_token", None),
    (_BEIT + r"patch_embed\.proj\." + _P, "backbone.embeddings.patch_embeddings.projection.{p}", None),
    (_BLOCK + r"norm1\." + _P, _LAYER + "layernorm_before.{p}", None),
    (_BLOCK + r"norm2\." + _P, _LAYER + "layernorm_after.{p}", None),
    (_BLOCK + r"gamma_(?P<g>[12])", _LAYER + "lambda_{g}", None),
    (_BLOCK + r"attn\.qkv\.weight", tuple(_LAYER + f"attention.attention.{n}.weight" for n in _QKV), _split_in_three),
    # timm's key bias is a constant zero buffer that is not saved; transformers' key projection has no bias.
    (_BLOCK + r"attn\.q_bias", _LAYER + "attention.attention.query.bias", None),
    (_BLOCK + r"attn\.v_bias", _LAYER + "attention.attention.value.bias", None),
    (
        _BLOCK + r"attn\.relative_position_bias_table",
        _LAYER + "attention.attention.relative_position_bias.relative_position_bias_table",
        None,
    ),
    (_BLOCK + r"attn\.proj\." + _P, _LAYER + "attention.output.dense.{p}", None),
    (_BLOCK + r"mlp\.fc1\." + _P, _LAYER + "intermediate.dense.{p}", None),
    (_BLOCK + r"mlp\.fc2\." + _P, _LAYER + "output.dense.{p}", None),
    # MiDaS DPT neck: act_postprocessN = (readout projection, -, -, 1x1 conv, resize); scratch = convs + fusion
    (
        _MIDAS + rf"pretrained\.act_postprocess{_N}\.0\.project\.0\.{_P}",
        "neck.reassemble_stage.readout_projects.{stage}.0.{p}",
        None,
    ),
    (
        _MIDAS + rf"pretrained\.act_postprocess{_N}\.3\.{_P}",
        "neck.reassemble_stage.layers.{stage}.projection.{p}",
        None,
    ),
    (_MIDAS + rf"pretrained\.act_postprocess{_N}\.4\.{_P}", "neck.reassemble_stage.layers.{stage}.resize.{p}", None),
    (_MIDAS + rf"scratch\.layer{_N}_rn\.weight", "neck.convs.{stage}.weight", None),
    (_MIDAS + rf"scratch\.refinenet{_N}\.out_conv\.{_P}", "neck.fusion_stage.layers.{fusion}.projection.{p}", None),
    (
        _MIDAS + rf"scratch\.refinenet{_N}\.resConfUnit(?P<u>[12])\.conv(?P<c>[12])\.{_P}",
        "neck.fusion_stage.layers.{fusion}.residual_layer{u}.convolution{c}.{p}",
        None,
    ),
    (_MIDAS + r"scratch\.output_conv\.(?P<s>[024])\." + _P, "relative_head.conv{seq}.{p}", None),
    # ZoeDepth metric head (N, K: one of each; NK: ModuleDicts keyed by domain)
    (r"conv2\." + _P, "metric_head.conv2.{p}", None),
    (r"seed_bin_regressor\." + _NET, "metric_head.seed_bin_regressor.conv{seq}.{p}", None),
    (rf"seed_bin_regressors\.{_DOMAIN}\.{_NET}", "metric_head.seed_bin_regressors.{d}.conv{seq}.{p}", None),
    (r"seed_projector\." + _NET, "metric_head.seed_projector.conv{seq}.{p}", None),
    (r"projectors\.(?P<i>\d+)\." + _NET, "metric_head.projectors.{i}.conv{seq}.{p}", None),
    (r"attractors\.(?P<i>\d+)\." + _NET, "metric_head.attractors.{i}.conv{seq}.{p}", None),
    (rf"attractors\.{_DOMAIN}\.(?P<i>\d+)\.{_NET}", "metric_head.attractors.{d}.{i}.conv{seq}.{p}", None),
    (r"conditional_log_binomial\.mlp\.(?P<s>[02])\." + _P, "metric_head.conditional_log_binomial.mlp.{s}.{p}", None),
    (
        rf"conditional_log_binomial\.{_DOMAIN}\.mlp\.(?P<s>[02])\.{_P}",
        "metric_head.conditional_log_binomial.{d}.mlp.{s}.{p}",
        None,
    ),
    # ZoeD-NK router: patch transformer (torch nn.TransformerEncoder, fused in_proj) and classifier
    (r"patch_transformer\.embedding_convPxP\." + _P, "metric_head.patch_transformer.embedding_convPxP.{p}", None),
    (
        _ENCODER + r"self_attn\.in_proj_(?P<p>weight|bias)",
        tuple(f"metric_head.patch_transformer.transformer_encoder.{{i}}.self_attn.{n}.{{p}}" for n in _QKV),
        _split_in_three,
    ),
    (
        _ENCODER + r"(?P<m>self_attn\.out_proj|linear1|linear2|norm1|norm2)\." + _P,
        "metric_head.patch_transformer.transformer_encoder.{i}.{m}.{p}",
        None,
    ),
    (r"mlp_classifier\.(?P<s>[02])\." + _P, "metric_head.mlp_classifier.linear{seq}.{p}", None),
)

# Keys of the released files that carry nothing the forward pass reads, with the reason.
DROPPED: tuple[tuple[str, str], ...] = (
    (_BLOCK + r"attn\.relative_position_index", "buffer of constants, recomputed from the input's patch grid"),
    # Not in the released files (timm 0.6 does not save it); a key bias adds q.b to a whole row of scores,
    # which the softmax cancels, so it would be dropped whatever its value.
    (_BLOCK + r"attn\.k_bias", "timm's zero key-bias buffer"),
    (_BEIT + r"(fc_norm|head)\." + _P, "timm's ImageNet classifier (pooling norm and head), never run by MiDaS"),
    (
        rf"conditional_log_binomial\.(?:{_DOMAIN}\.)?log_binomial_transform\.(k_idx|K_minus_1)",
        "buffers holding the constants 0..K-1 and K-1",
    ),
)

_ROWS = tuple((re.compile(pattern), targets, transform) for pattern, targets, transform in ROWS)
_DROPPED = tuple(re.compile(pattern) for pattern, _ in DROPPED)


def _fields(match: re.Match) -> dict[str, object]:
    """Template fields: the named groups, and the indices derived from them."""
    fields: dict[str, object] = dict(match.groupdict())
    if match.groupdict().get("n"):
        n = int(match["n"])
        fields["stage"] = n - 1  # act_postprocess1 / layer1_rn: the first (shallowest) stage
        fields["fusion"] = 4 - n  # refinenet4 runs first (on the deepest stage): transformers' fusion layer 0
    if match.groupdict().get("s"):
        fields["seq"] = int(match["s"]) // 2 + 1  # Sequential index 0, 2, 4 -> conv1, conv2, conv3
    return fields


def is_original_layout(state: Mapping[str, object]) -> bool:
    return any(key.startswith("core.core.") for key in state)


def to_hf_state_dict(state: Mapping[str, np.ndarray], source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Renames (and splits) an original state dict into the transformers layout; drops the keys in `DROPPED`.

    A key that matches no row, a fused tensor that does not split in three, or two keys that land on the same
    name is a CheckpointError listing every such key.
    """
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    problems: dict[str, list[str]] = {"unexpected keys": [], "mis-shaped keys": []}
    for key, tensor in state.items():
        if any(pattern.fullmatch(key) for pattern in _DROPPED):
            continue
        row = next(((m, targets, fn) for pattern, targets, fn in _ROWS if (m := pattern.fullmatch(key))), None)
        if row is None:
            problems["unexpected keys"].append(f"{key} (not a key of the original ZoeDepth models)")
            continue
        match, targets, transform = row
        fields = _fields(match)
        if transform is None:
            pieces, names = [tensor], [targets.format(**fields)]
        else:
            try:
                pieces = transform(np.asarray(tensor))
            except ValueError:
                problems["mis-shaped keys"].append(f"{key}: {tuple(tensor.shape)} does not split into query/key/value")
                continue
            names = [target.format(**fields) for target in targets]
        for name, piece in zip(names, pieces, strict=True):
            if name in out:
                problems["unexpected keys"].append(f"{key} (a second source for {name}, after {origin[name]})")
            else:
                out[name], origin[name] = piece, key
    if any(problems.values()):
        raise CheckpointError(problems_message(source, problems))
    return out


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
    layers = _count(state, _BLOCK)
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
    """The config of an original checkpoint: sizes from its tensors, the rest from the released configs
    (zoedepth/models/zoedepth*/config_zoedepth*.json). `variant`, if given, must agree with the keys."""
    found = detect_variant(state, source)
    if variant is not None and normalize_variant(variant) != found:
        raise CheckpointError(
            f"{source} holds the ZoeD_M12_{found} layout, but variant={variant!r} was asked for "
            f"({'router and two heads' if found == 'NK' else 'one metric head'} found)"
        )
    midas = "core.core.pretrained."
    neck = tuple(_shape(state, f"{midas}act_postprocess{n}.3.weight", source)[0] for n in range(1, 5))
    fusion = _shape(state, "core.core.scratch.layer1_rn.weight", source)[0]
    common = dict(
        backbone_config=_backbone_config(state, source),
        readout_type="project",
        neck_hidden_sizes=neck,
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
    if found == "NK":
        domains = sorted({m[1] for key in state if (m := re.match(r"seed_bin_regressors\.([^.]+)\.", key))})
        if domains != ["kitti", "nyu"]:
            raise CheckpointError(f"{source}: heads {domains}; the NK router chooses between exactly nyu and kitti")
        bins = tuple(
            BinConfiguration(d, _shape(state, f"seed_bin_regressors.{d}._net.2.weight", source)[0], 1e-3, top)
            for d, top in (("nyu", 10.0), ("kitti", 80.0))  # config_zoedepth_nk.json; index = router logit
        )
        encoder = "patch_transformer.transformer_encoder.layers."
        config = ZoeDepthConfig(
            **common,
            bin_centers_type="softplus",
            bin_configurations=bins,
            num_patch_transformer_layers=_count(state, re.escape(encoder) + r"(\d+)\."),
            patch_transformer_hidden_size=_shape(state, "patch_transformer.embedding_convPxP.weight", source)[0],
            patch_transformer_intermediate_size=_shape(state, f"{encoder}0.linear1.weight", source)[0],
            patch_transformer_num_attention_heads=4,  # PatchTransformerEncoder's default; not in the weights
        )
    else:
        stages = [_shape(state, f"attractors.{i}._net.2.weight", source)[0] for i in range(4)]
        n_bins = _shape(state, "seed_bin_regressor._net.2.weight", source)[0]
        # ZoeD_M12_K's released config keeps ZoeDepth's default max_depth of 10 m (see with_kitti_max_depth_80).
        name = "nyu" if found == "N" else "kitti"
        config = ZoeDepthConfig(
            **common,
            bin_centers_type="softplus" if found == "N" else "normed",
            bin_configurations=(BinConfiguration(name, n_bins, 1e-3, 10.0),),
            num_attractors=tuple(c if found == "N" else c // 2 for c in stages),
        )
    try:
        config.validate()
    except ConfigError as e:
        raise CheckpointError(f"{source}: the architecture read from its tensors is not supported: {e}") from None
    return config


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
    return config.replace(bin_configurations=(dataclasses.replace(bins[0], max_depth=80.0),))
