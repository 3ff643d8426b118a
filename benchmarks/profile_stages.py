"""Time per stage of one full-size forward, zoedepth-jax against transformers PyTorch eager, with kernel rates.

    python benchmarks/profile_stages.py [--checkpoint DIR] [--runs 5] [--dtype float32|bfloat16] [--json FILE]

Stages: patch embedding, attention (LayerNorm + q/k/v + scores + softmax + context + output projection, all 24
layers), MLP (LayerNorm + fc1 + GELU + fc2, all layers), neck (reassemble + fusion), relative head, metric heads
(bins, attractors, log-binomial, and the router for ZoeD-NK). PyTorch's figures come from forward hooks around
its modules inside real forwards (the LayerNorms of a BEiT layer sit outside its modules, so they fall in
"other"); zoedepth-jax's from each stage jitted on its own with the inputs the full forward gives it (XLA fuses
across stage borders in the full forward, so the sum differs a little from the whole). Medians over `--runs`.
GFLOP/s = the stage's multiply-adds x 2 / median time. Needs the `test` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

STAGES = ("patch_embed", "attention", "mlp", "neck", "relative_head", "metric_head")


def stage_gflop(config, batch: int, height: int, width: int) -> dict[str, float]:
    """Multiply-adds x 2 of the dense stages (the neck and heads are counted from their convolutions)."""
    backbone = config.backbone_config
    width_d, layers, p = backbone.hidden_size, backbone.num_hidden_layers, backbone.patch_size
    tokens = (height // p) * (width // p) + 1
    attention = layers * batch * (4 * tokens * width_d * width_d + 2 * tokens * tokens * width_d)
    mlp = layers * batch * 2 * tokens * width_d * backbone.intermediate_size
    patch = batch * (tokens - 1) * 3 * p * p * width_d
    return {
        "patch_embed": 2 * patch / 1e9,
        "attention": 2 * attention / 1e9,
        "mlp": 2 * mlp / 1e9,
    }


def conv_gflop_by_module(torch_model, images) -> dict[str, float]:
    """GFLOP of the Conv2d / ConvTranspose2d / Linear layers under each top-level stage, from one traced forward."""
    import torch

    totals = defaultdict(float)
    prefixes = {"neck": "neck", "relative_head": "relative_head", "metric_head": "metric_head"}
    handles = []
    for name, module in torch_model.named_modules():
        stage = next((s for p, s in prefixes.items() if name.startswith(p + ".")), None)
        if stage is None or not isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            continue

        def count(module, inputs, output, stage=stage):
            if isinstance(module, torch.nn.Linear):
                macs = output.numel() * module.in_features
            elif isinstance(module, torch.nn.ConvTranspose2d):
                macs = inputs[0].numel() * module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            else:
                kh, kw = module.kernel_size
                macs = output.numel() * (module.in_channels // module.groups) * kh * kw
            totals[stage] += 2 * macs / 1e9

        handles.append(module.register_forward_hook(count))
    with torch.no_grad():
        torch_model(torch.from_numpy(images))
    for h in handles:
        h.remove()
    return dict(totals)


def torch_stage_times(torch_model, images, runs: int) -> tuple[dict[str, float], float]:
    """Median seconds per stage inside real eager forwards, and the median whole forward."""
    import torch

    beit = torch_model.backbone.beit  # transformers 5.x module tree
    modules = {
        "patch_embed": [beit.embeddings],
        "attention": [m for layer in beit.layers for m in (layer.attention, layer.relative_position_bias)],
        "mlp": [layer.mlp for layer in beit.layers],
        "neck": [torch_model.neck],
        "relative_head": [torch_model.relative_head],
        "metric_head": [torch_model.metric_head],
    }
    spent, started = defaultdict(float), {}
    handles = []
    for stage, mods in modules.items():
        for module in mods:
            handles.append(
                module.register_forward_pre_hook(lambda m, i: started.__setitem__(id(m), time.perf_counter()))
            )
            handles.append(
                module.register_forward_hook(
                    lambda m, i, o, s=stage: spent.__setitem__(s, spent[s] + time.perf_counter() - started[id(m)])
                )
            )
    per_run, wholes = defaultdict(list), []
    x = torch.from_numpy(images)
    with torch.no_grad():
        torch_model(x)  # warm-up
        for _ in range(runs):
            spent.clear()
            start = time.perf_counter()
            torch_model(x)
            wholes.append(time.perf_counter() - start)
            for stage in STAGES:
                per_run[stage].append(spent[stage])
    for h in handles:
        h.remove()
    return {s: statistics.median(t) for s, t in per_run.items()}, statistics.median(wholes)


def jax_stage_functions(model, variables, x):
    """One jitted function per stage and the inputs the full forward gives it: {stage: (fn, args)}."""
    import jax.numpy as jnp

    from zoedepth_jax.modeling import beit
    from zoedepth_jax.modeling.dpt import Neck, RelativeDepthHead
    from zoedepth_jax.modeling.layers import gelu, layer_norm
    from zoedepth_jax.modeling.metric_head import MetricHead
    from zoedepth_jax.modeling.zoedepth import apply_with_intermediates

    config, dtype = model.config, model.dtype
    bconfig = config.backbone_config
    params = variables["params"]
    grid = (x.shape[1] // bconfig.patch_size, x.shape[2] // bconfig.patch_size)
    _, inter = apply_with_intermediates(model, variables, x)
    stages = [inter[f"backbone_stage{i}"] for i in bconfig.out_indices]
    layers = [params["backbone"]["encoder"][f"layer_{i}"] for i in range(bconfig.num_hidden_layers)]
    hidden = stages[-1].astype(dtype)

    def attention(layer_params, h):
        normed = (
            layer_norm(bconfig.layer_norm_eps, "n").apply({"params": layer_params["layernorm_before"]}, h).astype(dtype)
        )
        return beit.Attention(bconfig, dtype).apply({"params": layer_params["attention"]}, normed, grid)

    def mlp(layer_params, h):
        normed = (
            layer_norm(bconfig.layer_norm_eps, "n").apply({"params": layer_params["layernorm_after"]}, h).astype(dtype)
        )
        y = beit.DenseBlock(bconfig.intermediate_size, dtype).apply({"params": layer_params["intermediate"]}, normed)
        y = gelu(y)
        return beit.DenseBlock(bconfig.hidden_size, dtype).apply({"params": layer_params["output"]}, y)

    def over_layers(fn):
        def run(all_layers, h):
            return [fn(p, h) for p in all_layers]

        return run

    neck = Neck(config, dtype)
    fused, bottleneck = neck.apply({"params": params["neck"]}, stages, grid)
    head = RelativeDepthHead(config, dtype)
    relative_depth, features = head.apply({"params": params["relative_head"]}, fused)
    embeddings = beit.Embeddings(bconfig, dtype)
    return {
        "patch_embed": (
            lambda p, x: embeddings.apply({"params": p}, x.astype(dtype)),
            (params["backbone"]["embeddings"], x),
        ),
        "attention": (over_layers(attention), (layers, hidden)),
        "mlp": (over_layers(mlp), (layers, hidden)),
        "neck": (lambda p, s: neck.apply({"params": p}, s, grid), (params["neck"], stages)),
        "relative_head": (lambda p, f: head.apply({"params": p}, f), (params["relative_head"], fused)),
        "metric_head": (
            lambda p, *a: MetricHead(config).apply({"params": p}, *a),
            (params["metric_head"], features, relative_depth, bottleneck, fused),
        ),
        "whole": (lambda v, x: model.apply(v, x).predicted_depth, (variables, jnp.asarray(x))),
    }


def jax_stage_times(model, variables, x, runs: int) -> dict[str, float]:
    import jax

    out = {}
    for stage, (fn, args) in jax_stage_functions(model, variables, x).items():
        compiled = jax.jit(fn).lower(*args).compile()
        jax.block_until_ready(compiled(*args))
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - start)
        out[stage] = statistics.median(times)
    return out


def add_model_and_input_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --runs, --batch, --height, --width and --json, shared with openvino_stages.py."""
    parser.add_argument("--checkpoint", type=Path, help="a save_pretrained folder; built (nyu-kitti, full) if absent")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--json", type=Path)


def checkpoint_and_images(args, scratch: Path):
    """The checkpoint folder (`--checkpoint`, or the released nyu-kitti architecture with re-drawn weights built
    there or in `scratch`) and the input images [B, 3, H, W]."""
    import reference

    folder = args.checkpoint
    if folder is None or not (folder / "config.json").exists():
        folder = folder or scratch / "checkpoint"
        reference.build("nyu-kitti", folder, seed=0, full=True)
    return folder, reference.test_images(args.batch, args.height, args.width, seed=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_input_arguments(parser)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()

    import jax.numpy as jnp
    from transformers import ZoeDepthForDepthEstimation

    from zoedepth_jax.weights import from_pretrained

    with tempfile.TemporaryDirectory() as tmp:
        folder, images = checkpoint_and_images(args, Path(tmp))
        model, variables = from_pretrained(folder, dtype=jnp.dtype(args.dtype))
        jax_times = jax_stage_times(model, variables, images.transpose(0, 2, 3, 1), args.runs)
        del variables
        print("zoedepth-jax seconds per stage:", json.dumps(jax_times), flush=True)
        result = {"dtype": args.dtype, "batch": args.batch, "input_hw": [args.height, args.width], "jax_s": jax_times}
        torch_model = ZoeDepthForDepthEstimation.from_pretrained(folder).eval()
        gflop = stage_gflop(model.config, args.batch, args.height, args.width)
        gflop |= conv_gflop_by_module(torch_model, images)
        result["gflop"] = gflop
        if not args.skip_torch:
            torch_times, torch_whole = torch_stage_times(torch_model, images, args.runs)
            result["torch_s"] = torch_times | {"whole": torch_whole}
    rows = ["| stage | GFLOP | jax s | jax GFLOP/s | torch s | torch GFLOP/s |", "|---|---|---|---|---|---|"]
    total = sum(gflop.values())
    for stage in (*STAGES, "whole"):
        work = total if stage == "whole" else gflop.get(stage, 0.0)
        cells = [stage, f"{work:.1f}"]
        for seconds in (jax_times[stage], result.get("torch_s", {}).get(stage)):
            cells += ["", ""] if seconds is None else [f"{seconds:.3f}", f"{work / seconds:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    print("\n".join(rows))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
