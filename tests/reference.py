"""Reference checkpoints for the parity tests: transformers models with re-drawn weights, saved with
`save_pretrained` (the same files a user downloads), and the transformers outputs with intermediates.

Random initialisation gives near-constant depth maps (layer scale 0.1 and zero-initialised tables make the
backbone almost an identity), which would agree with a wrong implementation for the wrong reasons. `redraw`
replaces every parameter with values at a scale that keeps activations of order one, so each layer matters.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import numpy as np
import torch
from transformers import BeitConfig as HFBeitConfig
from transformers import ZoeDepthConfig as HFZoeDepthConfig
from transformers import ZoeDepthForDepthEstimation as HFZoeDepth

from zoedepth_jax.config import TINY_BACKBONE as PRESET_BACKBONE
from zoedepth_jax.config import TINY_NECK_AND_HEAD as PRESET_HEAD
from zoedepth_jax.domains import DEPTH_RANGES

NYU = {"name": "nyu", "n_bins": 64, "min_depth": DEPTH_RANGES["nyu"][0], "max_depth": DEPTH_RANGES["nyu"][1]}
KITTI = {"name": "kitti", "n_bins": 64, "min_depth": DEPTH_RANGES["kitti"][0], "max_depth": DEPTH_RANGES["kitti"][1]}

# zoedepth_jax's tiny preset, in transformers' terms (lists, out_features).
TINY_BACKBONE = {
    **{name: value for name, value in PRESET_BACKBONE.items() if name != "out_indices"},
    "layer_scale_init_value": 0.1,
    "out_features": [f"stage{i}" for i in PRESET_BACKBONE["out_indices"]],
}
TINY_HEAD = {name: list(v) if isinstance(v, tuple) else v for name, v in PRESET_HEAD.items()}
# MiDaS v3.1 BEiT-L/16 at 384 and the released neck: the architecture of the Intel checkpoints.
FULL_BACKBONE = dict(
    image_size=384,
    patch_size=16,
    num_hidden_layers=24,
    hidden_size=1024,
    intermediate_size=4096,
    num_attention_heads=16,
    layer_scale_init_value=0.1,
    out_features=["stage6", "stage12", "stage18", "stage24"],
)
FULL_HEAD = dict(neck_hidden_sizes=[256, 512, 1024, 1024])
ROUTER = dict(
    num_patch_transformer_layers=4,
    patch_transformer_hidden_size=128,
    patch_transformer_intermediate_size=1024,
    patch_transformer_num_attention_heads=4,
)
VARIANTS = {
    "nyu": dict(bin_centers_type="softplus", bin_configurations=[{k: v for k, v in NYU.items() if k != "name"}]),
    "kitti": dict(bin_centers_type="normed", bin_configurations=[{k: v for k, v in KITTI.items() if k != "name"}]),
    "nyu-kitti": dict(bin_centers_type="softplus", bin_configurations=[NYU, KITTI], **ROUTER),
}


def hf_config(variant: str, full: bool = False) -> HFZoeDepthConfig:
    backbone = HFBeitConfig(
        **(FULL_BACKBONE if full else TINY_BACKBONE), use_relative_position_bias=True, reshape_hidden_states=False
    )
    return HFZoeDepthConfig(backbone_config=backbone, **(FULL_HEAD if full else TINY_HEAD), **VARIANTS[variant])


@torch.no_grad()
def redraw(model: HFZoeDepth, seed: int) -> None:
    """Re-draws every parameter: weights with std ~1.3/sqrt(fan_in) (order-one activations), norm scales
    around one, layer scales around 0.5, biases of order 0.3, relative-position tables and CLS of order one."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=generator) * std + mean

    fan_in = {}
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.ConvTranspose2d):  # weight [in, out, k, k]: each output sees `in` taps
            fan_in[f"{module_name}.weight"] = module.in_channels
        elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            fan_in[f"{module_name}.weight"] = math.prod(module.weight.shape[1:])
    for name, p in model.named_parameters():
        if name in fan_in:
            p.copy_(normal(p.shape, 1.3 / math.sqrt(fan_in[name])))
        elif name.endswith(("relative_position_bias_table", "cls_token", "position_embeddings", "mask_token")):
            p.copy_(normal(p.shape, 1.0))
        elif "lambda_" in name or name.endswith("lambda1"):
            p.copy_(normal(p.shape, 0.2, mean=0.5))
        elif "norm" in name and name.endswith("weight"):
            p.copy_(normal(p.shape, 0.2, mean=1.0))
        elif name.endswith("bias"):
            p.copy_(normal(p.shape, 0.3))
        else:
            raise AssertionError(f"no re-draw rule for {name}")
    # The log-binomial divides its logits by a temperature in [min_temp, max_temp]; random weights put many
    # pixels at min_temp (0.02), where fp32 rounding is amplified ~50x and transformers' own fp32 output is
    # ~2e-4 away from a float64 run. Damping the temperature rows keeps temperatures mid-range (a reference
    # whose rounding noise is below the tolerance) while the probability rows keep depth varied.
    for name, p in model.named_parameters():
        if "conditional_log_binomial" in name and ".mlp.2." in name:
            p[2:] *= 0.1


@torch.no_grad()
def steer_router(model: HFZoeDepth, logit_offset: float) -> None:
    """Adds `logit_offset` to the KITTI logit (and removes it from NYU's): large values force a head."""
    bias = model.metric_head.mlp_classifier.linear2.bias
    bias += torch.tensor([-logit_offset / 2, logit_offset / 2])


def build(variant: str, folder: Path, seed: int = 0, full: bool = False, logit_offset: float = 0.0) -> HFZoeDepth:
    """Builds, re-draws, optionally steers and saves a transformers model; returns it in eval mode."""
    torch.manual_seed(seed)
    model = HFZoeDepth(hf_config(variant, full)).eval()
    redraw(model, seed)
    if logit_offset:
        steer_router(model, logit_offset)
    model.save_pretrained(folder)
    return model


def test_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """NCHW float32 inputs in the processor's range [-1, 1]: smooth structure plus noise, different per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    images = []
    for _ in range(batch):
        a, b, c = rng.uniform(1, 4, size=3)
        base = np.stack([np.sin(a * xx + b * yy), np.cos(b * xx * yy * c), np.tanh(c * (xx - yy))])
        images.append(np.clip(0.7 * base + 0.3 * rng.standard_normal((3, height, width)), -1, 1))
    return np.stack(images).astype(np.float32)


@torch.no_grad()
def run_reference(model: HFZoeDepth, images_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """transformers outputs and intermediates, keyed by the names zoedepth-jax sows (maps in NHWC)."""
    captured: dict[str, object] = {}
    hooks = [
        model.neck.register_forward_hook(lambda m, i, o: captured.__setitem__("neck", o)),
        model.relative_head.register_forward_hook(lambda m, i, o: captured.__setitem__("relative", o)),
    ]
    head = model.metric_head
    domains = [c.get("name", "metric") for c in model.config.bin_configurations]
    if len(domains) > 1:
        seeds = {d: head.seed_bin_regressors[d] for d in domains}
        lasts = {d: head.attractors[d][-1] for d in domains}
    else:
        seeds, lasts = {domains[0]: head.seed_bin_regressor}, {domains[0]: head.attractors[-1]}
    for d in domains:
        hooks.append(seeds[d].register_forward_hook(lambda m, i, o, d=d: captured.__setitem__(f"seed_{d}", o[1])))
        hooks.append(lasts[d].register_forward_hook(lambda m, i, o, d=d: captured.__setitem__(f"bins_{d}", o[1])))
    try:
        out = model(torch.from_numpy(images_nchw), output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()

    def nhwc(t):
        return t.permute(0, 2, 3, 1).numpy()

    fused, bottleneck = captured["neck"]
    result = {
        "predicted_depth": out.predicted_depth.numpy(),
        "neck_bottleneck": nhwc(bottleneck),
        "relative_depth": captured["relative"][0].numpy(),
    }
    if out.domain_logits is not None:
        result["domain_logits"] = out.domain_logits.numpy()
    for i, f in enumerate(fused):
        result[f"neck_fusion_{i}"] = nhwc(f)
    for stage in model.config.backbone_config.out_indices:
        result[f"backbone_stage{stage}"] = out.hidden_states[stage].numpy()
    # The head transformers ran computes only the chosen domain's bins.
    for d in domains:
        if f"seed_{d}" in captured:
            result[f"seed_bin_centers_{d}"] = nhwc(captured[f"seed_{d}"])
            result[f"bin_centers_{d}"] = nhwc(captured[f"bins_{d}"])
    return result


@torch.no_grad()
def run_reference_depth_std(model: HFZoeDepth, images_nchw: np.ndarray) -> np.ndarray:
    """The standard deviation of depth under transformers' final bin distribution, from its internals: the
    log-binomial probabilities [B, K, H, W] of the head that ran (a hook on its output) and the last attractor
    stage's bin centres, resized to the probabilities' size as transformers' head resizes them. [B, H, W]."""
    head = model.metric_head
    domains = [c.get("name", "metric") for c in model.config.bin_configurations]
    if len(domains) > 1:
        pairs = {d: (head.conditional_log_binomial[d], head.attractors[d][-1]) for d in domains}
    else:
        pairs = {domains[0]: (head.conditional_log_binomial, head.attractors[-1])}
    captured: dict[str, object] = {}
    hooks = []
    for d, (log_binomial, last_attractor) in pairs.items():
        hooks.append(log_binomial.register_forward_hook(lambda m, i, o, d=d: captured.__setitem__(f"p_{d}", o)))
        hooks.append(last_attractor.register_forward_hook(lambda m, i, o, d=d: captured.__setitem__(f"c_{d}", o[1])))
    try:
        model(torch.from_numpy(images_nchw))
    finally:
        for h in hooks:
            h.remove()
    (ran,) = [d for d in domains if f"p_{d}" in captured]
    probabilities = captured[f"p_{ran}"]
    centers = torch.nn.functional.interpolate(
        captured[f"c_{ran}"], probabilities.shape[-2:], mode="bilinear", align_corners=True
    )
    mean = torch.sum(probabilities * centers, dim=1, keepdim=True)
    return torch.sqrt(torch.sum(probabilities * (centers - mean) ** 2, dim=1)).numpy()


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB `[H, W, 3]` image with the structure of `test_images` (smooth shapes plus noise)."""
    image = test_images(1, height, width, seed=seed)[0].transpose(1, 2, 0)
    return np.rint((image + 1) * 127.5).astype(np.uint8)


# The values of the Intel checkpoints' preprocessor_config.json. transformers 5.x's class default
# ensure_multiple_of = 1/32 is a bug (sizes such as 384x61), so the reference is always built with these.
RELEASED_PROCESSOR = dict(
    do_pad=True,
    do_resize=True,
    size={"height": 384, "width": 512},
    keep_aspect_ratio=True,
    ensure_multiple_of=32,
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
)


def hf_processor(**overrides):
    """transformers' PIL-backed ZoeDepth processor (the one it uses without torchvision), released settings."""
    from transformers.models.zoedepth.image_processing_pil_zoedepth import ZoeDepthImageProcessorPil

    return ZoeDepthImageProcessorPil(**{**RELEASED_PROCESSOR, **overrides})


class TorchvisionResizeStandIn:
    """torchvision's tensor `resize(..., BICUBIC, antialias=False)` is `interpolate(mode="bicubic",
    align_corners=False)`; transformers' post-processing calls it as `tvF`, and torchvision is not installed."""

    class InterpolationMode:
        BICUBIC = "bicubic"

    @staticmethod
    def resize(image, size, interpolation, antialias):
        assert interpolation == "bicubic" and antialias is False
        return torch.nn.functional.interpolate(image[None], size=list(size), mode="bicubic", align_corners=False)[0]


def hf_post_process(processor, outputs, **kwargs) -> list[np.ndarray]:
    """transformers' own `post_process_depth_estimation`, run with the torchvision stand-in; depth maps as numpy."""
    from transformers.models.zoedepth import image_processing_pil_zoedepth as module

    saved = getattr(module, "tvF", None)
    module.tvF = TorchvisionResizeStandIn
    try:
        results = processor.post_process_depth_estimation(outputs, **kwargs)
    finally:
        if saved is None:
            del module.tvF
        else:
            module.tvF = saved
    return [r["predicted_depth"].numpy() for r in results]


@torch.no_grad()
def hf_depth_pipeline(model: HFZoeDepth, image: np.ndarray, flip: bool) -> np.ndarray:
    """Depth in meters at the source size, as the transformers docs compute it: processor, model (and the mirrored
    input when `flip`), post-processing with the source size."""
    processor = hf_processor()
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    outputs = model(pixel_values=pixel_values)
    flipped = model(pixel_values=torch.flip(pixel_values, dims=[3])) if flip else None
    return hf_post_process(processor, outputs, source_sizes=[image.shape[:2]], outputs_flipped=flipped)[0]


# ---------------------------------------------------------------------------------------------------------------
# Original isl-org checkpoints (tests/test_original_checkpoints.py)
#
# `original_state_dict` is the documented transformers -> original name map, written out independently of
# zoedepth_jax.weights.original_names (which maps the other way): the inverse of the renames in transformers'
# convert_zoedepth_to_hf.py, with the original module tree as the arbiter (tests/data/original_layouts.json).
#
#   B = core.core.pretrained.model, P = core.core.pretrained, S = core.core.scratch
#   transformers (as saved)                                  original (ZoeD_M12_*.pt, under "model")
#   backbone.embeddings.cls_token                            B.cls_token
#   backbone.embeddings.patch_embeddings.projection.*        B.patch_embed.proj.*
#   backbone.encoder.layer.i.layernorm_before/_after.*       B.blocks.i.norm1.* / norm2.*
#   backbone.encoder.layer.i.lambda_1 / lambda_2             B.blocks.i.gamma_1 / gamma_2
#   ...layer.i.attention.attention.{query,key,value}.weight  B.blocks.i.attn.qkv.weight (stacked in that order)
#   ...layer.i.attention.attention.query.bias / value.bias   B.blocks.i.attn.q_bias / v_bias (no key bias)
#   ...relative_position_bias.relative_position_bias_table   B.blocks.i.attn.relative_position_bias_table
#   backbone.encoder.layer.i.attention.output.dense.*        B.blocks.i.attn.proj.*
#   ...layer.i.intermediate.dense.* / output.dense.*         B.blocks.i.mlp.fc1.* / mlp.fc2.*
#   neck.reassemble_stage.readout_projects.k.0.*             P.act_postprocess{k+1}.0.project.0.*
#   neck.reassemble_stage.layers.k.projection.* / resize.*   P.act_postprocess{k+1}.3.* / .4.*
#   neck.convs.k.weight                                      S.layer{k+1}_rn.weight
#   neck.fusion_stage.layers.k.projection.*                  S.refinenet{4-k}.out_conv.*
#   ...fusion_stage.layers.k.residual_layer{u}.convolution{c}.*  S.refinenet{4-k}.resConfUnit{u}.conv{c}.*
#   relative_head.conv1 / conv2 / conv3.*                    S.output_conv.0 / 2 / 4.*
#   metric_head.conv2.*                                      conv2.*
#   metric_head.M.conv1 / conv2.*, M one of seed_bin_regressor, seed_bin_regressors.d, seed_projector,
#     projectors.i, attractors.i, attractors.d.i             M._net.0 / _net.2.*
#   metric_head.conditional_log_binomial[.d].mlp.*           conditional_log_binomial[.d].mlp.*
#   metric_head.patch_transformer.embedding_convPxP.*        patch_transformer.embedding_convPxP.*
#   ...transformer_encoder.i.self_attn.{query,key,value}.*   patch_transformer.transformer_encoder.layers.i.
#                                                              self_attn.in_proj_weight / in_proj_bias (stacked)
#   metric_head.patch_transformer.transformer_encoder.i.*    patch_transformer.transformer_encoder.layers.i.*
#   metric_head.mlp_classifier.linear1 / linear2.*           mlp_classifier.0 / 2.*
#
# plus what the original files hold and transformers' conversion drops: each BEiT block's
# attn.relative_position_index buffer, timm's unused classifier (fc_norm, head: 1000 ImageNet classes), and the
# log-binomial buffers k_idx / K_minus_1.
# ---------------------------------------------------------------------------------------------------------------

_HF_TO_ORIGINAL = [  # (pattern, replacement), applied in order to each name
    (r"^backbone\.embeddings\.cls_token$", "core.core.pretrained.model.cls_token"),
    (r"^backbone\.embeddings\.patch_embeddings\.projection\.", "core.core.pretrained.model.patch_embed.proj."),
    (r"^backbone\.encoder\.layer\.(\d+)\.", r"core.core.pretrained.model.blocks.\1."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.lambda_([12])$", r".gamma_\1"),
    (r"\.attention\.attention\.query\.bias$", ".attn.q_bias"),
    (r"\.attention\.attention\.value\.bias$", ".attn.v_bias"),
    (r"\.attention\.attention\.relative_position_bias\.", ".attn."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"(blocks\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
    (
        r"^neck\.reassemble_stage\.readout_projects\.(\d)\.0\.",
        lambda m: f"core.core.pretrained.act_postprocess{int(m[1]) + 1}.0.project.0.",
    ),
    (
        r"^neck\.reassemble_stage\.layers\.(\d)\.projection\.",
        lambda m: f"core.core.pretrained.act_postprocess{int(m[1]) + 1}.3.",
    ),
    (
        r"^neck\.reassemble_stage\.layers\.(\d)\.resize\.",
        lambda m: f"core.core.pretrained.act_postprocess{int(m[1]) + 1}.4.",
    ),
    (r"^neck\.convs\.(\d)\.weight$", lambda m: f"core.core.scratch.layer{int(m[1]) + 1}_rn.weight"),
    (r"^neck\.fusion_stage\.layers\.(\d)\.", lambda m: f"core.core.scratch.refinenet{4 - int(m[1])}."),
    (r"(refinenet\d)\.projection\.", r"\1.out_conv."),
    (r"\.residual_layer([12])\.convolution([12])\.", r".resConfUnit\1.conv\2."),
    (r"^relative_head\.conv([123])\.", lambda m: f"core.core.scratch.output_conv.{2 * int(m[1]) - 2}."),
    (r"^metric_head\.mlp_classifier\.linear([12])\.", lambda m: f"mlp_classifier.{2 * int(m[1]) - 2}."),
    (
        r"^metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.",
        r"patch_transformer.transformer_encoder.layers.\1.",
    ),
    (r"^metric_head\.", ""),
    (
        r"^((?:seed_bin_regressors?|seed_projector|projectors|attractors)(?:\.\w+)*)\.conv([12])\.",
        lambda m: f"{m[1]}._net.{2 * int(m[2]) - 2}.",
    ),
]


def _relative_position_index(window: int) -> np.ndarray:
    """timm BEiT's buffer for a square patch grid: the table row of each (query, key) pair, CLS rows last."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    distances = (2 * window - 1) ** 2 + 3
    index = np.zeros((window * window + 1,) * 2, dtype=np.int64)
    index[1:, 1:] = relative[..., 0] * (2 * window - 1) + relative[..., 1]
    index[0, :], index[:, 0], index[0, 0] = distances - 3, distances - 2, distances - 1
    return index


def original_state_dict(hf_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A transformers state dict (the names of a saved model.safetensors) in the original isl-org layout, with the
    keys only the original files hold (see the map above)."""
    import re

    renamed: dict[str, np.ndarray] = {}
    fused: dict[str, dict[str, np.ndarray]] = {}
    for name, value in hf_state.items():
        qkv = re.match(r"^backbone\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.weight$", name)
        router = re.match(
            r"^metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.self_attn\.(query|key|value)\.(weight|bias)$",
            name,
        )
        if qkv:
            fused.setdefault(f"core.core.pretrained.model.blocks.{qkv[1]}.attn.qkv.weight", {})[qkv[2]] = value
            continue
        if router:
            target = f"patch_transformer.transformer_encoder.layers.{router[1]}.self_attn.in_proj_{router[3]}"
            fused.setdefault(target, {})[router[2]] = value
            continue
        for pattern, replacement in _HF_TO_ORIGINAL:
            name = re.sub(pattern, replacement, name)
        renamed[name] = value
    for target, parts in fused.items():
        renamed[target] = np.concatenate([parts["query"], parts["key"], parts["value"]], axis=0)
    blocks = sorted(
        {int(m[1]) for k in renamed if (m := re.match(r"core\.core\.pretrained\.model\.blocks\.(\d+)\.", k))}
    )
    hidden = renamed["core.core.pretrained.model.cls_token"].shape[-1]
    for i in blocks:
        rows = renamed[f"core.core.pretrained.model.blocks.{i}.attn.relative_position_bias_table"].shape[0]
        window = (math.isqrt(rows - 3) + 1) // 2
        renamed[f"core.core.pretrained.model.blocks.{i}.attn.relative_position_index"] = _relative_position_index(
            window
        )
    rng = np.random.default_rng(0)
    renamed["core.core.pretrained.model.fc_norm.weight"] = np.ones(hidden, np.float32)
    renamed["core.core.pretrained.model.fc_norm.bias"] = np.zeros(hidden, np.float32)
    renamed["core.core.pretrained.model.head.weight"] = rng.normal(0, 0.02, (1000, hidden)).astype(np.float32)
    renamed["core.core.pretrained.model.head.bias"] = np.zeros(1000, np.float32)
    for name in [k for k in renamed if k.endswith(".mlp.2.weight") and k.startswith("conditional_log_binomial")]:
        prefix = name.removesuffix(".mlp.2.weight")
        seed = (
            "seed_bin_regressor._net.2.weight"
            if prefix.count(".") == 0
            else f"seed_bin_regressors.{prefix.split('.')[1]}._net.2.weight"
        )
        n_bins = renamed[seed].shape[0]
        renamed[f"{prefix}.log_binomial_transform.k_idx"] = np.arange(n_bins, dtype=np.int64).reshape(1, -1, 1, 1)
        renamed[f"{prefix}.log_binomial_transform.K_minus_1"] = np.full((1, 1, 1, 1), n_bins - 1, np.float32)
    return renamed


def stand_in(layout: dict[str, list[int]], int64_patterns: list[str]) -> dict[str, np.ndarray]:
    """Zero-stride arrays of the shapes of a key-list fixture (tests/data/*_layouts.json): a full-size state dict
    that takes no memory. Keys matching one of `int64_patterns` (the fixture's "_int64_buffers") are int64."""

    def dtype(key):
        return np.int64 if any(fnmatch.fnmatchcase(key, pattern) for pattern in int64_patterns) else np.float32

    return {key: np.broadcast_to(np.zeros((), dtype(key)), shape) for key, shape in layout.items()}


ORIGINAL_VARIANTS = {"N": "nyu", "K": "kitti", "NK": "nyu-kitti"}


def build_original(
    variant: str, path: Path, seed: int = 0, kitti_max_depth: float = 10.0, logit_offset: float = 0.0
) -> HFZoeDepth:
    """A re-drawn tiny transformers model as the released ZoeD_M12_{variant}.pt would hold it; returns the model.

    The model runs with LayerNorm eps 1e-6 (timm's, what the original files run with), and ZoeD_M12_K with the
    released depth range 1e-3..`kitti_max_depth` (10 m: the quirk). The file is `{"model": ..., "optimizer": None,
    "epoch": ...}`, as the original trainer's save_checkpoint writes it. `logit_offset` steers the NK router.
    """
    import tempfile

    from safetensors.numpy import load_file

    config = hf_config(ORIGINAL_VARIANTS[variant])
    config.backbone_config.layer_norm_eps = 1e-6
    if variant == "K":
        config.bin_configurations = [{"name": "kitti", "n_bins": 64, "min_depth": 1e-3, "max_depth": kitti_max_depth}]
    torch.manual_seed(seed)
    model = HFZoeDepth(config).eval()
    redraw(model, seed)
    if logit_offset:
        steer_router(model, logit_offset)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)  # the serialized (hub) names, which the map above is written for
        hf_state = load_file(Path(folder) / "model.safetensors")
    state = {
        name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in original_state_dict(hf_state).items()
    }
    torch.save({"model": state, "optimizer": None, "epoch": 5}, path)
    return model


# ---------------------------------------------------------------------------------------------------------------
# DINOv2 (tests/test_dinov2.py)
# ---------------------------------------------------------------------------------------------------------------

# DINOv2 ViT-L/14 pretrained at 518: the backbone of Depth Anything V2 Large (and of Depth Anything V1's metric
# ZoeDepth models).
FULL_DINOV2 = dict(
    image_size=518, patch_size=14, num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, mlp_ratio=4
)


def dinov2_config(full: bool = False, **changes):
    """transformers' Dinov2Config for the tiny preset (zoedepth_jax.config.TINY_DINOV2) or ViT-L/14."""
    from transformers import Dinov2Config as HFDinov2Config

    from zoedepth_jax.config import TINY_DINOV2

    values = dict(FULL_DINOV2) if full else {k: v for k, v in TINY_DINOV2.items() if k != "out_indices"}
    values["layerscale_value"] = 1.0
    return HFDinov2Config(**{**values, **changes})


def build_dinov2(folder: Path, seed: int = 0, full: bool = False, **changes):
    """A transformers `Dinov2Model`, re-drawn and saved with `save_pretrained`; returned in eval mode."""
    from transformers import Dinov2Model

    torch.manual_seed(seed)
    model = Dinov2Model(dinov2_config(full, **changes)).eval()
    redraw(model, seed)
    model.save_pretrained(folder)
    return model


@torch.no_grad()
def run_dinov2(model, images_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """`last_hidden_state` and `hidden_state_{i}` (0: the embeddings, i: the output of layer i) of a Dinov2Model."""
    out = model(torch.from_numpy(images_nchw), output_hidden_states=True)
    result = {"last_hidden_state": out.last_hidden_state.numpy()}
    for i, hidden in enumerate(out.hidden_states):
        result[f"hidden_state_{i}"] = hidden.numpy()
    return result


# ---------------------------------------------------------------------------------------------------------------
# Depth Anything (tests/test_depth_anything.py)
# ---------------------------------------------------------------------------------------------------------------

# Depth Anything V2 Large: DINOv2 ViT-L/14 at 518, features of layers 5, 12, 18, 24, the released neck and head.
FULL_DEPTH_ANYTHING = dict(
    reassemble_hidden_size=1024, neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256, head_hidden_size=32
)
DEPTH_ANYTHING_KINDS = {
    "relative": dict(depth_estimation_type="relative"),
    "metric": dict(depth_estimation_type="metric", max_depth=20),
}


def depth_anything_config(kind: str, full: bool = False):
    """transformers' DepthAnythingConfig: the tiny preset (zoedepth_jax.config.TINY_DEPTH_ANYTHING) or V2 Large,
    relative or metric (max_depth 20, as the indoor metric models)."""
    from transformers import DepthAnythingConfig as HFDepthAnythingConfig

    from zoedepth_jax.config import TINY_DEPTH_ANYTHING, TINY_DINOV2

    if full:
        backbone = dinov2_config(full=True, out_indices=[5, 12, 18, 24], reshape_hidden_states=False)
        head = FULL_DEPTH_ANYTHING
    else:
        backbone = dinov2_config(out_indices=list(TINY_DINOV2["out_indices"]), reshape_hidden_states=False)
        head = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_DEPTH_ANYTHING.items()}
    return HFDepthAnythingConfig(backbone_config=backbone, **head, **DEPTH_ANYTHING_KINDS[kind])


def build_depth_anything(kind: str, folder: Path, seed: int = 0, full: bool = False):
    """A transformers `DepthAnythingForDepthEstimation`, re-drawn and saved with `save_pretrained` (eval mode)."""
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(depth_anything_config(kind, full)).eval()
    redraw(model, seed)
    calibrate_depth_anything_head(model)
    model.save_pretrained(folder)
    return model


@torch.no_grad()
def calibrate_depth_anything_head(model) -> None:
    """Rescales the head's last convolution so that its output, before the ReLU or sigmoid, has a mean and spread
    that keep the depth varied: re-drawn weights leave it at tens of units, so the ReLU zeroes most pixels and the
    sigmoid saturates (a metric depth of 0 or max_depth nearly everywhere), which a wrong implementation could
    match. Target, on a calibration image: mean 2 and std 1.5 (relative: ~9 pixels in 10 positive), mean 0 and std
    1.5 (metric: sigmoid mostly in 0.05..0.95)."""
    conv3 = model.head.conv3
    captured = {}
    hook = conv3.register_forward_hook(lambda m, i, o: captured.__setitem__("z", o))
    try:
        model(torch.from_numpy(test_images(1, 70, 98, seed=0)))
    finally:
        hook.remove()
    z = captured["z"]
    target_mean = 2.0 if model.config.depth_estimation_type == "relative" else 0.0
    scale = 1.5 / float(z.std())
    conv3.weight *= scale
    conv3.bias.copy_(conv3.bias * scale + (target_mean - scale * float(z.mean())))


@torch.no_grad()
def run_depth_anything(model, images_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """transformers' predicted_depth and intermediates under zoedepth-jax's names: `backbone_stage{i}` (the
    layernormed backbone outputs the neck reads) and `neck_fusion_{i}` (maps in NHWC)."""
    captured: dict[str, object] = {}
    hooks = [
        model.backbone.register_forward_hook(lambda m, i, o: captured.__setitem__("backbone", o)),
        model.neck.register_forward_hook(lambda m, i, o: captured.__setitem__("neck", o)),
    ]
    try:
        out = model(torch.from_numpy(images_nchw))
    finally:
        for h in hooks:
            h.remove()
    result = {"predicted_depth": out.predicted_depth.numpy()}
    stages = model.config.backbone_config.out_indices
    for stage, feature_map in zip(stages, captured["backbone"].feature_maps, strict=True):
        result[f"backbone_stage{stage}"] = feature_map.numpy()
    for i, fused in enumerate(captured["neck"]):
        result[f"neck_fusion_{i}"] = fused.permute(0, 2, 3, 1).numpy()
    return result


# ---------------------------------------------------------------------------------------------------------------
# ZoeDepth on a DINOv2 backbone (tests/test_dinov2.py), as transformers builds it from a Dinov2Config
# ---------------------------------------------------------------------------------------------------------------


def build_zoedepth_dinov2(folder: Path, seed: int = 0, full: bool = False) -> HFZoeDepth:
    """ZoeDepth (one softplus head, readout "project") on DINOv2, re-drawn and saved with `save_pretrained`: the
    tiny presets, or with `full` ViT-L/14 (its last four layers) and the released neck, the Hugging Face form of the
    Depth Anything V1 metric architecture."""
    from zoedepth_jax.config import TINY_DINOV2

    layers = FULL_DINOV2["num_hidden_layers"]
    out_indices = list(range(layers - 3, layers + 1)) if full else list(TINY_DINOV2["out_indices"])
    backbone = dinov2_config(full, out_indices=out_indices, reshape_hidden_states=False)
    config = HFZoeDepthConfig(
        backbone_config=backbone,
        backbone_hidden_size=backbone.hidden_size,
        **(FULL_HEAD if full else TINY_HEAD),
        **VARIANTS["nyu"],
    )
    torch.manual_seed(seed)
    model = HFZoeDepth(config).eval()
    redraw(model, seed)
    model.save_pretrained(folder)
    return model


@torch.no_grad()
def run_reference_on_dinov2(model: HFZoeDepth, images_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """`run_reference` for ZoeDepth on DINOv2, whose neck reads the backbone's layernormed feature maps: those are
    the `backbone_stage{i}` entries (not the raw hidden states)."""
    captured: dict[str, object] = {}
    hook = model.backbone.register_forward_hook(lambda m, i, o: captured.__setitem__("backbone", o))
    try:
        result = run_reference(model, images_nchw)
    finally:
        hook.remove()
    stages = model.config.backbone_config.out_indices
    for stage, feature_map in zip(stages, captured["backbone"].feature_maps, strict=True):
        result[f"backbone_stage{stage}"] = feature_map.numpy()
    return result


# ---------------------------------------------------------------------------------------------------------------
# Depth Anything V1 metric checkpoints (tests/test_depth_anything_v1_metric.py)
#
# The original (LiheYoung/Depth-Anything metric_depth/) is ZoeDepth's single metric head on DINOv2 and Depth
# Anything's DPT head. transformers' ZoeDepth on a Dinov2Backbone holds the same parameters; instance patches make
# it compute what the original computes (`reproduce_depth_anything_v1`):
#   * the vendored DINOv2 resizes the position embeddings by the scale factors ((rows + 0.1) / s, (cols + 0.1) / s)
#     (`dinov2_offset_interpolation`), not to the grid's size;
#   * the DPT head drops the CLS token (use_clstoken=False), which transformers' ZoeDepth cannot run (with
#     readout_type="ignore" its reassemble stage reshapes the maps as token sequences and fails), and its fusion
#     blocks upsample to the next map's size: transformers' own Depth Anything reassemble and fusion stages,
#     holding the ZoeDepth neck's weights;
#   * output_conv1's map is resized to the input size (patch_h * 14, patch_w * 14), not 2x.
#
# `depth_anything_v1_state_dict` is the transformers -> original name map, written out independently of
# zoedepth_jax.weights.depth_anything_v1 (which maps the other way), with the original module tree as the arbiter
# (tests/data/depth_anything_v1_layouts.json).
#
#   P = core.core.pretrained, H = core.core.depth_head, S = H.scratch
#   transformers (as saved)                                   original (depth_anything_metric_depth_*.pt, "model")
#   backbone.embeddings.cls_token / mask_token                P.cls_token / P.mask_token
#   backbone.embeddings.position_embeddings                   P.pos_embed
#   backbone.embeddings.patch_embeddings.projection.*         P.patch_embed.proj.*
#   backbone.encoder.layer.i.{norm1,norm2,mlp.fc1,mlp.fc2}.*  P.blocks.i.{same}.*
#   ...layer.i.attention.attention.{query,key,value}.*        P.blocks.i.attn.qkv.* (stacked in that order)
#   ...layer.i.attention.output.dense.*                       P.blocks.i.attn.proj.*
#   ...layer.i.layer_scale1 / layer_scale2.lambda1            P.blocks.i.ls1 / ls2.gamma
#   backbone.layernorm.*                                      P.norm.*
#   neck.reassemble_stage.layers.k.projection / resize.*      H.projects.k.* / H.resize_layers.k.*
#   neck.convs.k.weight                                       S.layer{k+1}_rn.weight
#   neck.fusion_stage.layers.k.projection.*                   S.refinenet{4-k}.out_conv.*
#   ...fusion_stage.layers.k.residual_layer{u}.convolution{c}.*  S.refinenet{4-k}.resConfUnit{u}.conv{c}.*
#   relative_head.conv1 / conv2 / conv3.*                     S.output_conv1.* / S.output_conv2.0.* / .2.*
#   metric_head.<module>.conv1 / conv2.*                      <module>._net.0.* / ._net.2.* (seed_bin_regressor,
#                                                             seed_projector, projectors.i, attractors.i)
#   metric_head.conv2.*, metric_head.conditional_log_binomial.mlp.*   conv2.*, conditional_log_binomial.mlp.*
#   (none)                                                    conditional_log_binomial.log_binomial_transform.*
# ---------------------------------------------------------------------------------------------------------------

# The original's interpolate_offset (vendored DINOv2) and depth ranges per variant (its dataset configs).
DINOV2_INTERPOLATE_OFFSET = 0.1
DEPTH_ANYTHING_V1_VARIANTS = {
    "indoor": dict(bin_centers_type="softplus", name="nyu", max_depth=10.0),
    "outdoor": dict(bin_centers_type="softplus", name="kitti", max_depth=80.0),  # the released layout: as indoor
    "outdoor-normed": dict(bin_centers_type="normed", name="kitti", max_depth=80.0),  # the KITTI model config's
}
# A tiny DINOv2 with DINOv2's 64-wide attention heads (the head count is not in the weights), four layers.
TINY_DEPTH_ANYTHING_V1_BACKBONE = dict(hidden_size=128, num_attention_heads=2)


def depth_anything_v1_hf_config(kind: str, full: bool = False) -> HFZoeDepthConfig:
    """transformers' ZoeDepth on DINOv2 with the parameters of a Depth Anything V1 metric model: CLS token
    dropped, the last four layers layernormed, one head of `kind`'s bins. Tiny, or ViT-L/14 with the released neck."""
    settings = DEPTH_ANYTHING_V1_VARIANTS[kind]
    if full:
        backbone = dinov2_config(full=True, out_indices=[21, 22, 23, 24], reshape_hidden_states=False)
        head = dict(neck_hidden_sizes=[256, 512, 1024, 1024])
    else:
        backbone = dinov2_config(
            **TINY_DEPTH_ANYTHING_V1_BACKBONE, out_indices=[1, 2, 3, 4], reshape_hidden_states=False
        )
        head = TINY_HEAD
    bins = {"name": settings["name"], "n_bins": 64, "min_depth": 1e-3, "max_depth": settings["max_depth"]}
    return HFZoeDepthConfig(
        backbone_config=backbone,
        backbone_hidden_size=backbone.hidden_size,
        readout_type="ignore",
        bin_centers_type=settings["bin_centers_type"],
        bin_configurations=[bins],
        **head,
    )


def dinov2_offset_interpolation(embeddings, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The vendored DINOv2's `interpolate_pos_encoding` rule, as a replacement for the method of transformers'
    `Dinov2Embeddings`: the table itself for a square input on the pretraining grid, else bicubic by the scale
    factors ((rows + 0.1) / s, (cols + 0.1) / s), in fp32."""
    table = embeddings.position_embeddings
    positions = table.shape[1] - 1
    if tokens.shape[1] - 1 == positions and height == width:
        return table
    side = math.sqrt(positions)
    rows = height // embeddings.patch_size + DINOV2_INTERPOLATE_OFFSET
    cols = width // embeddings.patch_size + DINOV2_INTERPOLATE_OFFSET
    grid = table[:, 1:].float().reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, scale_factor=(rows / side, cols / side), mode="bicubic")
    assert grid.shape[-2:] == (int(rows), int(cols))
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, table.shape[-1]).to(table.dtype)
    return torch.cat([table[:, :1], patches], dim=1)


def reproduce_depth_anything_v1(model: HFZoeDepth) -> HFZoeDepth:
    """Patches a transformers ZoeDepth-on-DINOv2 instance to compute as the original Depth Anything V1 metric model
    (see above); returns it."""
    import types

    from transformers import DepthAnythingConfig as HFDepthAnythingConfig
    from transformers.models.depth_anything import modeling_depth_anything as depth_anything

    embeddings = model.backbone.embeddings
    embeddings.interpolate_pos_encoding = types.MethodType(dinov2_offset_interpolation, embeddings)
    config = model.config
    neck = HFDepthAnythingConfig(
        reassemble_hidden_size=config.backbone_hidden_size,
        reassemble_factors=config.reassemble_factors,
        neck_hidden_sizes=config.neck_hidden_sizes,
        fusion_hidden_size=config.fusion_hidden_size,
    )
    for name, stage in [
        ("reassemble_stage", depth_anything.DepthAnythingReassembleStage(neck)),
        ("fusion_stage", depth_anything.DepthAnythingFeatureFusionStage(neck)),
    ]:
        stage.load_state_dict(getattr(model.neck, name).state_dict())  # strict: the same parameters
        setattr(model.neck, name, stage.eval())

    def resize_head_to_input(module, args):
        height, width = args[0].shape[-2:]
        module.relative_head.upsample = torch.nn.Upsample(size=(height, width), mode="bilinear", align_corners=True)

    model.register_forward_pre_hook(resize_head_to_input)
    return model


def depth_anything_v1_state_dict(hf_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A transformers ZoeDepth-on-DINOv2 state dict (the names of a saved model.safetensors) in the original Depth
    Anything V1 metric layout, with the buffers only the original files hold (see the map above)."""
    import re

    renames = [
        (r"^backbone\.embeddings\.position_embeddings$", "core.core.pretrained.pos_embed"),
        (r"^backbone\.embeddings\.patch_embeddings\.projection\.", "core.core.pretrained.patch_embed.proj."),
        (r"^backbone\.embeddings\.", "core.core.pretrained."),
        (r"^backbone\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"core.core.pretrained.blocks.\1.attn.proj."),
        (
            r"^backbone\.encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$",
            r"core.core.pretrained.blocks.\1.ls\2.gamma",
        ),
        (r"^backbone\.encoder\.layer\.(\d+)\.", r"core.core.pretrained.blocks.\1."),
        (r"^backbone\.layernorm\.", "core.core.pretrained.norm."),
        (r"^neck\.reassemble_stage\.layers\.(\d)\.projection\.", r"core.core.depth_head.projects.\1."),
        (r"^neck\.reassemble_stage\.layers\.(\d)\.resize\.", r"core.core.depth_head.resize_layers.\1."),
        (r"^neck\.convs\.(\d)\.", lambda m: f"core.core.depth_head.scratch.layer{int(m[1]) + 1}_rn."),
        (r"^neck\.fusion_stage\.layers\.(\d)\.", lambda m: f"core.core.depth_head.scratch.refinenet{4 - int(m[1])}."),
        (r"(refinenet\d)\.projection\.", r"\1.out_conv."),
        (r"\.residual_layer([12])\.convolution([12])\.", r".resConfUnit\1.conv\2."),
        (r"^relative_head\.conv1\.", "core.core.depth_head.scratch.output_conv1."),
        (r"^relative_head\.conv2\.", "core.core.depth_head.scratch.output_conv2.0."),
        (r"^relative_head\.conv3\.", "core.core.depth_head.scratch.output_conv2.2."),
        (r"^metric_head\.", ""),
        (
            r"^(seed_bin_regressor|seed_projector|projectors\.\d+|attractors\.\d+)\.conv([12])\.",
            lambda m: f"{m[1]}._net.{2 * int(m[2]) - 2}.",
        ),
    ]
    out: dict[str, np.ndarray] = {}
    fused: dict[str, dict[str, np.ndarray]] = {}
    for name, value in hf_state.items():
        qkv = re.match(
            r"^backbone\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$", name
        )
        if qkv:
            fused.setdefault(f"core.core.pretrained.blocks.{qkv[1]}.attn.qkv.{qkv[3]}", {})[qkv[2]] = value
            continue
        for pattern, replacement in renames:
            name = re.sub(pattern, replacement, name)
        out[name] = value
    for target, parts in fused.items():
        out[target] = np.concatenate([parts["query"], parts["key"], parts["value"]], axis=0)
    n_bins = out["seed_bin_regressor._net.2.weight"].shape[0]
    out["conditional_log_binomial.log_binomial_transform.k_idx"] = np.arange(n_bins, dtype=np.int64).reshape(
        1, -1, 1, 1
    )
    out["conditional_log_binomial.log_binomial_transform.K_minus_1"] = np.full((1, 1, 1, 1), n_bins - 1, np.float32)
    return out


def build_depth_anything_v1(kind: str, path: Path, seed: int = 0, full: bool = False) -> HFZoeDepth:
    """A re-drawn transformers model as a Depth Anything V1 metric `.pt` would hold it (tiny, or full size), written
    to `path` as the original trainer writes its checkpoints; returns the model, patched to compute as the
    original does (`reproduce_depth_anything_v1`), in eval mode."""
    import tempfile

    from safetensors.numpy import load_file

    torch.manual_seed(seed)
    model = HFZoeDepth(depth_anything_v1_hf_config(kind, full)).eval()
    redraw(model, seed)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)  # the serialized (hub) names, which the map above is written for
        hf_state = load_file(Path(folder) / "model.safetensors")
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in depth_anything_v1_state_dict(hf_state).items()}
    torch.save({"model": state, "optimizer": None, "epoch": 5}, path)
    return reproduce_depth_anything_v1(model)
