"""The original isl-org ZoeDepth checkpoints (`ZoeD_M12_N.pt`, `ZoeD_M12_K.pt`, `ZoeD_M12_NK.pt`): their names.

A released file is a pickle `{"model": state_dict, ...}` keyed by the original module names: timm's BEiT inside
MiDaS's DPT (`core.core.pretrained.model.blocks.3.attn.qkv.weight`), MiDaS's `scratch` (`refinenet4`, ...) and
ZoeDepth's heads (`seed_bin_regressor._net.0.weight`, `patch_transformer.transformer_encoder.layers.0...`).
Reading the file is `readers.read_original_checkpoint`; its config is `original_config`; this module only renames.

Loading goes original names -> transformers names (`ROWS` below) -> Flax tree (`hf_names`, the same table that
reads the hub's `model.safetensors`). Renaming into the transformers layout rather than straight into Flax
paths keeps one table that knows the Flax tree (transposes, transposed convolutions, domain names); the row for
row correspondence with transformers' own `convert_zoedepth_to_hf.py` can be checked by eye; and both steps
account for every key: each original key matches exactly one row of `ROWS` or `DROPPED` (anything else is a
CheckpointError listing the keys), and `hf_names` then requires every parameter filled exactly once.

The Depth Anything V1 metric files run the same metric head on another core: `depth_anything_v1` renames them
with `rename`, its own rows and `SINGLE_HEAD_ROWS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from zoedepth_jax.errors import CheckpointError
from zoedepth_jax.weights.trees import problems_message

# Regex pieces: named groups become template fields (see `_fields` for the derived ones).
_BEIT = r"core\.core\.pretrained\.model\."
BLOCK_KEY = _BEIT + r"blocks\.(?P<i>\d+)\."  # a timm BEiT block; `i` is its index
_MIDAS = r"core\.core\."
_P = r"(?P<p>weight|bias)"
_N = r"(?P<n>[1-4])"  # MiDaS numbers its four stages from 1
_NET = r"_net\.(?P<s>[02])\." + _P  # a `_net` Sequential: 1x1 convs at 0 and 2, activations between
_DOMAIN = r"(?P<d>[a-z]+)"
_ENCODER = r"patch_transformer\.transformer_encoder\.layers\.(?P<i>\d+)\."
_LAYER = "backbone.encoder.layer.{i}."
_QKV = ("query", "key", "value")


def split_in_three(w: np.ndarray) -> list[np.ndarray]:
    """A fused [3 * dim, ...] projection (timm `qkv`, torch MultiheadAttention `in_proj`) -> query, key, value."""
    if w.ndim < 1 or w.shape[0] % 3:
        raise ValueError("not three equal parts")
    return np.split(w, 3, axis=0)


# ZoeDepth's metric head with one domain (ZoeD_M12_N, ZoeD_M12_K, and the Depth Anything V1 metric files, which
# run the same ZoeDepth code on another core: `depth_anything_v1`).
SINGLE_HEAD_ROWS: tuple[tuple[str, str, None], ...] = (
    (r"conv2\." + _P, "metric_head.conv2.{p}", None),
    (r"seed_bin_regressor\." + _NET, "metric_head.seed_bin_regressor.conv{seq}.{p}", None),
    (r"seed_projector\." + _NET, "metric_head.seed_projector.conv{seq}.{p}", None),
    (r"projectors\.(?P<i>\d+)\." + _NET, "metric_head.projectors.{i}.conv{seq}.{p}", None),
    (r"attractors\.(?P<i>\d+)\." + _NET, "metric_head.attractors.{i}.conv{seq}.{p}", None),
    (r"conditional_log_binomial\.mlp\.(?P<s>[02])\." + _P, "metric_head.conditional_log_binomial.mlp.{s}.{p}", None),
)
# The log-binomial's constant buffers (a single head's, or each domain's of NK).
LOG_BINOMIAL_BUFFERS = (
    rf"conditional_log_binomial\.(?:{_DOMAIN}\.)?log_binomial_transform\.(k_idx|K_minus_1)",
    "buffers holding the constants 0..K-1 and K-1",
)

# (pattern, transformers name(s), transform): the first row whose pattern matches the whole key wins. A tuple of
# names takes the pieces of `split_in_three`; otherwise the tensor is passed on unchanged.
ROWS: tuple[tuple[str, str | tuple[str, ...], object], ...] = (
    # timm BEiT-L/16 (MiDaS `pretrained.model`)
    (_BEIT + r"cls_token", "backbone.embeddings.cls_token", None),
    (_BEIT + r"patch_embed\.proj\." + _P, "backbone.embeddings.patch_embeddings.projection.{p}", None),
    (BLOCK_KEY + r"norm1\." + _P, _LAYER + "layernorm_before.{p}", None),
    (BLOCK_KEY + r"norm2\." + _P, _LAYER + "layernorm_after.{p}", None),
    (BLOCK_KEY + r"gamma_(?P<g>[12])", _LAYER + "lambda_{g}", None),
    (
        BLOCK_KEY + r"attn\.qkv\.weight",
        tuple(_LAYER + f"attention.attention.{n}.weight" for n in _QKV),
        split_in_three,
    ),
    # timm's key bias is a constant zero buffer that is not saved; transformers' key projection has no bias.
    (BLOCK_KEY + r"attn\.q_bias", _LAYER + "attention.attention.query.bias", None),
    (BLOCK_KEY + r"attn\.v_bias", _LAYER + "attention.attention.value.bias", None),
    (
        BLOCK_KEY + r"attn\.relative_position_bias_table",
        _LAYER + "attention.attention.relative_position_bias.relative_position_bias_table",
        None,
    ),
    (BLOCK_KEY + r"attn\.proj\." + _P, _LAYER + "attention.output.dense.{p}", None),
    (BLOCK_KEY + r"mlp\.fc1\." + _P, _LAYER + "intermediate.dense.{p}", None),
    (BLOCK_KEY + r"mlp\.fc2\." + _P, _LAYER + "output.dense.{p}", None),
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
    *SINGLE_HEAD_ROWS,
    # ZoeD_M12_NK's heads: ModuleDicts keyed by domain
    (rf"seed_bin_regressors\.{_DOMAIN}\.{_NET}", "metric_head.seed_bin_regressors.{d}.conv{seq}.{p}", None),
    (rf"attractors\.{_DOMAIN}\.(?P<i>\d+)\.{_NET}", "metric_head.attractors.{d}.{i}.conv{seq}.{p}", None),
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
        split_in_three,
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
    (BLOCK_KEY + r"attn\.relative_position_index", "buffer of constants, recomputed from the input's patch grid"),
    # Not in the released files (timm 0.6 does not save it); a key bias adds q.b to a whole row of scores,
    # which the softmax cancels, so it would be dropped whatever its value.
    (BLOCK_KEY + r"attn\.k_bias", "timm's zero key-bias buffer"),
    (_BEIT + r"(fc_norm|head)\." + _P, "timm's ImageNet classifier (pooling norm and head), never run by MiDaS"),
    LOG_BINOMIAL_BUFFERS,
)


def compile_rows(rows) -> tuple:
    return tuple((re.compile(pattern), targets, transform) for pattern, targets, transform in rows)


_ROWS = compile_rows(ROWS)
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


def check_layout(state: Mapping[str, object], source: str) -> None:
    """Raises a CheckpointError unless `state` is keyed by the original ZoeDepth names (its core under
    `core.core.`), with a hint when it is in transformers' layout instead."""
    if any(key.startswith("core.core.") for key in state):
        return
    hint = (
        " It is in transformers' layout: save it as pytorch_model.bin in a folder beside its config.json."
        if any(name.startswith(("backbone.", "neck.")) for name in state)
        else ""
    )
    raise CheckpointError(
        f"{source} is not an original ZoeDepth checkpoint: none of its {len(state)} keys starts with "
        f"'core.core.' (first keys: {list(state)[:5]}).{hint}"
    )


def to_hf_state_dict(state: Mapping[str, np.ndarray], source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Renames (and splits) an original state dict into the transformers layout; drops the keys in `DROPPED`.

    A key that matches no row, a fused tensor that does not split in three, or two keys that land on the same
    name is a CheckpointError listing every such key.
    """
    return rename(state, _ROWS, _DROPPED, source, "the original ZoeDepth models")


def rename(state: Mapping[str, np.ndarray], rows, dropped, source: str, family: str) -> dict[str, np.ndarray]:
    """`state` renamed by compiled `rows` (see `ROWS`), without the keys that match a pattern of `dropped`;
    `family` names the models whose keys the rows cover, in the error that lists the keys no row matches."""
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    problems: dict[str, list[str]] = {"unexpected keys": [], "mis-shaped keys": []}
    for key, tensor in state.items():
        if any(pattern.fullmatch(key) for pattern in dropped):
            continue
        row = next(((m, targets, fn) for pattern, targets, fn in rows if (m := pattern.fullmatch(key))), None)
        if row is None:
            problems["unexpected keys"].append(f"{key} (not a key of {family})")
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
