"""One fine-tuning step of zoedepth-jax against PyTorch eager, on the same model, batch and machine.

    python benchmarks/train_step.py [--height 384 --width 512] [--batch 2] [--runs 5]
                                    [--configs jax_fp32,jax_bf16,torch_eager_fp32,torch_eager_bf16]
                                    [--checkpoint DIR] [--json FILE]
    python benchmarks/train_step.py --quick [--json FILE]    # tiny test model: checks the script
    python benchmarks/train_step.py --retain-freed-memory [...] # every worker keeps freed memory for reuse

The model is the released ZoeD-N architecture (BEiT-L/16 at 384, neck 256/512/1024/1024, one softplus metric
head) with re-drawn weights, built through transformers and saved with `save_pretrained` (`--checkpoint`: a
one-domain save_pretrained folder to use instead); both sides load that folder. A step is what a fine-tuning
loop runs per batch: forward in training mode, the SILog loss against a depth target with a validity mask,
gradients, clipping of the global gradient norm to 0.1, and AdamW over the original recipe's four parameter
groups with the one-cycle schedule (`TrainConfig`'s defaults, ZoeD-N's recipe):

    jax_fp32, jax_bf16                  zoedepth_jax.training.step.make_train_step with TrainConfig(
                                        compute_dtype="float32" / "bfloat16"): the whole step is one jitted
                                        program, compiled before timing with lower + compile; the batch is
                                        NHWC [B, H, W, 3]
    torch_eager_fp32, torch_eager_bf16  transformers ZoeDepthForDepthEstimation in train mode, the forward
                                        (bf16: under torch.autocast("cpu", dtype=torch.bfloat16)), the same
                                        SILog in fp32, backward, torch.nn.utils.clip_grad_norm_, AdamW with the
                                        same groups and OneCycleLR (tests/torch_recipe.py, the construction the
                                        parity tests step beside zoedepth-jax's optimizer), gradients released
                                        with zero_grad(set_to_none=True); the batch is NCHW

Dropout and drop-path are 0 on both sides: the checkpoint's BEiT config carries transformers' default
drop_path_rate=0.1, which both sides are loaded without (the original ZoeDepth trained its BEiT with drop-path
0). Both then do the same work, and the first step's loss is deterministic, so that the two fp32 sides can be
checked against each other.

Method
- One worker process per configuration, run one after the other in the order of CONFIGS. At full size one step
  needs nearly all of a 24 GiB machine by itself: XLA reports 14 GiB of temporaries for the fp32 step on top of
  the 3.8 GiB train state, and a process peaks at 21-23 GiB; two configurations in one process (their heaps do
  not shrink back between steps) or two processes at once do not fit. `--json` records each compiled step's
  buffer sizes and each worker's peak. `make_train_step` donates the state, so the new state takes the old
  one's buffers. `--configs` runs a subset (torch_eager_fp32 always runs: it is the reference).
- In a worker: the model loads (JAX: the train state is created and the step compiled, lower + compile, timed:
  the compile time), one warm-up step from the loaded weights, then `--runs` timed steps. The sanity check
  compares the first-step losses of jax_fp32 and torch_eager_fp32 (same weights, same batch), relative 1e-3.
  The configurations run minutes apart, so their ratios are only as good as the machine is steady: each
  worker records the load average at its start and end. Reported per configuration: median, min and max
  seconds per step, images per second, speed against torch_eager_fp32's median of the same run, compile time,
  the loss of each step, and each timed step's minor page faults and system CPU seconds (getrusage); per
  worker, its resident memory after the warm-up and its peak (VmHWM).
- The matmul floor. A step is mostly matmuls and convolutions, so a framework's step can be no faster than its
  matmuls. Each worker, after its timed steps, times a BEiT MLP dense layer as its step runs one: the forward,
  the input gradient and the weight gradient of `[B x tokens, hidden] x [hidden, intermediate]` (at 384x512,
  batch 2: [1538, 1024] x [1024, 4096]), activations in the configuration's dtype, the weight in fp32 cast to it
  (JAX: `layers.matmul_in_f32` under `jax.vjp`, jitted; PyTorch: `F.linear` and backward, under autocast for
  bf16), median of DENSE_RUNS, as GFLOP/s. The JAX workers count the step's matmul FLOPs (2 x multiply-adds of
  every dot and convolution in the step's jaxpr, traced with the plain forms, which have no loops). The floor of
  a configuration is that count over its dense layer's rate: the time its step would take if every matmul and
  convolution ran as fast as that layer, and nothing else took time.
- Output: a markdown table on stdout, progress on stderr, everything (per-run times and losses, the machine: CPU
  model, cores, AMX and bf16 flags; library versions, thread counts, XLA's buffer sizes of each compiled step,
  the commit) in --json. The exit status is 1 when the loss check fails, after the report; a worker that fails
  ends the run with its error.

`--retain-freed-memory`: every worker, PyTorch's included, first calls
`zoedepth_jax.training.host_memory.retain_freed_memory()` (what `zoedepth-jax finetune` does), so that glibc's
malloc keeps freed memory for reuse instead of handing each large buffer back and faulting it in again the next
step. Without it, both sides run with glibc's defaults.

`--quick` runs the tiny test architecture at 64x96, batch 2, 2 runs: a check that the script works, not a
measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import commit, machine_facts, process_memory_mib, timed

BENCHMARKS = Path(__file__).resolve().parent
CONFIGS = ("jax_fp32", "jax_bf16", "torch_eager_fp32", "torch_eager_bf16")
ANCHOR = "torch_eager_fp32"
FULL = {"height": 384, "width": 512, "batch": 2, "runs": 5}
QUICK = {"height": 64, "width": 96, "batch": 2, "runs": 2}
VARIANT = "nyu"
# The one-cycle schedule's length: longer than any run, since torch's OneCycleLR raises past its last step. The
# length changes the learning rates, not the work of a step.
TOTAL_STEPS = 10_000
NO_DROPOUT = {"drop_path_rate": 0.0, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
LOSS_RELATIVE_TOLERANCE = 1e-3
SETTLE_S = 0.1
DENSE_RUNS = 9


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Configuration:
    """A configuration ready to step: `step()` runs one training step and returns its loss (a scalar array, read
    after the clock stops)."""

    name: str
    step: Callable[[], object]
    compile_s: float | None
    details: dict
    times_s: list[float] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
    # Per timed step, the process's minor page faults and system CPU seconds: the cost of memory the allocator
    # hands back to the kernel and faults in again (see --retain-freed-memory).
    minor_faults: list[int] = dataclasses.field(default_factory=list)
    system_s: list[float] = dataclasses.field(default_factory=list)

    def run(self) -> float:
        start = time.perf_counter()
        loss = self.step()
        seconds = time.perf_counter() - start
        self.losses.append(float(loss))
        return seconds

    def run_timed(self) -> float:
        """`run`, recording the step's time, page faults and system time."""
        before = resource.getrusage(resource.RUSAGE_SELF)
        seconds = self.run()
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.times_s.append(seconds)
        self.minor_faults.append(after.ru_minflt - before.ru_minflt)
        self.system_s.append(after.ru_stime - before.ru_stime)
        return seconds


def training_batch(batch: int, height: int, width: int) -> dict[str, np.ndarray]:
    """Images [B, 3, H, W] in the processor's range, a depth target [B, H, W] in meters (a floor receding upwards,
    1 to 5 m, with the image's texture on top: within the nyu head's range) and a mask with 4 in 5 pixels valid."""
    import reference

    images = reference.test_images(batch, height, width, seed=1)
    rows = np.linspace(0, 1, height, dtype=np.float32)[None, :, None]
    depth = (1.0 + 4.0 * rows + 0.5 * images.mean(axis=1)).astype(np.float32)
    mask = np.random.default_rng(2).uniform(size=depth.shape) < 0.8
    return {"images": images, "depth": depth, "mask": mask}


def setup_jax(folder: Path, data: dict[str, np.ndarray], names: list[str], config) -> list[Configuration]:
    import jax
    import jax.numpy as jnp

    from zoedepth_jax import from_pretrained
    from zoedepth_jax.modeling.layers import traced_forms
    from zoedepth_jax.training.step import create_train_state, make_train_step

    model, variables = from_pretrained(folder)
    backbone = dataclasses.replace(model.config.backbone_config, **NO_DROPOUT)
    model = model.clone(config=model.config.replace(backbone_config=backbone))
    # The shared state, created with the fp32 configuration's optimizer: the bf16 step then reuses it as it is
    # (its optimizer would be an equal one), and both steps keep the state's structure, so each compiles once.
    shared = {"state": create_train_state(model, variables, config)}
    del variables
    batch = {
        "pixel_values": jnp.asarray(data["images"].transpose(0, 2, 3, 1)),
        "depth": jnp.asarray(data["depth"]),
        "mask": jnp.asarray(data["mask"]),
    }
    rng = jax.random.key(0)
    configurations = []
    for name in names:
        compute_dtype = {"jax_fp32": "float32", "jax_bf16": "bfloat16"}[name]
        train_step = make_train_step(model, dataclasses.replace(config, compute_dtype=compute_dtype))
        start = time.perf_counter()
        compiled = train_step.lower(shared["state"], batch, rng).compile()
        compile_s = time.perf_counter() - start
        log(f"{name}: compiled in {compile_s:.1f} s")

        def step(compiled=compiled):
            shared["state"], metrics = compiled(shared["state"], batch, rng)
            jax.block_until_ready((shared["state"], metrics))
            return metrics["loss"]

        details = {"compile_covers": "lower + compile", "devices": [str(d) for d in jax.devices()]}
        details["memory_analysis"] = compiled_memory(compiled)
        with traced_forms("plain"):  # no loops: every matmul appears once per time it runs
            plain_step = make_train_step(model, dataclasses.replace(config, compute_dtype=compute_dtype))
        details["step_matmul_gflop"] = matmul_flops(jax.make_jaxpr(plain_step)(shared["state"], batch, rng)) / 1e9
        configurations.append(Configuration(name, step, compile_s, details))
    return configurations


def compiled_memory(compiled) -> dict | None:
    """XLA's buffer sizes of a compiled program in MiB (arguments, outputs, temporaries), where it reports them."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "generated_code_size_in_bytes")
    if analysis is None or not all(hasattr(analysis, field) for field in fields):
        return None
    return {field.removesuffix("_in_bytes") + "_mib": getattr(analysis, field) / 2**20 for field in fields}


def matmul_flops(closed_jaxpr) -> float:
    """2 x multiply-adds of every dot and convolution in a jaxpr, nested jaxprs included. Loops would be counted
    once, not once per trip: the jaxpr must have none (a ValueError otherwise)."""
    from jax.extend.core import ClosedJaxpr, Jaxpr

    def count(jaxpr) -> float:
        total = 0.0
        for equation in jaxpr.eqns:
            name, out = equation.primitive.name, equation.outvars[0].aval
            if name in ("while", "scan"):
                raise ValueError(f"a {name} loop in the counted jaxpr")
            if name == "dot_general":
                ((lhs_contracting, _), _) = equation.params["dimension_numbers"]
                lhs = equation.invars[0].aval
                total += 2 * math.prod(out.shape) * math.prod(lhs.shape[axis] for axis in lhs_contracting)
            elif name == "conv_general_dilated":
                kernel = equation.invars[1].aval  # its input-feature axis already divided by the groups
                out_features_axis = equation.params["dimension_numbers"].rhs_spec[0]
                total += 2 * math.prod(out.shape) * math.prod(kernel.shape) / kernel.shape[out_features_axis]
            for value in equation.params.values():
                for inner in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(inner, (ClosedJaxpr, Jaxpr)):
                        total += count(inner.jaxpr if isinstance(inner, ClosedJaxpr) else inner)
        return total

    return count(closed_jaxpr.jaxpr)


def dense_layer_shape(folder: Path, batch: int, height: int, width: int) -> tuple[int, int, int]:
    """(rows, hidden, intermediate) of the backbone's MLP dense layer: rows = batch x (patches + the CLS token)."""
    backbone = json.loads((folder / "config.json").read_text())["backbone_config"]
    patch = backbone["patch_size"]
    rows = batch * ((height // patch) * (width // patch) + 1)
    return rows, backbone["hidden_size"], backbone["intermediate_size"]


def jax_dense_layer_seconds(bf16: bool, rows: int, hidden: int, intermediate: int) -> float:
    import jax
    import jax.numpy as jnp

    from zoedepth_jax.modeling.layers import matmul_in_f32

    dtype = jnp.bfloat16 if bf16 else jnp.float32
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (rows, hidden), dtype)
    weight = jax.random.normal(keys[1], (hidden, intermediate), jnp.float32)
    cotangent = jax.random.normal(keys[2], (rows, intermediate), jnp.float32)

    @jax.jit
    def forward_and_backward(x, weight, cotangent):
        y, pullback = jax.vjp(lambda x, weight: matmul_in_f32(x, weight.astype(dtype)), x, weight)
        return y, pullback(cotangent)

    def run():
        return jax.block_until_ready(forward_and_backward(x, weight, cotangent))

    run()  # compiles
    return statistics.median(timed(run, DENSE_RUNS))


def torch_dense_layer_seconds(bf16: bool, rows: int, hidden: int, intermediate: int) -> float:
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, hidden, generator=generator, dtype=torch.bfloat16 if bf16 else torch.float32)
    x.requires_grad_()
    weight = torch.randn(intermediate, hidden, generator=generator, requires_grad=True)
    cotangent = torch.randn(rows, intermediate, generator=generator)

    def forward_and_backward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = torch.nn.functional.linear(x, weight)
        y.backward(cotangent.to(y.dtype))
        x.grad = weight.grad = None

    forward_and_backward()  # warm-up
    return statistics.median(timed(forward_and_backward, DENSE_RUNS))


def dense_layer_rate(name: str, folder: Path, args: argparse.Namespace) -> dict:
    """The configuration's framework on one BEiT MLP dense layer, forward and backward (see the matmul floor)."""
    rows, hidden, intermediate = dense_layer_shape(folder, args.batch, args.height, args.width)
    timer = jax_dense_layer_seconds if name.startswith("jax") else torch_dense_layer_seconds
    seconds = timer(name.endswith("bf16"), rows, hidden, intermediate)
    gflop = 3 * 2 * rows * hidden * intermediate / 1e9  # forward, input gradient, weight gradient
    return {"shape": [rows, hidden, intermediate], "median_s": seconds, "gflop_per_s": gflop / seconds}


def setup_torch(folder: Path, data: dict[str, np.ndarray], names: list[str], config) -> list[Configuration]:
    import torch
    import torch_recipe
    from transformers import ZoeDepthConfig, ZoeDepthForDepthEstimation

    torch.manual_seed(0)
    hf_config = ZoeDepthConfig.from_pretrained(folder)
    for field, rate in NO_DROPOUT.items():
        setattr(hf_config.backbone_config, field, rate)
    model = ZoeDepthForDepthEstimation.from_pretrained(folder, config=hf_config).train()
    named = {tuple(name.split(".")): parameter for name, parameter in model.named_parameters()}
    optimizer, scheduler = torch_recipe.optimizer_and_scheduler(named, config)
    images, depth, mask = (torch.from_numpy(data[key]) for key in ("images", "depth", "mask"))

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            prediction = model(images).predicted_depth
        loss = config.silog_weight * torch_recipe.silog(prediction.float(), depth, mask, config.silog_beta)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    details = {
        "torch_threads": torch.get_num_threads(),
        "attention": getattr(model.config.backbone_config, "_attn_implementation", None),
        "optimizer_groups": len(optimizer.param_groups),
    }
    return [Configuration(name, functools.partial(step, name.endswith("bf16")), None, details) for name in names]


def library_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for package in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def loss_check(configurations: dict[str, dict]) -> dict | None:
    """The first-step losses of jax_fp32 and torch_eager_fp32 (same weights, same batch), or None without jax_fp32."""
    if "jax_fp32" not in configurations:
        return None
    jax_loss, torch_loss = configurations["jax_fp32"]["losses"][0], configurations[ANCHOR]["losses"][0]
    difference = abs(jax_loss - torch_loss) / abs(torch_loss)
    return {
        "jax_fp32": jax_loss,
        "torch_eager_fp32": torch_loss,
        "relative_difference": difference,
        "tolerance": LOSS_RELATIVE_TOLERANCE,
        "passed": bool(difference <= LOSS_RELATIVE_TOLERANCE),
    }


def step_matmul_gflop(configurations: dict[str, dict]) -> float | None:
    """The step's matmul GFLOP as the JAX workers counted them (None without one); a ValueError if they differ."""
    counts = {c["details"]["step_matmul_gflop"] for c in configurations.values() if "step_matmul_gflop" in c["details"]}
    if len(counts) > 1:
        raise ValueError(f"the JAX workers counted different matmul GFLOP per step: {sorted(counts)}")
    return counts.pop() if counts else None


def summarize(configurations: dict[str, dict], batch: int) -> list[dict]:
    """Per configuration (as the workers wrote them): times, speed against the anchor, losses, the matmul floor."""
    anchor_median = statistics.median(configurations[ANCHOR]["times_s"])
    step_gflop = step_matmul_gflop(configurations)
    results = []
    for name, configuration in configurations.items():
        times = configuration["times_s"]
        median = statistics.median(times)
        dense_rate = configuration["details"]["dense_layer"]["gflop_per_s"]
        results.append(
            {
                "config": name,
                "times_s": times,
                "median_s": median,
                "min_s": min(times),
                "max_s": max(times),
                "images_per_s": batch / median,
                "speedup_vs_torch_eager_fp32": anchor_median / median,
                "compile_s": configuration["compile_s"],
                "first_step_loss": configuration["losses"][0],
                "minor_faults": configuration["minor_faults"],
                "system_s": configuration["system_s"],
                "median_minor_faults": statistics.median(configuration["minor_faults"]),
                "median_system_s": statistics.median(configuration["system_s"]),
                "dense_layer_gflop_per_s": dense_rate,
                "matmul_floor_s": None if step_gflop is None else step_gflop / dense_rate,
                "losses": configuration["losses"],
                "details": configuration["details"],
            }
        )
    return results


def markdown_table(results: list[dict], check: dict | None, step_gflop: float | None) -> str:
    lines = [
        "| config | median s/step | min s | max s | images/s | vs torch eager fp32 | compile s | first-step loss "
        "| minor faults/step | system s/step | dense layer GFLOP/s | matmul floor s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        compile_s = "" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        floor = "" if r["matmul_floor_s"] is None else f"{r['matmul_floor_s']:.3g}"
        lines.append(
            f"| {r['config']} | {r['median_s']:.3g} | {r['min_s']:.3g} | {r['max_s']:.3g} | {r['images_per_s']:.3g} "
            f"| {r['speedup_vs_torch_eager_fp32']:.2f}x | {compile_s} | {r['first_step_loss']:.6g} "
            f"| {r['median_minor_faults']:.0f} | {r['median_system_s']:.2f} | {r['dense_layer_gflop_per_s']:.0f} "
            f"| {floor} |"
        )
    lines.append("")
    if check is None:
        lines.append("Loss check: not run (it needs jax_fp32).")
    else:
        lines.append(
            f"Loss check, first step from the same weights and batch: jax_fp32 {check['jax_fp32']:.7g}, "
            f"torch_eager_fp32 {check['torch_eager_fp32']:.7g}, relative difference "
            f"{check['relative_difference']:.1e} (tolerance {check['tolerance']:.0e}): "
            + ("passed" if check["passed"] else "FAILED")
        )
    if step_gflop is not None:
        lines.append(
            f"A step's matmuls and convolutions: {step_gflop:.4g} GFLOP. The matmul floor: that at the dense "
            "layer's rate (forward and backward of one BEiT MLP layer, in the configuration's dtype)."
        )
    return "\n".join(lines)


def prepare_checkpoint(args: argparse.Namespace, scratch: Path) -> Path:
    """`--checkpoint` when it holds a config.json (one domain), else the re-drawn model built in `scratch`. The
    build runs in a subprocess, so that its torch model never sits in this process's memory."""
    folder = args.checkpoint
    if folder is not None and (folder / "config.json").exists():
        if len(json.loads((folder / "config.json").read_text()).get("bin_configurations", [])) > 1:
            raise SystemExit(f"{folder}: a two-domain checkpoint; this benchmark steps one-domain models (ZoeD-N)")
        return folder
    folder = folder or scratch / "checkpoint"
    size = "tiny" if args.quick else "full"
    log(f"building the {size} {VARIANT} checkpoint in {folder}")
    code = (
        "import sys; from pathlib import Path; import common; "
        "common.build_checkpoint(Path(sys.argv[1]), sys.argv[2], full=sys.argv[3] == 'full')"
    )
    subprocess.run([sys.executable, "-c", code, str(folder), VARIANT, size], check=True, cwd=BENCHMARKS)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, help=f"default {FULL['height']} ({QUICK['height']} with --quick)")
    parser.add_argument("--width", type=int, help=f"default {FULL['width']} ({QUICK['width']} with --quick)")
    parser.add_argument("--batch", type=int, help=f"default {FULL['batch']} ({QUICK['batch']} with --quick)")
    parser.add_argument("--runs", type=int, help=f"timed rounds; default {FULL['runs']} ({QUICK['runs']})")
    parser.add_argument("--configs", help=f"comma-separated subset of: {', '.join(CONFIGS)} ({ANCHOR} always runs)")
    parser.add_argument("--checkpoint", type=Path, help="a one-domain save_pretrained folder; built there if absent")
    parser.add_argument("--quick", action="store_true", help="the tiny test architecture: a check of the script")
    parser.add_argument("--json", type=Path, help="also write all results here")
    parser.add_argument(
        "--retain-freed-memory", action="store_true", help="every worker keeps freed memory (host_memory)"
    )
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)  # one configuration's process
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    chosen = set(args.configs.split(",")) if args.configs else set(CONFIGS)
    if chosen - set(CONFIGS):
        parser.error(f"unknown configurations {sorted(chosen - set(CONFIGS))}; choose from {', '.join(CONFIGS)}")
    if args.runs < 1 or args.batch < 1:
        parser.error("--runs and --batch must be at least 1")
    names = [name for name in CONFIGS if name in chosen | {ANCHOR}]

    from zoedepth_jax.training.config import TrainConfig

    config = TrainConfig(total_steps=TOTAL_STEPS)  # ZoeD-N's recipe (TrainConfig.for_model of a one-domain model)
    if args.worker:
        worker_main(args.worker, args, config)
        return 0
    result = {
        "settings": {
            "variant": VARIANT,
            "architecture": "tiny test model" if args.quick else "released (BEiT-L/16, neck 256/512/1024/1024)",
            "input": [args.batch, args.height, args.width],
            "runs": args.runs,
            "configs": names,
            "dropout_and_drop_path": 0.0,
            "retain_freed_memory": args.retain_freed_memory,
            "train_config": dataclasses.asdict(config),
            "rule": "one worker process per configuration, one after the other; in each, one warm-up step, then "
            "the timed steps; speed against torch_eager_fp32's median of the same run",
        },
        "machine": machine_facts(),
        "commit": commit(),
        "versions": library_versions(),
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train_step_") as scratch:
        folder = prepare_checkpoint(args, Path(scratch))
        workers = {name: run_worker(name, folder, args, Path(scratch) / f"{name}.json") for name in names}
    result["total_s"] = time.perf_counter() - start
    result["workers"] = {name: worker["process"] for name, worker in workers.items()}
    configurations = {name: worker["configuration"] for name, worker in workers.items()}
    result["step_matmul_gflop"] = step_matmul_gflop(configurations)
    result["results"] = summarize(configurations, args.batch)
    result["loss_check"] = check = loss_check(configurations)
    print(markdown_table(result["results"], check, result["step_matmul_gflop"]))
    for name, process in result["workers"].items():
        memory = f"{process['rss_after_warmup_mib']:.0f} MiB after the warm-up, peak {process['peak_mib']:.0f} MiB"
        log(f"{name} worker: {memory}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if check is not None and not check["passed"] else 0


def run_worker(name: str, folder: Path, args: argparse.Namespace, out: Path) -> dict:
    """Runs one configuration in a process of its own and returns what it wrote to `out`."""
    command = [sys.executable, __file__, "--worker", name, "--checkpoint", str(folder), "--json", str(out)]
    command += ["--height", str(args.height), "--width", str(args.width), "--batch", str(args.batch)]
    command += ["--runs", str(args.runs)] + (["--retain-freed-memory"] if args.retain_freed_memory else [])
    log(f"{name} worker")
    completed = subprocess.run(command, cwd=BENCHMARKS)
    if completed.returncode != 0:
        raise SystemExit(f"the {name} worker failed (exit status {completed.returncode}); its log is above")
    return json.loads(out.read_text())


def worker_main(name: str, args: argparse.Namespace, config) -> None:
    """One configuration: set-up, a warm-up step, `args.runs` timed steps; writes --json."""
    if args.retain_freed_memory:
        from zoedepth_jax.training.host_memory import retain_freed_memory

        if not retain_freed_memory():
            raise SystemExit("--retain-freed-memory needs Linux with glibc")
    start = time.perf_counter()
    data = training_batch(args.batch, args.height, args.width)
    setup = setup_jax if name.startswith("jax") else setup_torch
    (configuration,) = setup(args.checkpoint, data, [name], config)
    process = {"load_average_start": os.getloadavg()}
    seconds = configuration.run()
    log(f"{name}: warm-up step {seconds:.2f} s, loss {configuration.losses[-1]:.6g}")
    process["setup_and_warmup_s"] = time.perf_counter() - start
    process["rss_after_warmup_mib"] = process_memory_mib()["rss"]
    for run in range(args.runs):
        time.sleep(SETTLE_S)
        seconds = configuration.run_timed()
        faults, system_s = configuration.minor_faults[-1], configuration.system_s[-1]
        log(f"{name} step {run + 1}/{args.runs}: {seconds:.2f} s ({faults} minor faults, {system_s:.1f} s system)")
    process |= {"peak_mib": process_memory_mib()["peak"], "load_average_end": os.getloadavg()}
    configuration.details["dense_layer"] = dense = dense_layer_rate(name, args.checkpoint, args)
    log(f"{name}: dense layer {dense['shape']} forward and backward at {dense['gflop_per_s']:.0f} GFLOP/s")
    fields = ("name", "compile_s", "details", "times_s", "losses", "minor_faults", "system_s")
    written = {field: getattr(configuration, field) for field in fields}
    args.json.write_text(json.dumps({"process": process, "configuration": written}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
