"""The Hugging Face PyTorch state dict -> Flax parameter tree mapping, as a table read top to bottom.

One table serves every model: ZoeDepth (BEiT backbone), DINOv2 (`Dinov2Model`) and the models built on it.
A key's Flax path is the key itself with `.` as `/`, a list index joined to its list (`layer.3` -> `layer_3`),
and a domain's ModuleDict entry joined to its dict (`attractors.kitti.0` -> `attractors_kitti_0`). What happens
to the tensor is the first row of `transforms` whose pattern matches the key. Keys in `IGNORED` are buffers that
hold no learned value. Anything else, any target left unfilled, or any shape that disagrees is an error that
lists every offending name: nothing loads partially.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from zoedepth_jax.config import Dinov2Config, ZoeDepthConfig
from zoedepth_jax.errors import CheckpointError
from zoedepth_jax.weights.trees import leaf_shapes, problems_message, unflatten


def _linear(w):  # torch [out, in] -> Flax kernel [in, out]
    return "kernel", w.T


def _conv(w):  # torch [out, in, kh, kw] -> Flax HWIO
    return "kernel", w.transpose(2, 3, 1, 0)


def _conv_transpose(w):  # torch ConvTranspose2d [in, out, k, k] -> [k, k, in, out] (see UpsampleConvTranspose)
    return "kernel", w.transpose(2, 3, 0, 1)


def _norm_scale(w):
    return "scale", w


def _same_name(w):
    return None, w


def transforms(upsampling: Sequence[int] = ()) -> list[tuple[str, object]]:
    """(pattern, transform) rows; the first match wins. `upsampling`: the reassemble layers whose `resize` is a
    transposed convolution (the others' is a convolution), from the config's reassemble factors."""
    upsampling_layers = "|".join(str(i) for i in upsampling) or "none"
    return [
        (
            r"(^|\.)(cls_token|lambda_1|lambda_2|lambda1|relative_position_bias_table|position_embeddings)$",
            _same_name,
        ),
        (r"(^|\.)(layernorm_before|layernorm_after|norm1|norm2|layernorm)\.weight$", _norm_scale),
        (rf"^neck\.reassemble_stage\.layers\.({upsampling_layers})\.resize\.weight$", _conv_transpose),
        (r"\.(query|key|value|out_proj|dense|linear1|linear2|fc1|fc2|readout_projects\.\d+\.0)\.weight$", _linear),
        (
            r"\.(projection|resize|convs\.\d+|convolution1|convolution2|conv\d|embedding_convPxP|mlp\.[02])\.weight$",
            _conv,
        ),
        (r"\.bias$", _same_name),
    ]


# Source keys that hold nothing the forward pass reads.
IGNORED = (
    r"\.relative_position_index$",  # buffer, recomputed from the input's patch grid
    r"\.log_binomial_transform\.(k_idx|k_minus_1)$",  # buffers holding the constants 0..K-1 and K-1
    # The first fusion layer never receives a residual, so transformers' `residual_layer1` there is dead weight.
    r"^neck\.fusion_stage\.layers\.0\.residual_layer1\.",
    r"(^|\.)embeddings\.mask_token$",  # DINOv2's token for masked pretraining
)


def flax_path(key: str, domains: Sequence[str] = ()) -> tuple[str, ...]:
    """The module path (without the leaf name) for a PyTorch parameter name; `domains`: the metric heads' names
    of a multi-domain ZoeDepth, whose ModuleDict entries join their dict's name."""
    module = key.rsplit(".", 1)[0] if "." in key else ""
    if domains:
        names = "|".join(re.escape(name) for name in domains)
        module = re.sub(rf"\b(seed_bin_regressors|conditional_log_binomial|attractors)\.({names})\b", r"\1_\2", module)
    module = re.sub(r"(?<=[A-Za-z_])\.(\d+)\b", r"_\1", module)
    return tuple(module.split(".")) if module else ()


def _layout(config) -> tuple[list[int], list[str]]:
    """(reassemble layers that upsample, metric-head domain names) of a model config."""
    if isinstance(config, Dinov2Config):  # a bare backbone
        return [], []
    upsampling = [i for i, factor in enumerate(config.reassemble_factors) if factor > 1]
    multi = isinstance(config, ZoeDepthConfig) and config.is_multi_domain
    return upsampling, [b.name for b in config.bin_configurations] if multi else []


def convert_hf_state_dict(
    state_dict: Mapping[str, np.ndarray], config, target_shapes: Mapping, source: str = "checkpoint"
) -> dict:
    """Maps a transformers state dict onto a Flax params tree: `ZoeDepthForDepthEstimation` (a `ZoeDepthConfig`),
    `DepthAnythingForDepthEstimation` (a `DepthAnythingConfig`) or `Dinov2Model` (a `Dinov2Config`).

    `target_shapes` is the params tree of the Flax model (arrays or `jax.ShapeDtypeStruct`s). Every source key is
    either converted onto exactly one target leaf or is a listed buffer; every target leaf must be filled.
    """
    upsampling, domains = _layout(config)
    rows = transforms(upsampling)
    targets = leaf_shapes(target_shapes)
    filled: dict[tuple[str, ...], np.ndarray] = {}
    problems: dict[str, list[str]] = {"unexpected keys": [], "mis-shaped keys": [], "missing parameters": []}
    for key, tensor in state_dict.items():
        if any(re.search(pattern, key) for pattern in IGNORED):
            continue
        transform = next((fn for pattern, fn in rows if re.search(pattern, key)), None)
        if transform is None:
            problems["unexpected keys"].append(f"{key} (no conversion rule)")
            continue
        try:
            leaf, value = transform(np.asarray(tensor))
        except ValueError:  # e.g. a 1-D tensor where a convolution kernel belongs
            problems["mis-shaped keys"].append(
                f"{key}: {tuple(tensor.shape)} cannot be {transform.__name__[1:]} weights"
            )
            continue
        path = flax_path(key, domains) + (leaf or key.rsplit(".", 1)[-1],)
        name = "/".join(path)
        if name not in targets:
            problems["unexpected keys"].append(f"{key} (would be {name})")
        elif tuple(value.shape) != tuple(targets[name]):
            problems["mis-shaped keys"].append(
                f"{key}: {tuple(tensor.shape)} -> {tuple(value.shape)}, model expects {tuple(targets[name])} at {name}"
            )
        elif path in filled:
            problems["unexpected keys"].append(f"{key} (a second source for {name})")
        else:
            filled[path] = value
    problems["missing parameters"] = sorted(set(targets) - {"/".join(p) for p in filled})
    if any(problems.values()):
        raise CheckpointError(problems_message(source, problems))
    return unflatten(filled)
