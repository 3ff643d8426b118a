"""Helpers the benchmark scripts share: the benchmark model, its inputs, and the depth error against a reference.

The model is the released nyu-kitti architecture (BEiT-L/16 at 384, neck 256/512/1024/1024) with re-drawn weights,
built through transformers by `tests/reference.py`, so that every runtime loads the same `save_pretrained` folder.
`build_checkpoint` also builds the ZoeDepth variants nyu and kitti, and the DINOv2-L/14 models of `DINOV2_VARIANTS`
(Depth Anything V2 Large relative and metric, Depth Anything V1 metric indoor as transformers' ZoeDepth on DINOv2).
Importing this module puts `tests/` on the import path for `reference`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))


# ZoeDepth on BEiT-L/16 (the Intel checkpoints), by the name of its metric head(s).
BEIT_VARIANTS = ("nyu", "kitti", "nyu-kitti")
# Models on DINOv2-L/14:
#   da-v2-relative  Depth Anything V2 Large (transformers' DepthAnythingForDepthEstimation): layers 5, 12, 18, 24,
#                   neck 256/512/1024/1024, fusion 256, head 32; relative inverse depth (ReLU output)
#   da-v2-metric    the same with depth_estimation_type "metric", max_depth 20 (the indoor, Hypersim models)
#   da-v1-metric    Depth Anything V1 metric indoor (LiheYoung/Depth-Anything metric_depth/) in the layout of
#                   transformers' ZoeDepthForDepthEstimation on a Dinov2Backbone: the last four layers (21..24)
#                   through the final LayerNorm, the CLS token dropped (readout "ignore"), neck 256/512/1024/1024,
#                   one softplus metric-bins head over the NYU range 1e-3..10 m. What the original computes
#                   differently from transformers' ZoeDepth is in config.json for zoedepth-jax (`depth_anything_dpt`:
#                   Depth Anything's DPT fusion and head sizes; backbone `interpolate_offset` 0.1: the vendored
#                   DINOv2's position-embedding resize); transformers ignores both fields, and cannot run readout
#                   "ignore" in its ZoeDepth reassemble stage: the torch side is the transformers model patched
#                   by `reference.reproduce_depth_anything_v1` (transformers' own Depth Anything reassemble and
#                   fusion stages holding the same weights), `load_transformers_depth_model` applies it
DINOV2_VARIANTS = ("da-v2-relative", "da-v2-metric", "da-v1-metric")
VARIANTS = BEIT_VARIANTS + DINOV2_VARIANTS
# Variants whose depth is relative (inverse depth, zero where the ReLU cuts): their error is `errors_to_image_max`.
RELATIVE_VARIANTS = ("da-v2-relative",)
ARCHITECTURES = {
    **{variant: "released (BEiT-L/16, neck 256/512/1024/1024)" for variant in BEIT_VARIANTS},
    "da-v2-relative": "Depth Anything V2 Large (DINOv2-L/14, layers 5/12/18/24, neck 256/512/1024/1024, fusion 256), "
    "relative",
    "da-v2-metric": "Depth Anything V2 Large (DINOv2-L/14, layers 5/12/18/24, neck 256/512/1024/1024, fusion 256), "
    "metric, max_depth 20",
    "da-v1-metric": "Depth Anything V1 metric indoor as transformers' ZoeDepth (DINOv2-L/14, layers 21-24, readout "
    "ignore, neck 256/512/1024/1024, one softplus nyu head)",
}
# The vendored DINOv2 ViT-L/14 of Depth Anything V1 (its hubconf default): position embeddings resized by the scale
# factors ((rows + 0.1) / 37, (cols + 0.1) / 37).
DINOV2_INTERPOLATE_OFFSET = 0.1


def build_checkpoint(folder: Path, variant: str = "nyu-kitti", full: bool = True) -> None:
    """A `save_pretrained` folder of `variant` (one of `VARIANTS`) with re-drawn weights: the released
    architecture, or with `full=False` the tiny test architecture."""
    import reference

    if variant in BEIT_VARIANTS:
        reference.build(variant, folder, seed=0, full=full)
    elif variant in ("da-v2-relative", "da-v2-metric"):
        reference.build_depth_anything(variant.removeprefix("da-v2-"), folder, seed=0, full=full)
    elif variant == "da-v1-metric":
        build_depth_anything_v1_metric(folder, seed=0, full=full)
    else:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def depth_anything_v1_metric_config(full: bool = False):
    """transformers' ZoeDepthConfig of Depth Anything V1 metric indoor (see DINOV2_VARIANTS): DINOv2-L/14 and the
    released neck, or with `full=False` the tiny DINOv2 and neck of the parity tests, with the same structure
    (the backbone's last four layers, readout "ignore", one nyu softplus head, the original's computation)."""
    import reference
    from transformers import ZoeDepthConfig

    from zoedepth_jax.config import TINY_DINOV2

    if full:
        layers = reference.FULL_DINOV2["num_hidden_layers"]
        head = reference.FULL_HEAD
    else:
        layers = TINY_DINOV2["num_hidden_layers"]
        head = reference.TINY_HEAD
    backbone = reference.dinov2_config(
        full,
        out_indices=list(range(layers - 3, layers + 1)),  # 21..24 at full size
        reshape_hidden_states=False,
        interpolate_offset=DINOV2_INTERPOLATE_OFFSET,
    )
    return ZoeDepthConfig(
        backbone_config=backbone,
        backbone_hidden_size=backbone.hidden_size,
        readout_type="ignore",
        depth_anything_dpt=True,
        **head,
        **reference.VARIANTS["nyu"],
    )


def load_transformers_depth_model(folder: Path):
    """transformers' model of a checkpoint folder, by its model_type (ZoeDepthForDepthEstimation or
    DepthAnythingForDepthEstimation), in eval mode; a Depth Anything V1 metric checkpoint (`depth_anything_dpt` in
    its config.json) patched to compute as the original (see DINOV2_VARIANTS)."""
    import json

    import transformers

    config = json.loads((Path(folder) / "config.json").read_text())
    classes = {
        "zoedepth": transformers.ZoeDepthForDepthEstimation,
        "depth_anything": transformers.DepthAnythingForDepthEstimation,
    }
    if config.get("model_type") not in classes:
        raise ValueError(f"model_type {config.get('model_type')!r}: expected one of {sorted(classes)}")
    model = classes[config["model_type"]].from_pretrained(folder).eval()
    if config.get("depth_anything_dpt"):
        import reference

        reference.reproduce_depth_anything_v1(model)
    return model


def build_depth_anything_v1_metric(folder: Path, seed: int = 0, full: bool = False):
    """transformers' ZoeDepthForDepthEstimation of `depth_anything_v1_metric_config`, re-drawn as the parity tests
    re-draw theirs (`reference.redraw`) and saved with `save_pretrained`; returned in eval mode."""
    import reference
    import torch
    from transformers import ZoeDepthForDepthEstimation

    torch.manual_seed(seed)
    model = ZoeDepthForDepthEstimation(depth_anything_v1_metric_config(full)).eval()
    reference.redraw(model, seed)
    model.save_pretrained(folder)
    return model


def add_model_and_input_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --runs, --batch, --height, --width and --json, as xla_kernels.py and openvino_stages.py take."""
    parser.add_argument("--checkpoint", type=Path, help="a save_pretrained folder; built (nyu-kitti, full) if absent")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--json", type=Path)


def checkpoint_and_images(args: argparse.Namespace, scratch: Path) -> tuple[Path, np.ndarray]:
    """The checkpoint folder (`--checkpoint`, built there when it holds no config.json, or in `scratch` when not
    given) and the input images [B, 3, H, W] float32."""
    import reference

    folder = args.checkpoint
    if folder is None or not (folder / "config.json").exists():
        folder = folder or scratch / "checkpoint"
        build_checkpoint(folder)
    return folder, reference.test_images(args.batch, args.height, args.width, seed=1)


def relative_errors(depth: np.ndarray, reference_depth: np.ndarray) -> dict[str, float]:
    """Per pixel |depth - reference| / reference, its median and max (depth is positive)."""
    reference_depth = np.asarray(reference_depth, np.float64)
    error = np.abs(np.asarray(depth, np.float64) - reference_depth) / reference_depth
    return {"median": float(np.median(error)), "max": float(error.max())}


def errors_to_image_max(depth: np.ndarray, reference_depth: np.ndarray) -> dict[str, float] | str:
    """For relative depth (inverse depth from a ReLU: zero, or near it, on part of the image, where a per-pixel
    relative error is undefined or meaningless): per pixel |depth - reference| / the reference's max over the same
    image, its median and max over the batch [B, H, W]. A description instead when a reference image is zero
    everywhere (no scale to measure against)."""
    reference_depth = np.asarray(reference_depth, np.float64)
    scale = reference_depth.max(axis=(-2, -1), keepdims=True)
    if not (scale > 0).all():
        return "reference depth is zero everywhere in an image"
    error = np.abs(np.asarray(depth, np.float64) - reference_depth) / scale
    return {"median": float(np.median(error)), "max": float(error.max())}


def machine_facts() -> dict:
    """The CPU (model, core counts, the ISA flags that decide bf16 speed) and memory, from /proc."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = set(re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE).group(1).split())
    cores = set(re.findall(r"^physical id\s*:\s*(\d+)\s*$.*?^core id\s*:\s*(\d+)", cpuinfo, re.MULTILINE | re.DOTALL))
    memory_kib = int(re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1))
    return {
        "cpu_model": re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE).group(1),
        "logical_cpus": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "cpu_flags": {flag: flag in flags for flag in ("amx_tile", "amx_bf16", "avx512_bf16", "avx512f")},
        "memory_total_gib": memory_kib / 2**20,
    }


def commit() -> str | None:
    """The checkout's commit hash (with "+changes" when the tree differs from it), or None outside git."""

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    try:
        head, changes = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.strip() + ("+changes" if changes.strip() else "")


def process_memory_mib() -> dict[str, float]:
    """This process's resident memory now (VmRSS) and its peak so far (VmHWM), in MiB, from /proc/self/status."""
    status = Path("/proc/self/status").read_text()
    return {
        name: int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024
        for name, field in (("rss", "VmRSS"), ("peak", "VmHWM"))
    }


def timed(run: Callable[[], object], runs: int, calls: int = 1) -> list[float]:
    """Seconds per call of `run` (which returns when the device is done), for each of `runs` timed runs of
    `calls` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        times.append((time.perf_counter() - start) / calls)
    return times
