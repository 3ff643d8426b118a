"""zoedepth-jax against the CPU runtimes a user could pick instead, on the same model, input and machine.

    python benchmarks/cpu_peers.py [--variant nyu-kitti] [--height 384 --width 512] [--batch-sizes 1,4]
                                   [--runs 5] [--configs jax_fp32,openvino_f32,...] [--memory-budget-gib 16]
                                   [--json FILE]
    python benchmarks/cpu_peers.py --quick [--variant ...] [--json FILE]    # tiny test model: checks the script

Models (`--variant`), each built at its released size with re-drawn weights through transformers and saved with
`save_pretrained` (benchmarks/common.py); every configuration loads that folder:

    nyu, kitti, nyu-kitti   ZoeDepth (transformers' ZoeDepthForDepthEstimation): BEiT-L/16 at 384, neck
                            256/512/1024/1024, one or two metric heads; input 384x512 (the Intel processor's size)
    da-v2-relative          Depth Anything V2 Large (DepthAnythingForDepthEstimation): DINOv2-L/14, layers 5, 12,
                            18, 24, neck 256/512/1024/1024, fusion 256; relative inverse depth
    da-v2-metric            the same with the metric head, max_depth 20 (the indoor models)
    da-v1-metric            Depth Anything V1 metric indoor: ZoeDepthForDepthEstimation on DINOv2-L/14 (its last
                            four layers, the CLS token dropped, neck 256/512/1024/1024, one nyu head), computing as
                            the original (config.json's depth_anything_dpt and interpolate_offset for zoedepth-jax;
                            the transformers model patched by tests/reference.py's reproduce_depth_anything_v1,
                            since transformers' ZoeDepth cannot run the readout "ignore" the model uses)

The DINOv2 models run at their native input size, 518 pixels on the long side, both sides multiples of 14: 392x518
by default (a 3:4 landscape image, 28x37 patches; the V1 metric configs' size).

Configurations:

    jax_fp32, jax_bf16          zoedepth_jax.from_pretrained (dtype bf16 for the second), then
                                jax.jit(model.apply).lower(variables, x).compile(); input NHWC [B, H, W, 3]
    torch_eager_fp32, _bf16     the transformers model of the checkpoint's model_type under torch.no_grad(); bf16
                                with torch.autocast("cpu", dtype=torch.bfloat16), depth cast back to float32
    torch_compile_fp32, _bf16   torch.compile of that model (bf16: compiled model called under autocast)
    openvino_default, _f32      openvino.convert_model of that model with the input as example (static shape; when
                                the TorchScript trace fails, of its torch.export program, the failed trace in the
                                convert time), compiled for "CPU" with the default config (bf16 on CPUs that have it)
                                and with the inference precision hint f32
    onnxruntime                 torch.onnx.export of that model (the dynamo exporter; the TorchScript one,
                                dynamo=False, when that fails), CPUExecutionProvider, ORT_ENABLE_ALL
    onnxruntime_jax2onnx        zoedepth-jax's own ONNX graph (zoedepth_jax.inference.onnx_export: jax2onnx, the
                                router in the graph), the same ONNX Runtime InferenceSession options; input NHWC

zoedepth-jax runs ZoeDepth with two heads (nyu-kitti) with routing="batch", transformers' rule (one head for the
whole batch), so that its depth is comparable at batch > 1; both routings compute both heads, so the choice does
not change the timing (the single-head models take the default, there is nothing to route). The traced graphs
(OpenVINO, the TorchScript ONNX export) freeze the head transformers picked for the example input (its `.item()`
on the domain vote): the script traces with the very input it times, so their depth is comparable, but they
compute one head where zoedepth-jax computes both. zoedepth-jax's ONNX graph routes each image by its own logits
(routing="per_image", the only routing it exports): its depth matches the others where every image of the batch
picks the head the batch vote picks.

Method
- Each configuration runs in a fresh worker process per batch size (`--worker`), which loads and compiles,
  runs one warm-up forward, then waits blocked on stdin (no CPU) for commands, one JSON line each: "run" (one
  timed forward, measured inside the worker, output converted to numpy included) and "report" (peak RSS from
  VmHWM in /proc/self/status, which ru_maxrss is not: Linux carries that across fork + exec; the last depth
  [B, H, W] is saved to a .npy for the error computation). The worker's stdout is the protocol; anything a
  library prints goes to its log. A worker's peak covers its whole life: the OpenVINO conversion and the ONNX
  export happen in it.
- Interleaving: round r runs every worker of a group once, one after the other (SETTLE_S apart), for `--runs`
  rounds, so that machine noise hits all configurations alike; reported: median, min and max seconds per
  batch, images/s, speedup (anchor median / median), compile time, setup time (load, compile and warm-up),
  resident memory after the warm-up and peak, depth error.
- Memory: the full-size workers' peaks differ by an order of magnitude, from PyTorch eager's to ONNX Runtime's
  (its TorchScript export holds every intermediate tensor of the forward; see MEMORY_ESTIMATES), and all nine at
  once would need more memory than most machines have. Workers therefore run in groups, each opened by its own
  torch_eager_fp32 (the anchor, always measured even when --configs leaves it out). Workers of a group start one
  at a time, so that a compile time is never measured while another worker compiles and only one worker is ever
  at its load-time peak. Taken in the order of --configs, the next configuration joins the current group while
  the estimated peaks of the group (MEMORY_ESTIMATES, anchor included) with its own sum to at most
  --memory-budget-gib, else it opens the next group: a bound that holds even if every worker stayed at its peak,
  and a plan fixed before anything runs. A configuration whose estimate does not fit the budget even beside the
  anchor's alone is skipped and reported as such (raise the budget to run it): at the defaults on the full-size
  model that is onnxruntime, and the OpenVINO configurations at batch 4; --memory-budget-gib 22 admits
  onnxruntime at batch 1. Each configuration's speedup and depth error are against the anchor of its own group.
- Compile time: JAX lower + compile; torch.compile the first call (with an empty inductor cache of the worker's
  own, so that it is a cold compile, not what an earlier run left on disk); OpenVINO convert + compile; ONNX
  Runtime export + InferenceSession creation. Errors: per pixel |depth - ref| / ref against torch_eager_fp32's
  depth, median and max. Relative depth (da-v2-relative: inverse depth out of a ReLU, zero or near it where the
  scene is far, so that a per-pixel ratio is undefined or meaningless) is measured against each image's scale:
  per pixel |depth - ref| / max(ref over that image), median and max (the JSON's settings name the rule).
  "non-finite output" when a configuration returns NaN or inf, which is reported, never a crash. A configuration
  that fails (an export, a compile) is reported with its error and the others go on; a failing anchor ends the
  run.
- Output: a markdown table on stdout (one row per configuration and batch size; the anchor's row is its first
  group's), progress on stderr, and everything (per-run times, every group's anchor, the machine: CPU model,
  cores, AMX and bf16 flags, load average at start and end; library versions) in --json.

`--quick` runs the tiny test architecture at 128x160 (the DINOv2 models at 98x126, 7x9 patches), batch 2 (one
batch size: the workers' start-up, not the model, takes the time), 2 runs, without the torch.compile
configurations: inductor takes minutes to compile even the tiny model on a few cores (name them in --configs to
include them). Needs the `bench` extra.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import importlib.metadata
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import (
    ARCHITECTURES,
    BEIT_VARIANTS,
    RELATIVE_VARIANTS,
    VARIANTS,
    build_checkpoint,
    errors_to_image_max,
    load_transformers_depth_model,
    machine_facts,
    relative_errors,
)

BENCHMARKS = Path(__file__).resolve().parent
ANCHOR = "torch_eager_fp32"
CONFIGS = (
    "jax_fp32",
    "jax_bf16",
    "torch_eager_fp32",
    "torch_eager_bf16",
    "torch_compile_fp32",
    "torch_compile_bf16",
    "openvino_default",
    "openvino_f32",
    "onnxruntime",
    "onnxruntime_jax2onnx",
)
QUICK_CONFIGS = tuple(c for c in CONFIGS if not c.startswith("torch_compile"))
FULL = {"height": 384, "width": 512, "batch_sizes": "1,4", "runs": 5}
QUICK = {"height": 128, "width": 160, "batch_sizes": "2", "runs": 2}
# The DINOv2 models' input: 518 pixels on the long side (their pretraining and released size, 37 patches of 14) and
# a 3:4 landscape aspect, 392x518 (28x37 patches, the size the Depth Anything V1 metric configs set); quick: 7x9
# patches, an odd grid as at full size.
DINOV2_FULL = {"height": 392, "width": 518}
DINOV2_QUICK = {"height": 98, "width": 126}
# Pause before each timed run: a worker's thread pool spins a little after its run returns (ONNX Runtime's does),
# which would take cores from the next worker's run.
SETTLE_S = 0.1

# Estimated peak resident memory of a worker: LIBRARIES_MIB + copies x the fp32 checkpoint + batch x pixels x bytes
# per pixel, as (copies, bytes per pixel). Upper bounds fitted to the full-size peaks at batch 1 and 384x512 (the
# peak_rss_mib of the JSON files, RESULTS.md), so that a group planned with them fits the budget. The tracers
# behind the OpenVINO conversion and the ONNX export hold every intermediate tensor of the forward at once, hence
# their large per-pixel figures, which grow with the batch: the traced graphs fix the batch size (reshaping a
# batch-1 trace fails), so each batch size is traced anew. The bf16 and torch.compile figures are guesses with
# margin (autocast caches bf16 copies of the weights, inductor's compilation holds more); the report lists each
# estimate beside the measured peak, and the coordinator warns when a peak exceeds its estimate.
MEMORY_ESTIMATES = {
    "jax_fp32": (2.0, 2800),
    "jax_bf16": (2.5, 2800),
    "torch_eager_fp32": (1.0, 2800),
    "torch_eager_bf16": (1.5, 2800),
    "torch_compile_fp32": (2.0, 2800),
    "torch_compile_bf16": (2.5, 2800),
    "openvino_default": (2.0, 19400),
    "openvino_f32": (2.0, 24100),
    "onnxruntime": (3.0, 76200),
    "onnxruntime_jax2onnx": (3.0, 19400),  # a guess with margin: conversion traces symbolically, holds no tensors
}
# The same for the DINOv2-L/14 models (Depth Anything V2 Large, V1 metric), whose checkpoints are about the size of
# BEiT-L ZoeDepth's (335-345 M parameters; the copies scale with the checkpoint read from disk). Per pixel they hold
# more: 1/196 tokens per pixel against 1/256 (+31% for every token tensor of the backbone, and the neck's maps at
# 1/3.5 of the input against 1/4: +31%), attention scores quadratic in the tokens per image (+82% per pixel at
# 392x518 against 384x512). The per-pixel figures are BEiT's x 1.5, and x 2 for OpenVINO's tracer
# (attention-score tensors are a large share of what it holds), rounded up. onnxruntime: these models have no
# data-dependent head choice, and torch.onnx's dynamo exporter exports them (the quick runs say so), which holds no
# traced intermediates: the figure of onnxruntime_jax2onnx, a guess with margin. Measured at full size
# (392x518, batch 1): peaks of jax_fp32 1887 and 2034 MiB, torch_eager_fp32 2208 and 2713 MiB (da-v2-relative,
# da-v1-metric), within these estimates (4396 and 3117 MiB).
DINOV2_MEMORY_ESTIMATES = {
    "jax_fp32": (2.0, 4200),
    "jax_bf16": (2.5, 4200),
    "torch_eager_fp32": (1.0, 4200),
    "torch_eager_bf16": (1.5, 4200),
    "torch_compile_fp32": (2.0, 4200),
    "torch_compile_bf16": (2.5, 4200),
    "openvino_default": (2.0, 38800),
    "openvino_f32": (2.0, 48200),
    "onnxruntime": (3.0, 38800),
    "onnxruntime_jax2onnx": (3.0, 38800),
}
LIBRARIES_MIB = 1024


# ---------------------------------------------------------------------------------------------------- worker


@dataclasses.dataclass
class Prepared:
    """A configuration ready to run: `run()` returns the depth [B, H, W] as float32 numpy."""

    run: Callable[[], np.ndarray]
    compile_s: float | None
    details: dict


def checkpoint_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def load_transformers_model(folder: Path):
    """transformers' model of the checkpoint (common.load_transformers_depth_model)."""
    return load_transformers_depth_model(folder)


def jax_routing(folder: Path) -> str:
    """transformers' rule, one head for the whole batch, where there is a choice: ZoeDepth with two metric heads.
    Every other model has one head and takes from_pretrained's default."""
    config = checkpoint_config(folder)
    two_heads = config["model_type"] == "zoedepth" and len(config.get("bin_configurations") or []) > 1
    return "batch" if two_heads else "per_image"


def prepare_jax(folder: Path, images: np.ndarray, bf16: bool) -> Prepared:
    import jax
    import jax.numpy as jnp

    from zoedepth_jax import from_pretrained

    dtype = jnp.bfloat16 if bf16 else jnp.float32
    model, variables = from_pretrained(folder, dtype=dtype, routing=jax_routing(folder))
    x = jnp.asarray(images.transpose(0, 2, 3, 1))  # [B, H, W, 3]
    start = time.perf_counter()
    compiled = jax.jit(model.apply).lower(variables, x).compile()
    compile_s = time.perf_counter() - start
    return Prepared(
        run=lambda: np.asarray(compiled(variables, x).predicted_depth, np.float32),
        compile_s=compile_s,
        details={"compile_covers": "lower + compile", "devices": [str(d) for d in jax.devices()]},
    )


def prepare_torch(folder: Path, images: np.ndarray, bf16: bool, compile_model: bool) -> Prepared:
    import torch

    model = load_transformers_model(folder)
    target = torch.compile(model) if compile_model else model
    x = torch.from_numpy(images)  # [B, 3, H, W]

    @torch.no_grad()
    def run() -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return target(x).predicted_depth.float().numpy()

    details = {"torch_threads": torch.get_num_threads()}
    if not compile_model:
        return Prepared(run, None, details)
    start = time.perf_counter()
    run()  # torch.compile compiles on the first call
    return Prepared(run, time.perf_counter() - start, details | {"compile_covers": "first call"})


def prepare_openvino(folder: Path, images: np.ndarray, precision_f32: bool) -> Prepared:
    import openvino as ov
    import torch

    model = load_transformers_model(folder)
    example = torch.from_numpy(images)
    fallback = {}
    start = time.perf_counter()
    with torch.no_grad():  # the tracer holds every intermediate tensor; without autograd's records on top
        try:
            ov_model = ov.convert_model(model, example_input=example)
        except Exception as error:  # e.g. the Depth Anything V1 model's position-embedding resize, whose scale
            # factors the TorchScript tracer turns into tensors: torch.export traces with the shapes as constants
            fallback["torchscript_trace_error"] = describe(error)
            try:
                ov_model = ov.convert_model(torch.export.export(model, (example,)))
            except Exception as export_error:
                raise RuntimeError(f"trace: {describe(error)}; torch.export: {describe(export_error)}") from None
            fallback["converter"] = "torch.export"
    ov_model.reshape(list(images.shape))  # static [B, 3, H, W]
    convert_s = time.perf_counter() - start
    config = {ov.properties.hint.inference_precision: ov.Type.f32} if precision_f32 else {}
    start = time.perf_counter()
    compiled = ov.Core().compile_model(ov_model, "CPU", config)  # copies the weights: the torch model may go
    compile_s = time.perf_counter() - start
    request = compiled.create_infer_request()
    # the exported program's one output (predicted_depth) carries no name
    depth_output = compiled.output(0) if fallback else compiled.output("predicted_depth")
    return Prepared(
        # a copy: the result aliases the request's output buffer, which the next inference overwrites
        run=lambda: np.array(request.infer({0: images})[depth_output], np.float32),
        compile_s=convert_s + compile_s,
        details=fallback
        | {
            "compile_covers": "convert + compile",
            "convert_s": convert_s,
            "compile_model_s": compile_s,
            "config": {str(k): str(v) for k, v in config.items()},
            "inference_precision": str(compiled.get_property(ov.properties.hint.inference_precision)),
            "performance_mode": str(compiled.get_property(ov.properties.hint.performance_mode)),
            "inference_num_threads": compiled.get_property(ov.properties.inference_num_threads),
            "input_shape": str(compiled.input(0).partial_shape),
        },
    )


def export_onnx(folder: Path, images: np.ndarray, path: Path) -> dict:
    """Exports the transformers model with the dynamo exporter, or the TorchScript one when that fails."""
    import torch

    model = load_transformers_model(folder)
    arguments = dict(input_names=["pixel_values"], output_names=["predicted_depth"])
    details = {}
    start = time.perf_counter()
    try:
        torch.onnx.export(model, (torch.from_numpy(images),), path, dynamo=True, **arguments)
        details["exporter"] = "dynamo"
    except Exception as error:  # e.g. transformers' data-dependent head choice under torch.export
        details["dynamo_export_error"] = describe(error)
        details["dynamo_export_failed_after_s"] = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():  # the tracer holds every intermediate tensor; without autograd's records on top
            torch.onnx.export(model, (torch.from_numpy(images),), path, dynamo=False, **arguments)
        details["exporter"] = "torchscript (dynamo=False)"
    details["export_s"] = time.perf_counter() - start
    return details


def onnxruntime_prepared(path: Path, pixel_values: np.ndarray, details: dict, covers: str) -> Prepared:
    """An ONNX Runtime CPU InferenceSession (ORT_ENABLE_ALL) over the graph at `path`, run on `pixel_values`; its
    compile time is the export's (`details["export_s"]`) plus the InferenceSession's creation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    start = time.perf_counter()
    runner = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    details["session_s"] = time.perf_counter() - start
    details["compile_covers"] = covers
    # The depth output: "predicted_depth", or "predicted_relative_depth" in zoedepth-jax's graph of a relative model.
    (depth_output,) = [output.name for output in runner.get_outputs() if output.name.endswith("depth")]
    return Prepared(
        run=lambda: runner.run([depth_output], {"pixel_values": pixel_values})[0],
        compile_s=details["export_s"] + details["session_s"],
        details=details,
    )


def prepare_onnxruntime(folder: Path, images: np.ndarray, scratch: Path) -> Prepared:
    path = scratch / "model.onnx"
    details = export_onnx(folder, images, path)  # the torch model is freed on return
    return onnxruntime_prepared(path, images, details, "export + InferenceSession creation")


def prepare_onnxruntime_jax2onnx(folder: Path, images: np.ndarray, scratch: Path) -> Prepared:
    from zoedepth_jax import from_pretrained
    from zoedepth_jax.inference.onnx_export import export_onnx as export_jax_onnx

    path = scratch / "zoedepth_jax.onnx"
    start = time.perf_counter()
    model, variables = from_pretrained(folder)
    export_jax_onnx(model, variables, path, height=images.shape[2], width=images.shape[3])
    details = {"export_s": time.perf_counter() - start, "exporter": "zoedepth_jax.inference.onnx_export (jax2onnx)"}
    del model, variables
    release_freed_memory()
    pixel_values = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # [B, H, W, 3]
    return onnxruntime_prepared(path, pixel_values, details, "load + export + InferenceSession creation")


PREPARE = {
    "jax_fp32": lambda folder, images, scratch: prepare_jax(folder, images, bf16=False),
    "jax_bf16": lambda folder, images, scratch: prepare_jax(folder, images, bf16=True),
    "torch_eager_fp32": lambda folder, images, scratch: prepare_torch(folder, images, False, compile_model=False),
    "torch_eager_bf16": lambda folder, images, scratch: prepare_torch(folder, images, True, compile_model=False),
    "torch_compile_fp32": lambda folder, images, scratch: prepare_torch(folder, images, False, compile_model=True),
    "torch_compile_bf16": lambda folder, images, scratch: prepare_torch(folder, images, True, compile_model=True),
    "openvino_default": lambda folder, images, scratch: prepare_openvino(folder, images, precision_f32=False),
    "openvino_f32": lambda folder, images, scratch: prepare_openvino(folder, images, precision_f32=True),
    "onnxruntime": lambda folder, images, scratch: prepare_onnxruntime(folder, images, scratch),
    "onnxruntime_jax2onnx": lambda folder, images, scratch: prepare_onnxruntime_jax2onnx(folder, images, scratch),
}
assert set(PREPARE) == set(CONFIGS) == set(MEMORY_ESTIMATES) == set(DINOV2_MEMORY_ESTIMATES)


def describe(error: BaseException) -> str:
    """The error's type and first line, and those of its root cause when it wraps one."""

    def first_line(e: BaseException) -> str:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch.onnx colours its messages
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines and e.__traceback__ is not None:  # a bare assert: where it failed
            frame = traceback.extract_tb(e.__traceback__)[-1]
            lines = [f"at {frame.filename}:{frame.lineno}"]
        return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]

    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    return first_line(error) + ("" if root is error else f" (caused by {first_line(root)})")


def process_status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def release_freed_memory() -> None:
    """Returns freed heap pages to the system, so that the resident figure the coordinator plans with is what
    the worker keeps (e.g. not the freed torch model of the ONNX Runtime worker)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def worker_main(config: str, folder: Path, images_file: Path, scratch: Path) -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what libraries print (torch.onnx does) goes to the worker's log, not into the protocol

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    images = np.load(images_file)  # [B, 3, H, W] float32
    try:
        start = time.perf_counter()
        prepared = PREPARE[config](folder, images, scratch)
        depth = prepared.run()  # warm-up
        setup_s = time.perf_counter() - start
        release_freed_memory()
    except Exception as error:
        traceback.print_exc()
        send({"error": describe(error)})
        return
    send(
        {
            "compile_s": prepared.compile_s,
            "setup_s": setup_s,
            "rss_after_warmup_mib": process_status_mib("VmRSS"),
            "details": prepared.details,
        }
    )
    while line := sys.stdin.readline():
        command = json.loads(line)["command"]
        if command == "run":
            try:
                start = time.perf_counter()
                depth = prepared.run()
                send({"seconds": time.perf_counter() - start})
            except Exception as error:
                traceback.print_exc()
                send({"error": describe(error)})
                return
        elif command == "report":
            np.save(scratch / "depth.npy", depth)
            send({"peak_rss_mib": process_status_mib("VmHWM"), "finite": bool(np.isfinite(depth).all())})
            return


# ----------------------------------------------------------------------------------------------- coordinator


class WorkerFailed(Exception):
    pass


@dataclasses.dataclass
class Worker:
    """A worker process of one configuration at one batch size, and what it has reported."""

    config: str
    scratch: Path
    estimated_peak_mib: float
    process: subprocess.Popen | None = None
    ready: dict | None = None
    times_s: list[float] = dataclasses.field(default_factory=list)
    report: dict | None = None
    error: str | None = None

    def start(self, folder: Path, images_file: Path) -> None:
        self.scratch.mkdir(parents=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", self.config]
        command += ["--checkpoint", str(folder), "--images", str(images_file), "--scratch", str(self.scratch)]
        # a cache of its own: torch.compile's compile time is a cold one, not what an earlier run left on disk
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(self.scratch / "inductor_cache"))
        with open(self.scratch / "worker.log", "w") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=self.scratch, env=env
            )
        self.ready = self.receive()

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            log_tail = (self.scratch / "worker.log").read_text().strip().splitlines()[-3:]
            raise WorkerFailed(f"worker exited with code {self.process.returncode}: {' / '.join(log_tail)}")
        message = json.loads(line)
        if "error" in message:
            raise WorkerFailed(message["error"])
        return message

    def request(self, command: str) -> dict:
        self.process.stdin.write(json.dumps({"command": command}) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def fail(self, error: WorkerFailed) -> None:
        self.error = str(error)
        print(f"  {self.config} failed: {self.error}", file=sys.stderr, flush=True)
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()

    @property
    def ok(self) -> bool:
        return self.error is None


def memory_estimates(variant: str) -> dict[str, tuple[float, float]]:
    return MEMORY_ESTIMATES if variant in BEIT_VARIANTS else DINOV2_MEMORY_ESTIMATES


def estimated_peak_mib(
    config: str, weights_mib: float, batch: int, height: int, width: int, estimates: dict | None = None
) -> float:
    copies, bytes_per_pixel = (estimates or MEMORY_ESTIMATES)[config]
    return LIBRARIES_MIB + copies * weights_mib + batch * height * width * bytes_per_pixel / 2**20


def run_group(workers: list[Worker], runs: int) -> None:
    """Interleaved rounds over the group's ready workers, then their reports (the workers exit)."""
    for _ in range(runs):
        for worker in workers:
            if worker.ok:
                time.sleep(SETTLE_S)
                try:
                    worker.times_s.append(worker.request("run")["seconds"])
                except WorkerFailed as error:
                    worker.fail(error)
    for worker in workers:
        if worker.ok:
            try:
                worker.report = worker.request("report")
                worker.process.wait()
            except WorkerFailed as error:
                worker.fail(error)


def start_worker(
    config: str, batch: int, group_index: int, estimate_mib: float, folder: Path, images_file: Path, scratch: Path
) -> Worker:
    """Starts a worker and waits until it has compiled and warmed up (or failed, which it records)."""
    worker = Worker(config, scratch / f"b{batch}_g{group_index}_{config}", estimate_mib)
    try:
        worker.start(folder, images_file)
    except WorkerFailed as error:
        worker.fail(error)
        return worker
    print(
        f"[batch {batch}, group {group_index}] {config} ready: setup {worker.ready['setup_s']:.1f} s, "
        f"resident {worker.ready['rss_after_warmup_mib']:.0f} MiB (estimated peak {estimate_mib:.0f} MiB)",
        file=sys.stderr,
        flush=True,
    )
    return worker


def plan_groups(
    configs: list[str], estimates: dict[str, float], budget_mib: float
) -> tuple[list[list[str]], list[str]]:
    """The configurations of one batch size in groups, in the order given, each group to run beside its own
    anchor with their estimated peaks (the anchor's included) summing to at most the budget; and those skipped
    because they do not fit even beside the anchor alone. With nothing else to run, the anchor runs alone."""
    groups: list[list[str]] = []
    skipped: list[str] = []
    for config in configs:
        if config == ANCHOR:
            continue
        if estimates[ANCHOR] + estimates[config] > budget_mib:
            skipped.append(config)
        elif groups and estimates[ANCHOR] + sum(estimates[c] for c in groups[-1]) + estimates[config] <= budget_mib:
            groups[-1].append(config)
        else:
            groups.append([config])
    return groups or [[]], skipped


def run_batch(batch: int, configs: list[str], args, folder: Path, images_file: Path, scratch: Path) -> list[dict]:
    """Every configuration at one batch size, in groups that fit the memory budget; one result each."""
    weights_mib = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20
    table = memory_estimates(args.variant)
    estimates = {
        c: estimated_peak_mib(c, weights_mib, batch, args.height, args.width, table) for c in [ANCHOR, *configs]
    }
    groups, skipped = plan_groups(configs, estimates, args.memory_budget_gib * 1024)
    results = []
    for config in skipped:
        reason = (
            f"skipped: estimated peak {estimates[config] / 1024:.1f} GiB beside the anchor's "
            f"{estimates[ANCHOR] / 1024:.1f} GiB exceeds --memory-budget-gib {args.memory_budget_gib:g}"
        )
        print(f"[batch {batch}] {config} {reason}", file=sys.stderr, flush=True)
        results.append({"config": config, "batch": batch, "group": None, "anchor": False, "status": "skipped"})
        results[-1] |= {"error": reason, "estimated_peak_mib": estimates[config]}
    for group_index, members in enumerate(groups, start=1):
        workers = []
        for config in [ANCHOR, *members]:
            workers.append(start_worker(config, batch, group_index, estimates[config], folder, images_file, scratch))
            if not workers[0].ok:
                raise SystemExit(f"the reference configuration {ANCHOR} failed: {workers[0].error}")
        run_group(workers, args.runs)
        results += summarize_group(workers, batch, group_index, args.variant in RELATIVE_VARIANTS)
    return results


def summarize_group(group: list[Worker], batch: int, group_index: int, relative_depth: bool = False) -> list[dict]:
    anchor = group[0]
    if not anchor.ok:
        raise SystemExit(f"the reference configuration {ANCHOR} failed: {anchor.error}")
    anchor_median = statistics.median(anchor.times_s)
    reference_depth = np.load(anchor.scratch / "depth.npy")  # [B, H, W]
    results = []
    for worker in group:
        result = {"config": worker.config, "batch": batch, "group": group_index, "anchor": worker is anchor}
        result["estimated_peak_mib"] = worker.estimated_peak_mib
        if worker.ready is not None:
            result |= {key: worker.ready[key] for key in ("compile_s", "setup_s", "rss_after_warmup_mib", "details")}
        if not worker.ok:
            results.append(result | {"status": "failed", "error": worker.error})
            continue
        median = statistics.median(worker.times_s)
        result |= {
            "status": "ok",
            "times_s": worker.times_s,
            "median_s": median,
            "min_s": min(worker.times_s),
            "max_s": max(worker.times_s),
            "images_per_s": batch / median,
            "speedup_vs_torch_eager_fp32": anchor_median / median,
            "peak_rss_mib": worker.report["peak_rss_mib"],
        }
        if worker is not anchor:
            depth = np.load(worker.scratch / "depth.npy")
            errors = errors_to_image_max if relative_depth else relative_errors
            result["depth_error_vs_torch_eager_fp32"] = (
                errors(depth, reference_depth) if worker.report["finite"] else "non-finite output"
            )
        if result["peak_rss_mib"] > worker.estimated_peak_mib:
            print(
                f"  note: {worker.config} peaked at {result['peak_rss_mib']:.0f} MiB, above its estimate of "
                f"{worker.estimated_peak_mib:.0f} MiB (MEMORY_ESTIMATES)",
                file=sys.stderr,
                flush=True,
            )
        results.append(result)
    return results


def write_checkpoint_and_inputs(folder: str, variant: str, full: str, batch_sizes: str, height: str, width: str):
    """Run in a subprocess, so that the coordinator never holds a model: the checkpoint, and per batch size
    the input images [B, 3, H, W] (reference.test_images, seed = batch size) as images_{B}.npy."""
    import reference

    build_checkpoint(Path(folder) / "checkpoint", variant, full=full == "full")
    for batch in map(int, batch_sizes.split(",")):
        np.save(Path(folder) / f"images_{batch}.npy", reference.test_images(batch, int(height), int(width), batch))


def library_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    packages = (
        "jax",
        "jaxlib",
        "flax",
        "numpy",
        "torch",
        "transformers",
        "openvino",
        "onnxruntime",
        "onnx",
        "onnxscript",
        "jax2onnx",
    )
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def error_text(error: dict | str | None) -> str:
    if error is None:
        return "reference"
    return error if isinstance(error, str) else f"{error['median']:.1e} / {error['max']:.1e}"


def markdown_table(results: list[dict], relative_depth: bool = False) -> str:
    error_header = "depth err. / image max, median / max" if relative_depth else "depth rel. err. median / max"
    lines = [
        "| config | batch | group | median s | min s | max s | images/s | vs torch eager fp32 | compile s "
        f"| peak RSS MiB | {error_header} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    not_run = []
    for r in sorted(results, key=lambda r: (r["batch"], CONFIGS.index(r["config"]), r["group"] or 0)):
        if r["anchor"] and r["group"] > 1:
            continue  # the table shows each batch size's first anchor; the others are in the JSON
        if r["status"] != "ok":
            lines.append(f"| {r['config']} | {r['batch']} | {r['group'] or ''} | {r['status']} | | | | | | | |")
            not_run.append(f"- {r['config']}, batch {r['batch']}: {r['error']}")
            continue
        compile_s = "" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['group']} | {r['median_s']:.3g} | {r['min_s']:.3g} "
            f"| {r['max_s']:.3g} | {r['images_per_s']:.3g} | {r['speedup_vs_torch_eager_fp32']:.2f}x "
            f"| {compile_s} | {r['peak_rss_mib']:.0f} | {error_text(r.get('depth_error_vs_torch_eager_fp32'))} |"
        )
    anchors = [f"batch {r['batch']} group {r['group']}: {r['median_s']:.3g} s" for r in results if r["anchor"]]
    lines += [
        "",
        "Speedup and depth error are against torch_eager_fp32 measured in the same group "
        f"(its medians: {'; '.join(anchors)}).",
    ]
    return "\n".join(lines + (["", "Not run:", *not_run] if not_run else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="nyu-kitti", choices=VARIANTS)
    parser.add_argument(
        "--height",
        type=int,
        help=f"default {FULL['height']} ({QUICK['height']} with --quick); for the da-* variants "
        f"{DINOV2_FULL['height']} ({DINOV2_QUICK['height']})",
    )
    parser.add_argument(
        "--width",
        type=int,
        help=f"default {FULL['width']} ({QUICK['width']} with --quick); for the da-* variants "
        f"{DINOV2_FULL['width']} ({DINOV2_QUICK['width']})",
    )
    parser.add_argument(
        "--batch-sizes", help=f"comma-separated; default {FULL['batch_sizes']} ({QUICK['batch_sizes']})"
    )
    parser.add_argument("--runs", type=int, help=f"timed rounds; default {FULL['runs']} ({QUICK['runs']})")
    parser.add_argument("--configs", help=f"comma-separated subset of: {', '.join(CONFIGS)}")
    parser.add_argument("--memory-budget-gib", type=float, default=16.0, help="for the workers of one group")
    parser.add_argument("--quick", action="store_true", help="the tiny test architecture: a check of the script")
    parser.add_argument("--json", type=Path, help="also write all results here")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.checkpoint, args.images, args.scratch)
        return

    defaults = QUICK if args.quick else FULL
    if args.variant not in BEIT_VARIANTS:
        defaults = defaults | (DINOV2_QUICK if args.quick else DINOV2_FULL)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    configs = args.configs.split(",") if args.configs else list(QUICK_CONFIGS if args.quick else CONFIGS)
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    result = {
        "settings": {
            "variant": args.variant,
            "architecture": "tiny test model" if args.quick else ARCHITECTURES[args.variant],
            "input_hw": [args.height, args.width],
            "batch_sizes": batch_sizes,
            "runs": args.runs,
            "configs": configs,
            "memory_budget_gib": args.memory_budget_gib,
            "rule": "speedup and depth error of each configuration are against torch_eager_fp32 measured in the "
            "same group (fresh processes, interleaved runs)",
            "depth_error": "per pixel |depth - reference| / the reference's max over the same image (relative depth)"
            if args.variant in RELATIVE_VARIANTS
            else "per pixel |depth - reference| / reference",
        },
        "machine": machine_facts(),
        "versions": library_versions(),
        "load_average_start": os.getloadavg(),
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cpu_peers_") as tmp:
        work = Path(tmp)
        size = "tiny" if args.quick else "full"
        code = "import sys, cpu_peers; cpu_peers.write_checkpoint_and_inputs(*sys.argv[1:])"
        inputs = [str(work), args.variant, size, args.batch_sizes, str(args.height), str(args.width)]
        subprocess.run([sys.executable, "-c", code, *inputs], check=True, cwd=BENCHMARKS)
        results = []
        for batch in batch_sizes:
            results += run_batch(batch, configs, args, work / "checkpoint", work / f"images_{batch}.npy", work)
    result["load_average_end"] = os.getloadavg()
    result["total_s"] = time.perf_counter() - start
    result["results"] = results
    print(markdown_table(results, args.variant in RELATIVE_VARIANTS))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
