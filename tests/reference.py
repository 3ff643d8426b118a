"""Reference checkpoints for the parity tests: transformers models with re-drawn weights, saved with
`save_pretrained` (the same files a user downloads), and the transformers outputs with intermediates.

Random initialisation gives near-constant depth maps (layer scale 0.1 and zero-initialised tables make the
backbone almost an identity), which would agree with a wrong implementation for the wrong reasons. `redraw`
replaces every parameter with values at a scale that keeps activations of order one, so each layer matters.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from transformers import BeitConfig as HFBeitConfig
from transformers import ZoeDepthConfig as HFZoeDepthConfig
from transformers import ZoeDepthForDepthEstimation as HFZoeDepth

NYU = {"name": "nyu", "n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0}
KITTI = {"name": "kitti", "n_bins": 64, "min_depth": 1e-3, "max_depth": 80.0}

TINY_BACKBONE = dict(
    image_size=64,  # pretraining window 4x4: every test size interpolates the relative-position tables
    patch_size=16,
    num_hidden_layers=4,
    hidden_size=48,
    intermediate_size=96,
    num_attention_heads=3,
    layer_scale_init_value=0.1,
    out_features=["stage1", "stage2", "stage3", "stage4"],
)
TINY_HEAD = dict(
    neck_hidden_sizes=[16, 32, 48, 48],
    fusion_hidden_size=32,
    bottleneck_features=32,
    num_relative_features=8,
    bin_embedding_dim=16,
)
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
        elif name.endswith(("relative_position_bias_table", "cls_token")):
            p.copy_(normal(p.shape, 1.0))
        elif "lambda_" in name:
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
