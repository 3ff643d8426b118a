"""The Depth Anything V1 metric checkpoints (`depth_anything_metric_depth_indoor.pt`, `..._outdoor.pt`): their
names, their config, and what the original runs differently from transformers' ZoeDepth on DINOv2.

These files come from LiheYoung/Depth-Anything (`metric_depth/`, Apache-2.0): ZoeDepth's own code (one metric-bins
head, attractors, log-binomial) whose MiDaS core is replaced by DINOv2 ViT-L/14 and Depth Anything's DPT head. A
file is the trainer's pickle `{"model": state_dict, ...}` keyed by the original module names: the DINOv2 of the
vendored torch.hub copy under `core.core.pretrained.` (`blocks.3.attn.qkv.weight`, `blocks.3.ls1.gamma`), the
DPT head under `core.core.depth_head.` (`projects`, `resize_layers`, `scratch.refinenet4`, `scratch.output_conv2`)
and ZoeDepth's head at the top level (`seed_bin_regressor._net.0.weight`), as `original_names` knows it.

Loading renames the keys into transformers' layout of ZoeDepth on a DINOv2 backbone (`ROWS` here, then
`SINGLE_HEAD_ROWS` of `original_names`), and `hf_names` places them: every key is renamed or listed in `DROPPED`,
and every parameter filled exactly once, or the error lists what is not.

What the original computes differently from transformers' `ZoeDepthForDepthEstimation` on a `Dinov2Backbone`, and
how the config read here reproduces it:

* Position embeddings: the vendored DINOv2 resizes them by the scale factors ((rows + 0.1) / 37, (cols + 0.1) / 37)
  instead of to the grid's size; `Dinov2Config.interpolate_offset = 0.1`.
* Neck and relative head: Depth Anything's DPTHead upsamples each fusion layer but the last to the size of the next
  map (transformers: 2x, which differs for odd patch grids, e.g. 37 columns at 518 pixels) and resizes the relative
  head's features to the input size (transformers: 2x the finest map, 16/14 of the input); ZoeDepth's head then
  predicts at the input size. `ZoeDepthConfig.depth_anything_dpt = True`.
* Backbone stages: the last four layers (`get_intermediate_layers(x, 4)`, layers 21..24 of ViT-L), each through
  the final LayerNorm (eps 1e-6, as transformers' default), without the CLS token (`use_clstoken=False`:
  `readout_type="ignore"`).
* The relative depth that joins ZoeDepth's head is the DPT head's ReLU output (conv 3x3, ReLU, conv 1x1, ReLU), at
  the input size; the 32 relative features are its hidden ReLU activations. As transformers' relative head.
* Unchanged from ZoeD_M12_N/K: n_bins 64, bin embedding 128, attractors [16, 8, 4, 1] of the inverse kind, "mean"
  aggregation, alpha 300 whatever the config's 1000 says (`modeling/metric_bins.py`), temperatures 0.0212..50,
  the constructor-default hidden widths of a single head.
* Not in the weights: the number of attention heads (DINOv2's ViTs all use 64-wide heads: 16 for ViT-L), and the
  depth range, which comes from the dataset config the original runs with: indoor (NYU) 1e-3..10 m, outdoor (KITTI)
  1e-3..80 m. No ZoeD_M12_K-like quirk: every outdoor dataset config of the original sets 80 m.
* Indoor or outdoor: the released configs train and evaluate both with softplus bins (`config_zoedepth.json`;
  the normed bins of `config_zoedepth_kitti.json` need `config_version=kitti`, which the documented commands do not
  pass), so the two files have the same keys and shapes, and softplus bins do not use the depth range: the two
  configs differ only in the recorded range and head name. The keys cannot tell them apart, so a softplus file's
  variant comes from `variant=`, or else from its file name as released (`..._indoor.pt`, `..._outdoor.pt`: the
  name holds one of the two words), and is an error otherwise. A file with normed bins (two channels per
  attractor) can only come from the KITTI config: it is "outdoor", detected from the keys.
* Preprocessing is the image processor's part, not the model's: the original resizes to a multiple of 14 (about
  392x518 indoor, keeping the aspect ratio) and normalises with the ImageNet mean and std.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from zoedepth_jax.config import BinConfiguration, Dinov2Config, ZoeDepthConfig
from zoedepth_jax.domains import DEPTH_RANGES
from zoedepth_jax.errors import CheckpointError, ConfigError
from zoedepth_jax.weights.original_names import (
    LOG_BINOMIAL_BUFFERS,
    SINGLE_HEAD_ROWS,
    compile_rows,
    rename,
    split_in_three,
)

VARIANTS = ("indoor", "outdoor")
DOMAIN_OF_VARIANT = {"indoor": "nyu", "outdoor": "kitti"}  # the dataset each was trained on: head name and range
DINOV2_HEAD_WIDTH = 64  # DINOv2 ViT-S/B/L/g: 6, 12, 16, 24 heads of 64 channels
DINOV2_LAYER_NORM_EPS = 1e-6  # the vendored DINOv2's norm_layer
DINOV2_INTERPOLATE_OFFSET = 0.1  # the vendored DINOv2's position-embedding resize
REASSEMBLE_FACTORS = (4, 2, 1, 0.5)  # resize_layers: ConvTranspose2d k4 s4, ConvTranspose2d k2 s2, Identity, conv s2
RESIZE_KERNELS = {0: 4, 1: 2, 3: 3}

_DINO = r"core\.core\.pretrained\."
_BLOCK = _DINO + r"blocks\.(?P<i>\d+)\."
_HEAD = r"core\.core\.depth_head\."
_P = r"(?P<p>weight|bias)"
_N = r"(?P<n>[1-4])"  # layer1_rn .. layer4_rn, refinenet1 .. refinenet4
_LAYER = "backbone.encoder.layer.{i}."

# (pattern, transformers name(s), transform), as `original_names.ROWS`.
ROWS: tuple[tuple[str, str | tuple[str, ...], object], ...] = (
    # DINOv2 ViT (the vendored torch.hub copy) -> transformers' Dinov2Backbone
    (_DINO + r"cls_token", "backbone.embeddings.cls_token", None),
    (_DINO + r"pos_embed", "backbone.embeddings.position_embeddings", None),
    (_DINO + r"patch_embed\.proj\." + _P, "backbone.embeddings.patch_embeddings.projection.{p}", None),
    (_BLOCK + r"(?P<m>norm1|norm2|mlp\.fc1|mlp\.fc2)\." + _P, _LAYER + "{m}.{p}", None),
    (
        _BLOCK + r"attn\.qkv\." + _P,
        tuple(_LAYER + f"attention.attention.{n}.{{p}}" for n in ("query", "key", "value")),
        split_in_three,
    ),
    (_BLOCK + r"attn\.proj\." + _P, _LAYER + "attention.output.dense.{p}", None),
    (_BLOCK + r"ls(?P<g>[12])\.gamma", _LAYER + "layer_scale{g}.lambda1", None),
    (_DINO + r"norm\." + _P, "backbone.layernorm.{p}", None),
    # Depth Anything's DPTHead -> transformers' ZoeDepth neck and relative head
    (_HEAD + r"projects\.(?P<k>[0-3])\." + _P, "neck.reassemble_stage.layers.{k}.projection.{p}", None),
    (_HEAD + r"resize_layers\.(?P<k>[013])\." + _P, "neck.reassemble_stage.layers.{k}.resize.{p}", None),
    (_HEAD + rf"scratch\.layer{_N}_rn\.weight", "neck.convs.{stage}.weight", None),
    (_HEAD + rf"scratch\.refinenet{_N}\.out_conv\.{_P}", "neck.fusion_stage.layers.{fusion}.projection.{p}", None),
    (
        _HEAD + rf"scratch\.refinenet{_N}\.resConfUnit(?P<u>[12])\.conv(?P<c>[12])\.{_P}",
        "neck.fusion_stage.layers.{fusion}.residual_layer{u}.convolution{c}.{p}",
        None,
    ),
    (_HEAD + r"scratch\.output_conv1\." + _P, "relative_head.conv1.{p}", None),
    (_HEAD + r"scratch\.output_conv2\.0\." + _P, "relative_head.conv2.{p}", None),
    (_HEAD + r"scratch\.output_conv2\.2\." + _P, "relative_head.conv3.{p}", None),
    *SINGLE_HEAD_ROWS,
)

# Keys of the released files that carry nothing the forward pass reads, with the reason.
DROPPED: tuple[tuple[str, str], ...] = (
    (_DINO + r"mask_token", "DINOv2's token for masked pretraining, never used at inference"),
    LOG_BINOMIAL_BUFFERS,
)

_ROWS = compile_rows(ROWS)
_DROPPED = tuple(re.compile(pattern) for pattern, _ in DROPPED)


def is_depth_anything_v1(state: Mapping[str, object]) -> bool:
    """Whether an original-format state dict is Depth Anything V1's metric ZoeDepth (a DPT head under
    `core.core.depth_head.`) rather than isl-org's ZoeD_M12_* (MiDaS under `core.core.scratch.`)."""
    return any(key.startswith("core.core.depth_head.") for key in state)


def to_hf_state_dict(state: Mapping[str, np.ndarray], source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Renames (and splits) a Depth Anything V1 metric state dict into the transformers layout of ZoeDepth on
    DINOv2; drops the keys in `DROPPED`. Every key that matches no row is listed in one CheckpointError."""
    return rename(state, _ROWS, _DROPPED, source, "the Depth Anything V1 metric models")


def normalize_variant(variant: str) -> str:
    name = str(variant).lower()
    if name not in VARIANTS:
        raise ConfigError(
            f"variant = {variant!r}: a Depth Anything V1 metric checkpoint is 'indoor' "
            "(depth_anything_metric_depth_indoor.pt) or 'outdoor' (depth_anything_metric_depth_outdoor.pt)"
        )
    return name


def variant_in_file_name(path: str) -> str | None:
    """ "indoor" or "outdoor" when the file name (not its folders) holds exactly one of the two words, as the
    released `depth_anything_metric_depth_indoor.pt` and `..._outdoor.pt` do; otherwise None."""
    name = Path(path).name.lower()
    found = [variant for variant in VARIANTS if re.search(rf"(?<![a-z]){variant}(?![a-z])", name)]
    return found[0] if len(found) == 1 else None


def depth_anything_v1_config(
    state: Mapping[str, np.ndarray], variant: str | None = None, source: str = "checkpoint"
) -> ZoeDepthConfig:
    """The config of a Depth Anything V1 metric checkpoint: sizes from its tensors, the rest from the original code
    and its released configs (see the module docstring). `variant` ("indoor" or "outdoor") is needed for a file
    with softplus bins, the released layout of both files, whose keys cannot tell: when None, the file name in
    `source` must say it (`variant_in_file_name`). A file with normed bins is "outdoor", and another variant is an
    error."""
    last_attractor = _shape(state, "attractors.3._net.2.weight", source)[0]
    if last_attractor not in (1, 2):
        raise CheckpointError(
            f"{source}: attractors.3._net.2.weight has {last_attractor} output channels; ZoeDepth's last attractor "
            "stage has one attractor (1 channel with softplus bins, 2 with normed bins)"
        )
    normed = last_attractor == 2
    if variant is None and not normed:
        variant = variant_in_file_name(source)
    if variant is None and not normed:
        raise ConfigError(
            f"{source}: the indoor and outdoor Depth Anything V1 metric checkpoints have the same keys and shapes "
            "(softplus bins) and this file's name says neither, so the file cannot tell which it is: pass "
            "variant='indoor' or variant='outdoor' (it sets the depth range recorded in the config: 10 m or 80 m)"
        )
    variant = "outdoor" if variant is None else normalize_variant(variant)
    if normed and variant != "outdoor":
        raise CheckpointError(
            f"{source} has normed bins (two channels per attractor), which only the outdoor (KITTI) config of the "
            f"original builds, but variant={variant!r} was asked for"
        )
    domain = DOMAIN_OF_VARIANT[variant]
    head = "core.core.depth_head."
    fusion = _shape(state, f"{head}scratch.layer1_rn.weight", source)[0]
    for k, kernel in RESIZE_KERNELS.items():
        if _shape(state, f"{head}resize_layers.{k}.weight", source)[-1] != kernel:
            raise CheckpointError(
                f"{source}: {head}resize_layers.{k} is not the {kernel}x{kernel} kernel of Depth Anything's DPT head"
            )
    config = ZoeDepthConfig(
        backbone_config=_backbone_config(state, source),
        readout_type="ignore",
        reassemble_factors=REASSEMBLE_FACTORS,
        neck_hidden_sizes=tuple(_shape(state, f"{head}projects.{k}.weight", source)[0] for k in range(4)),
        fusion_hidden_size=fusion,
        bottleneck_features=fusion,
        num_relative_features=_shape(state, f"{head}scratch.output_conv2.0.weight", source)[0],
        bin_embedding_dim=_shape(state, "seed_projector._net.2.weight", source)[0],
        num_attractors=tuple(
            _shape(state, f"attractors.{i}._net.2.weight", source)[0] // last_attractor for i in range(4)
        ),
        attractor_alpha=1000,  # config_zoedepth.json's value (recorded only: see config.attractor_alpha)
        attractor_gamma=2,
        attractor_kind="mean",
        min_temp=0.0212,
        max_temp=50.0,
        bin_centers_type="normed" if normed else "softplus",
        bin_configurations=(
            BinConfiguration(
                domain, _shape(state, "seed_bin_regressor._net.2.weight", source)[0], *DEPTH_RANGES[domain]
            ),
        ),
        depth_anything_dpt=True,
    )
    try:
        config.validate()
    except ConfigError as e:
        raise CheckpointError(f"{source}: the architecture read from its tensors is not supported: {e}") from None
    return config


def _shape(state: Mapping[str, np.ndarray], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source} lacks {key}, which every Depth Anything V1 metric checkpoint holds")
    return tuple(state[key].shape)


def _backbone_config(state: Mapping[str, np.ndarray], source: str) -> Dinov2Config:
    hidden = _shape(state, "core.core.pretrained.cls_token", source)[-1]
    patch = _shape(state, "core.core.pretrained.patch_embed.proj.weight", source)[-1]
    positions = _shape(state, "core.core.pretrained.pos_embed", source)[1] - 1
    side = math.isqrt(positions)
    if side * side != positions:
        raise CheckpointError(f"{source}: position embeddings of {positions} patches fit no square pretraining grid")
    layers = len({m[1] for key in state if (m := re.match(_BLOCK, key))})
    if layers < 4 or hidden % DINOV2_HEAD_WIDTH:
        raise CheckpointError(
            f"{source}: a DINOv2 of {layers} layers, {hidden} wide: the DPT head reads its last four layers, and "
            f"its width must be a multiple of DINOv2's {DINOV2_HEAD_WIDTH}-wide attention heads"
        )
    return Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // DINOV2_HEAD_WIDTH,
        mlp_ratio=_shape(state, "core.core.pretrained.blocks.0.mlp.fc1.weight", source)[0] / hidden,
        patch_size=patch,
        image_size=side * patch,
        layer_norm_eps=DINOV2_LAYER_NORM_EPS,
        qkv_bias=True,
        out_indices=tuple(range(layers - 3, layers + 1)),  # get_intermediate_layers(x, 4): the last four
        apply_layernorm=True,
        reshape_hidden_states=False,
        interpolate_offset=DINOV2_INTERPOLATE_OFFSET,
    )
