"""One call that answers the first questions on a GPU or TPU machine: does zoedepth-jax agree with transformers
there, how much does bf16 lose, how fast is it against PyTorch, and does cuDNN's fused attention take ZoeDepth's
relative-position bias.

    python benchmarks/accelerator_check.py [--checkpoint DIR] [--json FILE] [--markdown FILE] [--budget-s 420]
    python benchmarks/accelerator_check.py --dry-run [--json FILE] [--markdown FILE]   # CPU, tiny model

The model is the released nyu-kitti architecture (BEiT-L/16 at 384, neck 256/512/1024/1024) with re-drawn weights
(`common.build_checkpoint`), built in `--checkpoint` when that folder holds no config.json (so that a second run
reuses it), else in a temporary folder. zoedepth-jax is traced with the "plain" forms (`traced_forms("plain")`,
what a GPU or TPU traces by default) and `routing="batch"` (transformers' rule, so that depth is comparable at
batch > 1). transformers runs on the same device when torch has it (CUDA), else on the CPU as the parity
reference only.

Parts, in the order they run (a part whose estimated time does not fit in what is left of `--budget-s` is
skipped and listed as such; the estimates use the compile and run times measured so far):
  parity      fp32 at batch 2, 384x512, TF32 off on both sides (torch's matmul and cuDNN flags,
              `jax.default_matmul_precision("highest")`): max per-pixel relative depth error against transformers,
              held to tests/tolerances.py FP32_RELATIVE.
  bf16        zoedepth-jax bf16 (`from_pretrained(..., dtype=bfloat16)`) and PyTorch autocast bf16 against the
              fp32 reference of the parity part: median and max per-pixel relative error.
  attention   `jax.nn.dot_product_attention` with the relative-position bias at BEiT-L sizes (16 heads, 769
              tokens, head dim 64, bf16): implementation="cudnn" with the bias as [1, heads, N, N] and
              [B, heads, N, N], in bf16 and fp32, and with the tokens padded to a multiple of 64 (padded keys
              masked through the bias), then implementation=None (XLA's choice), against the model's plain form
              (`beit.attention_step`); errors against an fp32 run of the plain form on the same bf16 inputs.
              Any exception is caught and its text reported.
  throughput  images/s (median of --runs after compile and a warm-up) at batch 16, 8 and 1 for zoedepth-jax
              fp32 and bf16, PyTorch eager fp32 and autocast bf16, torch.compile fp32 and bf16 (default mode,
              static shapes); speed against PyTorch eager fp32 and against the fastest PyTorch configuration at
              the same batch. fp32 runs with TF32 off on both sides, bf16 with the libraries' defaults.
              Batch 16 first (the targets' batch), torch.compile after the eager runs: it compiles longest.
  backbone    the BEiT backbone alone, jitted, bf16 at batch 16: its matmul FLOPs (q, k, v and output
              projections, MLP, attention scores and context, patch embedding; counted from the config) over
              its median time, as a share of the chip's dense bf16 peak (BF16_PEAK_TFLOPS).

Targets, reported as met / not met (set for H100 and H200; other devices show the same figures): parity error
<= 1e-4; bf16 median error <= BF16_DEPTH_MEDIAN_RELATIVE; zoedepth-jax bf16 at batch 16 >= 1.2x the fastest
PyTorch configuration; backbone matmuls >= 40% of the bf16 peak; cuDNN attention runs with the bias and stays
within ATTENTION_ERROR_FACTOR of the plain bf16 form's error.

Output: progress on stderr; on stdout the markdown (the verdict table, then throughput and attention tables,
ready for RESULTS.md), also written to --markdown; everything in --json (sections: settings, environment,
parity, bf16_error, attention, throughput, backbone, verdict, skipped, timing).

`--dry-run` checks the script on the CPU: the tiny test model at 64x96, batch 2, 2 runs, the cuDNN
variants reported as skipped (not a GPU) while the plain and XLA attention forms are still compared, and
torch.compile with its "eager" backend at one batch and fp32 only (inductor takes minutes on a few cores), so
that every path that needs no GPU runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# JAX and PyTorch share the GPU: JAX's default of reserving most of its memory at start would leave torch none.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_checkpoint, commit, machine_facts, relative_errors, timed  # noqa: E402  (puts tests/ on the path)
from cpu_peers import library_versions  # noqa: E402
from tolerances import BF16_DEPTH_MEDIAN_RELATIVE, FP32_RELATIVE, relative_error  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one mode runs: input size, batches, timed runs, and the attention part's batch and inner calls."""

    full: bool
    height: int
    width: int
    parity_batch: int
    batch_sizes: tuple[int, ...]  # in the order they are measured: the targets' batch first
    runs: int
    attention_batch: int
    attention_calls: int  # calls per timed run: one attention call is too short to time alone on a GPU
    compile_estimate_s: float  # before any compile was measured
    torch_compile_estimate_s: float  # a torch.compile configuration's first two calls
    seconds_per_image_estimate: float  # before any forward was measured
    attention_reserve_s: float  # kept for the attention part, which runs last


FULL = Sizes(True, 384, 512, 2, (16, 8, 1), 10, 16, 20, 60.0, 150.0, 0.1, 45.0)
# One batch: each compile of even the tiny model takes seconds on a small CPU, and a second batch size runs the
# same code again.
DRY = Sizes(False, 64, 96, 2, (2,), 2, 2, 2, 20.0, 30.0, 0.1, 10.0)
# The parts within 8 minutes on the device, with room for the imports, a part that overruns its estimate, and
# the output.
DEFAULT_BUDGET_S = 400.0
TIME_LIMIT_S = 480.0  # what the check may take on a GPU or TPU machine

SPEEDUP_TARGET = 1.2  # zoedepth-jax bf16 at the largest batch, against the fastest PyTorch configuration
MATMUL_FRACTION_TARGET = 0.40  # the backbone's matmul FLOP rate as a share of the dense bf16 peak
TARGET_DEVICES = ("H100", "H200")  # the targets are set for these; elsewhere the figures are reported as they are
# Dense (not sparse) bf16 tensor peaks from the vendors' data sheets, in TFLOP/s, matched in this order as a
# substring of `jax.devices()[0].device_kind`.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5", 459.0),  # v5p
    ("TPU v6 lite", 918.0),
)
# cuDNN's fused attention takes the bias in the inputs' dtype (bf16) and rescales its running softmax in blocks,
# so its error against the fp32 reference may exceed the plain bf16 form's (bias in fp32, weights rounded once)
# by a small factor; a wrong bias layout (transposed, dropped, broadcast over the wrong axis) gives errors of the
# size of the output itself, far above it. The script checks that separation with the plain form and a
# transposed bias (`control` in the JSON).
ATTENTION_ERROR_FACTOR = 4.0
ATTENTION_PAD_MULTIPLE = 64
MASKED_BIAS = -1e9  # the bias of padded keys: exp() of it is 0 in every dtype


# ------------------------------------------------------------------------------------------------------ helpers


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def error_text(error: BaseException, limit: int = 800) -> str:
    """The exception's type and whole message on one line (XLA's and cuDNN's reasons often sit below the first
    line), cut at `limit` characters."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())
    return f"{type(error).__name__}: {text}"[:limit]


class Budget:
    """The time left for the optional parts; a part that would not fit is skipped and recorded with its reason."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()
        self.skipped: list[dict] = []

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def refuses(self, part: str, estimate_s: float, reserve_s: float = 0.0) -> str | None:
        """None when `part` fits in the time left less `reserve_s`, else the reason it is skipped."""
        if estimate_s + reserve_s <= self.left():
            return None
        left = max(self.left() - reserve_s, 0.0)
        reason = f"skipped: estimated {estimate_s:.0f} s, {left:.0f} s of the budget left"
        self.skipped.append({"part": part, "reason": reason})
        log(f"  {part}: {reason}")
        return reason


@dataclasses.dataclass
class Estimates:
    """Compile and run times measured so far, for the budget's estimates of the parts still to run."""

    compile_s: float
    torch_compile_s: float
    seconds_per_image: float
    measured_compile: bool = False
    measured_torch_compile: bool = False
    measured_run: bool = False

    def saw_compile(self, seconds: float) -> None:
        self.compile_s = max(seconds, self.compile_s) if self.measured_compile else seconds
        self.measured_compile = True

    def saw_torch_compile(self, seconds: float) -> None:
        self.torch_compile_s = max(seconds, self.torch_compile_s) if self.measured_torch_compile else seconds
        self.measured_torch_compile = True

    def saw_run(self, seconds: float, batch: int) -> None:
        per_image = seconds / batch
        self.seconds_per_image = max(per_image, self.seconds_per_image) if self.measured_run else per_image
        self.measured_run = True

    def runs_s(self, batch: int, runs: int) -> float:
        return (runs + 2) * batch * self.seconds_per_image  # warm-up, reference copy and timed runs


def peak_tflops(device_kind: str) -> tuple[str, float] | None:
    for key, tflops in BF16_PEAK_TFLOPS:
        if key.lower() in device_kind.lower():
            return key, tflops
    return None


def is_target_device(device_kind: str) -> bool:
    return any(name.lower() in device_kind.lower() for name in TARGET_DEVICES)


def backbone_matmul_flops(backbone_config, batch: int, height: int, width: int) -> dict[str, float]:
    """2 x multiply-adds of the backbone's matmuls for one forward, from the BEiT config: per layer the q, k, v
    and output projections (4 x tokens x D x D), the MLP (2 x tokens x D x intermediate) and the attention
    scores and context (2 x tokens x tokens x D, over all heads); the patch embedding once."""
    patch = backbone_config.patch_size
    patches = (height // patch) * (width // patch)
    tokens = patches + 1  # CLS
    hidden, layers = backbone_config.hidden_size, backbone_config.num_hidden_layers
    flops = {
        "projections": 2.0 * batch * tokens * hidden * hidden * 4 * layers,
        "mlp": 2.0 * batch * tokens * hidden * backbone_config.intermediate_size * 2 * layers,
        "attention_core": 2.0 * batch * tokens * tokens * hidden * 2 * layers,
        "patch_embedding": 2.0 * batch * patches * 3 * patch * patch * hidden,
    }
    return flops | {"total": sum(flops.values())}


# -------------------------------------------------------------------------------------------------- environment


def environment(torch_device) -> dict:
    """The accelerator as JAX and torch name it, driver and CUDA / cuDNN versions where available, library
    versions, the commit and the host CPU."""
    import torch

    device = jax.devices()[0]
    facts = {
        "jax_platform": device.platform,
        "jax_device_kind": device.device_kind,
        "jax_device_count": jax.device_count(),
        "torch_device": str(torch_device),
        "torch_device_name": torch.cuda.get_device_name(0) if torch_device.type == "cuda" else None,
        "torch_cuda": torch.version.cuda,
        "torch_cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "versions": library_versions(),
        "commit": commit(),
        "host": machine_facts(),
    }
    with contextlib.suppress(Exception):
        from jax.extend import backend as jax_backend

        facts["jax_platform_version"] = jax_backend.get_backend().platform_version
    with contextlib.suppress(Exception):
        from jax._src.lib import cuda_versions

        facts["jax_cuda_runtime"] = cuda_versions.cuda_runtime_get_version()
        facts["jax_cudnn"] = cuda_versions.cudnn_get_version()
    with contextlib.suppress(Exception):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        facts["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip() or None
    return facts


# ------------------------------------------------------------------------------------------------------ runners


def jax_runner(model, variables, images_nchw: np.ndarray, precision: str) -> tuple[Callable[[], jax.Array], float]:
    """The compiled forward on `images_nchw` (plain forms, `precision` for the fp32 matmuls and convolutions):
    a call returning the depth [B, H, W] once the device is done, and the lower + compile seconds."""
    from zoedepth_jax.modeling.layers import traced_forms

    x = jax.device_put(jnp.asarray(images_nchw.transpose(0, 2, 3, 1)))
    start = time.perf_counter()
    with traced_forms("plain"), jax.default_matmul_precision(precision):
        compiled = jax.jit(model.apply).lower(variables, x).compile()
    compile_s = time.perf_counter() - start
    return lambda: jax.block_until_ready(compiled(variables, x).predicted_depth), compile_s


def torch_runner(model, images_nchw: np.ndarray, device, bf16: bool):
    """A call running transformers' `model` (eager, or a torch.compile of it) on the images: autocast bf16 when
    asked, returning the depth once the device is done."""
    import torch

    x = torch.from_numpy(images_nchw).to(device)

    @torch.no_grad()
    def run():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            depth = model(x).predicted_depth
        if device.type == "cuda":
            torch.cuda.synchronize()
        return depth

    return run


def to_numpy(depth) -> np.ndarray:
    if hasattr(depth, "detach"):
        return depth.detach().float().cpu().numpy()
    return np.asarray(depth, np.float32)


def release_device_memory() -> None:
    """Hands torch's cached blocks back, so that JAX's next allocations find them."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------ parts


def run_parity_and_bf16(ctx: Context) -> None:
    """fp32 parity against transformers (TF32 off), and the bf16 errors of both libraries against its depth."""
    batch = ctx.sizes.parity_batch
    images = ctx.images(batch)
    torch_fp32 = torch_runner(ctx.torch_model, images, ctx.torch_device, bf16=False)
    reference_depth = to_numpy(torch_fp32())
    run, compile_s = ctx.jax_forward("fp32", batch)
    depth = to_numpy(run())  # a first call's time (lazy loading of kernels) is no estimate of the next ones
    errors = relative_errors(depth, reference_depth)
    ctx.result["parity"] = {
        "batch": batch,
        "input_hw": [ctx.sizes.height, ctx.sizes.width],
        "reference": f"transformers fp32 on {ctx.torch_device.type}",
        "tf32": False,
        "forms": "plain",
        "error": errors,
        "target_max": FP32_RELATIVE,
        "met": errors["max"] <= FP32_RELATIVE,
        "finite": bool(np.isfinite(depth).all()),
        "compile_s": compile_s,
        "reference_depth": {
            "min": float(reference_depth.min()),
            "max": float(reference_depth.max()),
            "std_over_mean": float(reference_depth.std() / reference_depth.mean()),
        },
    }
    log(f"parity: max {errors['max']:.2e}, median {errors['median']:.2e} (target <= {FP32_RELATIVE:g})")

    run, compile_s = ctx.jax_forward("bf16", batch)
    jax_depth = to_numpy(run())
    torch_depth = to_numpy(torch_runner(ctx.torch_model, images, ctx.torch_device, bf16=True)())
    section = {"batch": batch, "reference": "transformers fp32 depth of the parity part", "compile_s": compile_s}
    for name, bf16_depth in (("zoedepth_jax", jax_depth), ("torch_autocast", torch_depth)):
        finite = bool(np.isfinite(bf16_depth).all())
        section[name] = relative_errors(bf16_depth, reference_depth) if finite else "non-finite output"
    ctx.result["bf16_error"] = section
    log(f"bf16: zoedepth-jax {section['zoedepth_jax']}, torch autocast {section['torch_autocast']}")
    release_device_memory()


def attention_inputs(ctx: Context) -> dict:
    """q, k, v [B, N, heads, d] in bf16 (order-one values, as the re-drawn model's), the bias [heads, N, N] fp32
    gathered from an order-one table by the model's relative-position index at the input's patch grid."""
    from zoedepth_jax.modeling.beit import relative_position_index

    config = ctx.jax_fp32[0].config.backbone_config
    heads = config.num_attention_heads
    grid = (ctx.sizes.height // config.patch_size, ctx.sizes.width // config.patch_size)
    index = relative_position_index(grid)
    tokens, head_dim, batch = index.shape[0], config.hidden_size // heads, ctx.sizes.attention_batch
    rng = np.random.default_rng(0)
    table = rng.standard_normal((heads, int(index.max()) + 1)).astype(np.float32)
    q, k, v = (jnp.asarray(rng.standard_normal((batch, tokens, heads, head_dim)), jnp.bfloat16) for _ in range(3))
    return {"q": q, "k": k, "v": v, "bias": jnp.asarray(table[:, index]), "heads": heads, "tokens": tokens}


def attention_variants(inputs: dict) -> list[tuple[str, str, str | None, Callable]]:
    """(form, bias description, implementation, function of q, k, v in [B, N, heads, d] and the bias
    [heads, N, N] -> [B, N, heads, d]) for each fused variant tried."""

    def fused(implementation, bias_batch: bool, bias_dtype, pad: bool):
        def attend(q, k, v, bias):
            tokens = q.shape[1]
            bias = bias[None].astype(bias_dtype)
            if bias_batch:
                bias = jnp.broadcast_to(bias, (q.shape[0], *bias.shape[1:]))
            if pad:
                extra = -tokens % ATTENTION_PAD_MULTIPLE
                q, k, v = (jnp.pad(t, ((0, 0), (0, extra), (0, 0), (0, 0))) for t in (q, k, v))
                bias = jnp.pad(bias, ((0, 0), (0, 0), (0, extra), (0, extra)))
                keys = jnp.arange(tokens + extra) < tokens
                bias = jnp.where(keys, bias, jnp.asarray(MASKED_BIAS, bias.dtype))
            out = jax.nn.dot_product_attention(q, k, v, bias=bias, implementation=implementation)
            return out[:, :tokens]

        return attend

    bf16, fp32 = jnp.bfloat16, jnp.float32
    return [
        ("cudnn", "[1, heads, N, N] bf16", "cudnn", fused("cudnn", False, bf16, False)),
        ("cudnn", "[B, heads, N, N] bf16", "cudnn", fused("cudnn", True, bf16, False)),
        ("cudnn", "[1, heads, N, N] fp32", "cudnn", fused("cudnn", False, fp32, False)),
        (
            f"cudnn, tokens padded to a multiple of {ATTENTION_PAD_MULTIPLE}",
            "[1, heads, N', N'] bf16, padded keys masked",
            "cudnn",
            fused("cudnn", False, bf16, True),
        ),
        ("implementation=None (XLA's choice)", "[1, heads, N, N] fp32", None, fused(None, False, fp32, False)),
        ("implementation=None (XLA's choice)", "[1, heads, N, N] bf16", None, fused(None, False, bf16, False)),
    ]


def run_attention(ctx: Context) -> None:
    """The fused attention variants against the model's plain form and an fp32 reference, with their speed."""
    from zoedepth_jax.modeling.beit import attention_step

    inputs = attention_inputs(ctx)
    q, k, v, bias = inputs["q"], inputs["k"], inputs["v"], inputs["bias"]
    runs, calls = ctx.sizes.runs, ctx.sizes.attention_calls

    def heads_first(t):  # [B, N, heads, d] <-> [B, heads, N, d]
        return jnp.swapaxes(t, 1, 2)

    def plain(q, k, v, bias):  # the model's GPU/TPU form, in the BTNH layout of dot_product_attention
        return heads_first(attention_step(heads_first(q), heads_first(k), heads_first(v), bias))

    with jax.default_matmul_precision("highest"):
        as_fp32 = [t.astype(jnp.float32) for t in (q, k, v)]
        reference_out = np.asarray(jax.jit(plain)(*as_fp32, bias), np.float32)
    section = {
        "batch": int(q.shape[0]),
        "heads": inputs["heads"],
        "tokens": inputs["tokens"],
        "head_dim": int(q.shape[-1]),
        "dtype": "bfloat16",
        "reference": "the plain form in fp32 (highest precision) on the same bf16 q, k, v and fp32 bias",
        "error": "max |out - reference| / max |reference|",
        "calls_per_run": calls,
    }

    def measure(function, *arguments) -> dict:
        start = time.perf_counter()
        compiled = jax.jit(function).lower(*arguments).compile()
        compile_s = time.perf_counter() - start
        out = np.asarray(jax.block_until_ready(compiled(*arguments)), np.float32)
        times = timed(lambda: jax.block_until_ready(compiled(*arguments)), runs, calls)
        return {
            "status": "ok",
            "error": relative_error(out, reference_out),
            "finite": bool(np.isfinite(out).all()),
            "median_ms": 1e3 * statistics.median(times),
            "times_ms": [1e3 * t for t in times],
            "compile_s": compile_s,
        }

    section["plain"] = {"form": "plain (beit.attention_step)", "bias": "[heads, N, N] fp32"} | measure(
        plain, q, k, v, bias
    )
    plain_error, plain_ms = section["plain"]["error"], section["plain"]["median_ms"]
    bound = ATTENTION_ERROR_FACTOR * plain_error
    transposed = jnp.swapaxes(bias, 1, 2)
    control = relative_error(np.asarray(jax.jit(plain)(q, k, v, transposed), np.float32), reference_out)
    section["match_bound"] = bound
    section["control"] = {"form": "plain, bias transposed", "error": control, "exceeds_bound": control > bound}
    log(f"attention: plain bf16 error {plain_error:.2e}, {plain_ms:.3g} ms; transposed-bias control {control:.2e}")

    on_gpu = jax.devices()[0].platform == "gpu"
    section["variants"] = []
    for form, bias_text, implementation, function in attention_variants(inputs):
        row = {"form": form, "bias": bias_text, "implementation": implementation}
        if implementation == "cudnn" and not on_gpu:
            row |= {"status": "skipped", "reason": f"not a GPU: skipped (platform {jax.devices()[0].platform})"}
        else:
            try:
                row |= measure(function, q, k, v, bias)
                row["matches_plain"] = row["finite"] and row["error"] <= bound
                row["speedup_vs_plain"] = plain_ms / row["median_ms"]
            except Exception as error:  # cuDNN's refusals arrive as several exception types
                row |= {"status": "failed", "reason": error_text(error)}
        section["variants"].append(row)
        detail = row.get("reason") or f"error {row['error']:.2e}, {row['median_ms']:.3g} ms"
        log(f"  {form}, bias {bias_text}: {row['status']}: {detail}")
    ctx.result["attention"] = section


THROUGHPUT_RUNTIMES = {
    "jax": "zoedepth-jax",
    "torch_eager": "PyTorch eager (bf16: autocast)",
    "torch_compile": "torch.compile",
}


def throughput_plan(sizes: Sizes) -> list[tuple[str, str, int]]:
    """(runtime, dtype, batch) in the order measured, most needed first, so that what the budget cuts is the
    least needed: at the largest batch (the targets' batch) zoedepth-jax bf16, PyTorch eager, the backbone and
    torch.compile bf16 (the speed target's figures), then zoedepth-jax fp32 and torch.compile fp32; then the
    other batches, their torch.compile runs last (they compile longest)."""
    first, *rest = sizes.batch_sizes
    plan = [("jax", "bf16"), ("torch_eager", "fp32"), ("torch_eager", "bf16"), ("backbone", "bf16")]
    plan += [("torch_compile", "bf16"), ("jax", "fp32"), ("torch_compile", "fp32")]
    others = [("jax", "bf16"), ("jax", "fp32"), ("torch_eager", "fp32"), ("torch_eager", "bf16")]
    compiled = [("torch_compile", "bf16"), ("torch_compile", "fp32")]
    plan = [(r, d, first) for r, d in plan] + [(r, d, b) for b in rest for r, d in others]
    return plan + [(r, d, b) for b in rest for r, d in compiled]


def run_throughput_case(ctx: Context, runtime: str, dtype: str, batch: int) -> dict:
    """One (runtime, dtype, batch) of the plan: compiled and warmed up, then timed; or skipped with its reason."""
    row = {"runtime": runtime, "dtype": dtype, "batch": batch}
    part = f"throughput {runtime} {dtype} batch {batch}"
    if runtime.startswith("torch") and not ctx.torch_on_device:
        return row | {"status": "skipped", "reason": f"torch has no {jax.devices()[0].platform} device"}
    if runtime == "torch_compile" and ctx.dry_run and (dtype, batch) != ("fp32", ctx.sizes.batch_sizes[0]):
        return row | {"status": "skipped", "reason": "dry run: torch.compile at one batch in fp32 only"}
    estimate = ctx.estimates.runs_s(batch, ctx.sizes.runs)
    if runtime == "jax" and (dtype, batch) not in ctx.jax_runners:
        estimate += ctx.estimates.compile_s
    estimate += {"backbone": ctx.estimates.compile_s / 2, "torch_compile": ctx.estimates.torch_compile_s}.get(
        runtime, 0
    )
    reason = ctx.budget.refuses(part, estimate, ctx.sizes.attention_reserve_s)
    if reason:
        return row | {"status": "skipped", "reason": reason}
    images = ctx.images(batch)
    bf16 = dtype == "bf16"
    compile_s = None
    try:
        if runtime == "jax":
            run, compile_s = ctx.jax_forward(dtype, batch)
            run()  # warm-up
        elif runtime == "backbone":
            run, compile_s = backbone_runner(*(ctx.jax_bf16 if bf16 else ctx.jax_fp32), images)
            ctx.estimates.saw_compile(2 * compile_s)
            run()  # warm-up
        else:
            target = ctx.torch_model
            if runtime == "torch_compile":
                target = ctx.torch_compiled()
            run = torch_runner(target, images, ctx.torch_device, bf16)
            start = time.perf_counter()
            run()  # torch.compile compiles on the first call
            first_s = time.perf_counter() - start
            start = time.perf_counter()
            run()  # a graph break's resumed code may compile on the second
            row["second_call_s"] = time.perf_counter() - start
            if runtime == "torch_compile":
                compile_s = first_s
                ctx.estimates.saw_torch_compile(first_s + row["second_call_s"])
        times = timed(run, ctx.sizes.runs)
    except Exception as error:
        log(f"  {part}: failed: {error_text(error)}")
        return row | {"status": "failed", "reason": error_text(error), "compile_s": compile_s}
    finally:
        release_device_memory()
    median = statistics.median(times)
    ctx.estimates.saw_run(median, batch)
    log(f"  {part}: {median * 1e3:.4g} ms, {batch / median:.4g} images/s, compile {compile_s}")
    return row | {
        "status": "ok",
        "times_s": times,
        "median_s": median,
        "images_per_s": batch / median,
        "compile_s": compile_s,
    }


def backbone_runner(model, variables, images_nchw: np.ndarray) -> tuple[Callable[[], object], float]:
    """The BEiT backbone alone with the model's parameters and compute dtype, jitted (plain forms)."""
    from zoedepth_jax.modeling.beit import BeitBackbone
    from zoedepth_jax.modeling.layers import traced_forms

    backbone = BeitBackbone(model.config.backbone_config, model.dtype)
    params = {"params": variables["params"]["backbone"]}
    x = jax.device_put(jnp.asarray(images_nchw.transpose(0, 2, 3, 1)))
    start = time.perf_counter()
    with traced_forms("plain"), jax.default_matmul_precision("default"):
        compiled = jax.jit(backbone.apply).lower(params, x).compile()
    compile_s = time.perf_counter() - start
    return lambda: jax.block_until_ready(compiled(params, x)), compile_s


def run_throughput(ctx: Context) -> None:
    rows = [run_throughput_case(ctx, *case) for case in throughput_plan(ctx.sizes)]
    model_rows = [r for r in rows if r["runtime"] != "backbone"]
    for batch in ctx.sizes.batch_sizes:
        at_batch = [r for r in model_rows if r["batch"] == batch and r["status"] == "ok"]
        eager = [r for r in at_batch if (r["runtime"], r["dtype"]) == ("torch_eager", "fp32")]
        torch_rows = [r for r in at_batch if r["runtime"].startswith("torch")]
        fastest = min(torch_rows, key=lambda r: r["median_s"], default=None)
        for r in at_batch:
            if eager:
                r["vs_torch_eager_fp32"] = eager[0]["median_s"] / r["median_s"]
            if fastest:
                r["vs_fastest_torch"] = fastest["median_s"] / r["median_s"]
                r["fastest_torch"] = f"{fastest['runtime']} {fastest['dtype']}"
    ctx.result["throughput"] = {
        "runs": ctx.sizes.runs,
        "input_hw": [ctx.sizes.height, ctx.sizes.width],
        "precision": "fp32: TF32 off on both sides; bf16: zoedepth-jax dtype=bfloat16, torch autocast bf16",
        "torch_compile": {"mode": "default", "dynamic": False, "backend": ctx.torch_compile_backend},
        "results": model_rows,
    }
    backbone_row = next(r for r in rows if r["runtime"] == "backbone")
    config = ctx.jax_bf16[0].config.backbone_config
    flops = backbone_matmul_flops(config, backbone_row["batch"], ctx.sizes.height, ctx.sizes.width)
    section = {"batch": backbone_row["batch"], "dtype": "bf16", "flops": flops} | backbone_row
    peak = peak_tflops(jax.devices()[0].device_kind)
    section["peak"] = {"key": peak[0], "tflops": peak[1]} if peak else "unknown"
    if backbone_row["status"] == "ok":
        section["matmul_tflops"] = flops["total"] / backbone_row["median_s"] / 1e12
        if peak:
            section["fraction_of_peak"] = section["matmul_tflops"] / peak[1]
        whole = [r for r in model_rows if (r["runtime"], r["dtype"], r["batch"]) == ("jax", "bf16", section["batch"])]
        if whole and whole[0]["status"] == "ok":
            section["share_of_whole_model_time"] = backbone_row["median_s"] / whole[0]["median_s"]
    ctx.result["backbone"] = section


# ------------------------------------------------------------------------------------------------------ verdict


def verdict_rows(result: dict) -> list[dict]:
    """Each check: value, target, status (met / not met / skipped / info) and a note."""
    device_kind = result["environment"]["jax_device_kind"]
    on_target = is_target_device(device_kind)
    elsewhere = "" if on_target else f"target set for {' / '.join(TARGET_DEVICES)}; this device: {device_kind}"
    rows = []

    errors = result.get("errors", {})
    parity = result.get("parity")
    check = "fp32 parity vs transformers, TF32 off (max per-pixel rel. error)"
    row = {"check": check, "target": f"<= {FP32_RELATIVE:.0e}"}
    if parity is None:
        row |= {"value": "", "status": "not run", "note": errors.get("parity_and_bf16", "")}
    else:
        row |= {
            "check": check.replace("TF32 off", f"batch {parity['batch']}, TF32 off"),
            "value": f"{parity['error']['max']:.2e} (median {parity['error']['median']:.1e})",
            "status": "met" if parity["met"] and parity["finite"] else "not met",
            "note": parity["reference"],
        }
    rows.append(row)

    def error_pair(error: dict | str) -> str:
        return error if isinstance(error, str) else f"{error['median']:.1e} / {error['max']:.2g}"

    bf16 = result.get("bf16_error")
    row = {
        "check": "zoedepth-jax bf16 depth vs the fp32 reference (median / max per-pixel rel. error)",
        "target": f"median <= {BF16_DEPTH_MEDIAN_RELATIVE:g}",
    }
    if bf16 is None:
        row |= {"value": "", "status": "not run", "note": errors.get("parity_and_bf16", "")}
    else:
        jax_error = bf16["zoedepth_jax"]
        met = not isinstance(jax_error, str) and jax_error["median"] <= BF16_DEPTH_MEDIAN_RELATIVE
        row |= {
            "value": error_pair(jax_error),
            "status": "met" if met else "not met",
            "note": f"PyTorch autocast bf16: {error_pair(bf16['torch_autocast'])}",
        }
    rows.append(row)

    throughput = result.get("throughput", {}).get("results", [])
    largest = max((r["batch"] for r in throughput), default=None)
    jax_bf16 = [r for r in throughput if (r["runtime"], r["dtype"], r["batch"]) == ("jax", "bf16", largest)]
    check = f"zoedepth-jax bf16 at batch {largest} vs the fastest PyTorch configuration"
    row = {"check": check, "target": f">= {SPEEDUP_TARGET}x"}
    if not jax_bf16 or jax_bf16[0]["status"] != "ok":
        reason = jax_bf16[0].get("reason", "not run") if jax_bf16 else "not run"
        row |= {"value": "", "status": "skipped", "note": reason}
    elif "vs_fastest_torch" not in jax_bf16[0]:
        row |= {"value": "", "status": "skipped", "note": "no PyTorch configuration ran on this device"}
    else:
        r = jax_bf16[0]
        missing = [
            f"{t['runtime']} {t['dtype']}"
            for t in throughput
            if t["batch"] == largest and t["runtime"].startswith("torch") and t["status"] != "ok"
        ]
        note = [f"fastest: {r['fastest_torch']}"] + ([f"not measured: {', '.join(missing)}"] if missing else [])
        row |= {
            "value": f"{r['vs_fastest_torch']:.2f}x",
            "status": "met" if r["vs_fastest_torch"] >= SPEEDUP_TARGET else "not met",
            "note": "; ".join(note + ([elsewhere] if elsewhere else [])),
        }
    rows.append(row)

    backbone = result.get("backbone", {})
    row = {"check": "backbone bf16 matmul FLOP rate as a share of the dense bf16 peak", "target": ">= 40%"}
    if backbone.get("status") != "ok":
        row |= {"value": "", "status": "skipped", "note": backbone.get("reason", "not run")}
    elif "fraction_of_peak" not in backbone:
        note = f"{backbone['matmul_tflops']:.3g} TFLOP/s; no dense bf16 peak known for device kind {device_kind!r}"
        row |= {"value": "", "status": "skipped", "note": note}
    else:
        fraction = backbone["fraction_of_peak"]
        row |= {
            "value": f"{100 * fraction:.0f}% ({backbone['matmul_tflops']:.3g} of {backbone['peak']['tflops']:g})",
            "status": "met" if fraction >= MATMUL_FRACTION_TARGET else "not met",
            "note": "; ".join(
                [f"batch {backbone['batch']}, peak of {backbone['peak']['key']}"] + ([elsewhere] if elsewhere else [])
            ),
        }
    rows.append(row)

    attention = result.get("attention")
    row = {
        "check": "cuDNN fused attention with the relative-position bias (bf16, BEiT sizes)",
        "target": f"runs; error <= {ATTENTION_ERROR_FACTOR:g}x the plain bf16 form's",
    }
    if attention is None:
        rows.append(row | {"value": "", "status": "not run", "note": errors.get("attention", "")})
    else:
        cudnn = [v for v in attention["variants"] if v["implementation"] == "cudnn"]
        ran = [v for v in cudnn if v["status"] == "ok"]
        if all(v["status"] == "skipped" for v in cudnn):
            row |= {"value": "", "status": "skipped", "note": cudnn[0]["reason"]}
        elif not ran:
            row |= {"value": "refused", "status": "not met", "note": cudnn[0]["reason"]}
        else:
            best = min(ran, key=lambda v: v["median_ms"])
            row |= {
                "value": f"{len(ran)} of {len(cudnn)} layouts run; best error {best['error']:.1e}",
                "status": "met" if any(v["matches_plain"] for v in ran) else "not met",
                "note": f"plain bf16 error {attention['plain']['error']:.1e}; fastest: bias {best['bias']}",
            }
        rows.append(row)
        timed_variants = [v for v in attention["variants"] if v["status"] == "ok"]
        if timed_variants:
            best = max(timed_variants, key=lambda v: v["speedup_vs_plain"])
            rows.append(
                {
                    "check": "fastest fused attention form vs the plain form",
                    "value": f"{best['speedup_vs_plain']:.2f}x",
                    "target": "reported",
                    "status": "info",
                    "note": f"{best['form']}, bias {best['bias']}",
                }
            )

    timing = result["timing"]
    rows.append(
        {
            "check": "time of the whole check",
            "value": f"{timing['total_s']:.0f} s",
            "target": f"<= {TIME_LIMIT_S:g} s (budget {result['settings']['budget_s']:g} s for the parts)",
            "status": "met" if timing["total_s"] <= TIME_LIMIT_S else "not met",
            "note": f"{len(result['skipped'])} parts skipped" if result["skipped"] else "nothing skipped",
        }
    )
    return rows


# ----------------------------------------------------------------------------------------------------- markdown

VERDICT_HEADER = "| check | value | target | status | note |"
THROUGHPUT_HEADER = (
    "| batch | runtime | fp32 images/s | bf16 images/s | fp32 / bf16 vs eager fp32 | fp32 / bf16 vs fastest PyTorch "
    "| compile s fp32 / bf16 |"
)
ATTENTION_HEADER = "| attention form | bias | error vs fp32 | ms per call | vs plain | status |"


def markdown(result: dict) -> str:
    env = result["environment"]
    versions = env["versions"]
    settings = result["settings"]
    lines = [
        f"### {env['jax_device_kind']} ({env['jax_platform']}): accelerator check"
        + (" (dry run, tiny model)" if settings["dry_run"] else ""),
        "",
        f"**Device:** JAX `{env['jax_device_kind']}` x{env['jax_device_count']}"
        + (f", torch `{env['torch_device_name']}`" if env["torch_device_name"] else f", torch on {env['torch_device']}")
        + (f"; nvidia-smi: {env['nvidia_smi']}" if env.get("nvidia_smi") else "")
        + (f"; CUDA {env['torch_cuda']} / cuDNN {env['torch_cudnn']} (torch)" if env["torch_cuda"] else "")
        + (f"; JAX platform {env['jax_platform_version']}" if env.get("jax_platform_version") else "")
        + ".",
        f"**Versions:** Python {versions['python']}, jax/jaxlib {versions['jax']}/{versions['jaxlib']}, "
        f"flax {versions['flax']}, torch {versions['torch']}, transformers {versions['transformers']}; "
        f"commit {env['commit']}. **Model:** {settings['architecture']}, input "
        f"{settings['input_hw'][0]}x{settings['input_hw'][1]}. `{settings['command']}`",
        "",
        VERDICT_HEADER,
        "|---|---|---|---|---|",
    ]
    for row in result["verdict"]:
        lines.append(f"| {row['check']} | {row['value']} | {row['target']} | **{row['status']}** | {row['note']} |")

    lines += ["", THROUGHPUT_HEADER, "|---|---|---|---|---|---|---|"]
    rows = result.get("throughput", {}).get("results", [])

    def cell(row: dict | None, key: str, form: str) -> str:
        if row is None:
            return ""
        if row["status"] != "ok":
            return row["status"]
        return "" if row.get(key) is None else format(row[key], form)

    for batch in settings["batch_sizes"]:
        for runtime, name in THROUGHPUT_RUNTIMES.items():
            by_dtype = {r["dtype"]: r for r in rows if r["batch"] == batch and r["runtime"] == runtime}
            fp32, bf16 = by_dtype.get("fp32"), by_dtype.get("bf16")
            bold = "**" if runtime == "jax" else ""
            lines.append(
                f"| {batch} | {bold}{name}{bold} | {cell(fp32, 'images_per_s', '.4g')} | "
                f"{cell(bf16, 'images_per_s', '.4g')} | {cell(fp32, 'vs_torch_eager_fp32', '.2f')} / "
                f"{cell(bf16, 'vs_torch_eager_fp32', '.2f')} | {cell(fp32, 'vs_fastest_torch', '.2f')} / "
                f"{cell(bf16, 'vs_fastest_torch', '.2f')} | {cell(fp32, 'compile_s', '.1f')} / "
                f"{cell(bf16, 'compile_s', '.1f')} |"
            )
    backbone = result.get("backbone")
    if backbone and backbone["status"] == "ok":
        share = backbone.get("share_of_whole_model_time")
        lines += [
            "",
            f"Backbone alone, bf16, batch {backbone['batch']}: {1e3 * backbone['median_s']:.4g} ms"
            + (f" ({100 * share:.0f}% of the whole forward's)" if share else "")
            + f", {backbone['flops']['total'] / 1e9:.4g} GFLOP of matmuls (counted from the config): "
            f"{backbone['matmul_tflops']:.3g} TFLOP/s"
            + (
                f", {100 * backbone['fraction_of_peak']:.0f}% of the {backbone['peak']['key']} dense bf16 peak "
                f"({backbone['peak']['tflops']:g})."
                if "fraction_of_peak" in backbone
                else "; no dense bf16 peak known for this device."
            ),
        ]
    not_run = [f"- {r['runtime']} {r['dtype']} batch {r['batch']}: {r['reason']}" for r in rows if r["status"] != "ok"]
    if backbone and backbone["status"] != "ok":
        not_run.append(f"- backbone bf16 batch {backbone['batch']}: {backbone['reason']}")
    if not_run:
        lines += ["", "Not measured:", *not_run]

    attention = result.get("attention")
    if attention is not None:
        lines += [
            "",
            f"Attention at B={attention['batch']}, {attention['heads']} heads, {attention['tokens']} tokens, head dim "
            f"{attention['head_dim']}, bf16; error: max |out - ref| / max |ref| against the plain form in fp32 "
            f"(match: <= {attention['match_bound']:.1e}; the plain form with a transposed bias: "
            f"{attention['control']['error']:.1e}).",
            "",
            ATTENTION_HEADER,
            "|---|---|---|---|---|---|",
        ]
        for v in [attention["plain"], *attention["variants"]]:
            if v["status"] == "ok":
                speed = f"{v['speedup_vs_plain']:.2f}x" if "speedup_vs_plain" in v else "1.00x"
                match = "" if "matches_plain" not in v else (" (matches)" if v["matches_plain"] else " (differs)")
                lines.append(
                    f"| {v['form']} | {v['bias']} | {v['error']:.1e} | {v['median_ms']:.3g} | {speed} | ok{match} |"
                )
            else:
                lines.append(f"| {v['form']} | {v['bias']} | | | | {v['status']}: {v['reason']} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------- main


@dataclasses.dataclass
class Context:
    """What the parts share: the sizes, the loaded models, the budget and the result being filled."""

    sizes: Sizes
    dry_run: bool
    budget: Budget
    estimates: Estimates
    result: dict
    torch_model: object
    torch_device: object
    torch_on_device: bool
    torch_compile_backend: str
    jax_fp32: tuple
    jax_bf16: tuple
    jax_runners: dict = dataclasses.field(default_factory=dict)
    _compiled: object = None

    def images(self, batch: int) -> np.ndarray:
        """The input of every part at this batch size, [B, 3, H, W] float32: the same images for every runtime."""
        import reference

        return reference.test_images(batch, self.sizes.height, self.sizes.width, seed=batch)

    def jax_forward(self, dtype: str, batch: int) -> tuple[Callable[[], jax.Array], float]:
        """zoedepth-jax compiled for `dtype` ("fp32": precision "highest", TF32 off; "bf16": the default) at this
        batch, once: the parity part and the throughput part share what they both run."""
        if (dtype, batch) not in self.jax_runners:
            model, variables = self.jax_bf16 if dtype == "bf16" else self.jax_fp32
            precision = "default" if dtype == "bf16" else "highest"
            self.jax_runners[dtype, batch] = jax_runner(model, variables, self.images(batch), precision)
            self.estimates.saw_compile(self.jax_runners[dtype, batch][1])
        return self.jax_runners[dtype, batch]

    def torch_compiled(self):
        """One torch.compile of the model (static shapes); dynamo keeps one compiled graph per batch and dtype."""
        import torch

        if self._compiled is None:
            self._compiled = torch.compile(self.torch_model, dynamic=False, backend=self.torch_compile_backend)
        return self._compiled


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a save_pretrained folder; built there when it has none")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="seconds for all the parts")
    parser.add_argument("--runs", type=int, help="timed runs per configuration (default 10; 2 with --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="the CPU and the tiny model: a check of the script")
    args = parser.parse_args(argv)
    started = time.monotonic()
    sizes = DRY if args.dry_run else FULL
    if args.runs is not None:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        sizes = dataclasses.replace(sizes, runs=args.runs)

    import torch
    from transformers import ZoeDepthForDepthEstimation

    from zoedepth_jax import from_pretrained

    # fp32 means fp32 on both sides: TF32 off for torch's matmuls and convolutions (JAX: precision "highest").
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    for name in ("recompile_limit", "cache_size_limit"):  # one compiled graph per batch size and dtype
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    platform = jax.devices()[0].platform
    torch_on_device = (platform == "gpu" and torch.cuda.is_available()) or platform == "cpu"
    torch_device = torch.device("cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu")
    if platform == "cpu" and not args.dry_run:
        log("note: JAX sees no GPU or TPU; the full-size check on a CPU takes far longer than its budget")

    result: dict = {
        "settings": {
            "dry_run": args.dry_run,
            "command": "python benchmarks/accelerator_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "variant": "nyu-kitti",
            "architecture": "released nyu-kitti (BEiT-L/16, neck 256/512/1024/1024), re-drawn weights"
            if sizes.full
            else "tiny test model (nyu-kitti)",
            "input_hw": [sizes.height, sizes.width],
            "parity_batch": sizes.parity_batch,
            "batch_sizes": list(sizes.batch_sizes),
            "runs": sizes.runs,
            "budget_s": args.budget_s,
            "forms": "plain",
            "routing": "batch",
        },
        "environment": environment(torch_device),
    }
    budget = Budget(args.budget_s)
    timing: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="accelerator_check_") as scratch:
        start = time.perf_counter()
        folder = args.checkpoint or Path(scratch) / "checkpoint"
        if not (folder / "config.json").exists():
            log(f"building the checkpoint in {folder}")
            build_checkpoint(folder, full=sizes.full)
        torch_model = ZoeDepthForDepthEstimation.from_pretrained(folder).eval().to(torch_device)
        ctx = Context(
            sizes=sizes,
            dry_run=args.dry_run,
            budget=budget,
            estimates=Estimates(
                sizes.compile_estimate_s, sizes.torch_compile_estimate_s, sizes.seconds_per_image_estimate
            ),
            result=result,
            torch_model=torch_model,
            torch_device=torch_device,
            torch_on_device=torch_on_device,
            torch_compile_backend="eager" if args.dry_run else "inductor",
            jax_fp32=from_pretrained(folder, dtype=jnp.float32, routing="batch"),
            jax_bf16=from_pretrained(folder, dtype=jnp.bfloat16, routing="batch"),
        )
        timing["setup_s"] = time.perf_counter() - start
        log(f"setup {timing['setup_s']:.1f} s; JAX {result['environment']['jax_device_kind']}, torch {torch_device}")

        # Attention last: a cuDNN failure that took the process down would still leave the other parts' files.
        parts = (("parity_and_bf16", run_parity_and_bf16), ("throughput", run_throughput), ("attention", run_attention))
        for name, part in parts:
            start = time.perf_counter()
            try:
                part(ctx)
            except Exception as error:  # reported, and the other parts still run
                log(f"{name} failed: {error_text(error)}")
                result.setdefault("errors", {})[name] = error_text(error, limit=2000)
            timing[f"{name}_s"] = time.perf_counter() - start
            if name == "throughput":
                ctx.jax_runners.clear()  # the compiled forwards and their inputs, off the device
            release_device_memory()
            write_outputs(result, args, timing, budget, started, final=False)
    return write_outputs(result, args, timing, budget, started, final=True)


def write_outputs(result: dict, args, timing: dict, budget: Budget, started: float, final: bool) -> dict:
    """Fills in the timing, the skipped parts and the verdict and writes --json and --markdown; after each part
    too (`final=False`), so that a run cut short leaves what it measured. The final call prints the tables."""
    timing["total_s"] = time.monotonic() - started
    result["timing"] = timing
    result["skipped"] = budget.skipped
    result["complete"] = final
    result["verdict"] = verdict_rows(result)
    text = markdown(result)
    if final:
        print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
