"""Full-size forward: zoedepth-jax (jit, after compile) against transformers PyTorch eager, in one run.

    python benchmarks/bench_forward.py [--variant nyu-kitti] [--runs 5] [--height 384 --width 512]
                                      [--batch-sizes 1,4,8] [--torch-compile] [--bf16] [--json FILE]

Builds the released architecture (BEiT-L/16 at 384, neck 256/512/1024/1024) with re-drawn weights through
transformers, saves it with `save_pretrained`, loads it with `zoedepth_jax.weights.from_pretrained`, then, per
batch size, times every configuration on the same input with the runs interleaved (JAX, torch, JAX, torch, ...)
so that machine noise hits all alike: zoedepth-jax fp32 (and bf16 with --bf16), PyTorch eager fp32, and
torch.compile fp32 with --torch-compile. Reports medians, min/max, images/s, ratios against PyTorch eager,
compile times, the per-pixel relative depth error against PyTorch eager (median, max) and the peak resident
memory of JAX and PyTorch eager, each measured in a fresh subprocess. Needs the `test` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def build_checkpoint(variant: str, folder: Path, full: bool = True) -> None:
    import reference

    reference.build(variant, folder, seed=0, full=full)


def measure_memory(framework: str, folder: Path, height: int, width: int, batch: int = 1) -> float:
    """Peak RSS (MiB) of a fresh process that loads the checkpoint in one framework and runs one forward.

    Read from VmHWM in /proc/self/status, which belongs to the process's own address space. `ru_maxrss` would
    not do: Linux carries it across fork + exec, so a child reports at least its parent's peak (this script's
    parent holds both models at once).
    """
    code = f"""
import re, numpy as np
x = np.zeros(({batch}, 3, {height}, {width}), np.float32)
if {framework!r} == "jax":
    import jax
    from zoedepth_jax.weights import from_pretrained
    model, variables = from_pretrained({str(folder)!r})
    jax.jit(model.apply)(variables, x.transpose(0, 2, 3, 1)).predicted_depth.block_until_ready()
else:
    import torch
    from transformers import ZoeDepthForDepthEstimation
    model = ZoeDepthForDepthEstimation.from_pretrained({str(folder)!r}).eval()
    with torch.no_grad():
        model(torch.from_numpy(x))
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def time_interleaved(runners: dict, runs: int) -> dict[str, list[float]]:
    """Runs each runner once per round, in turn, so that machine noise hits all of them alike."""
    times = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times: dict[str, list[float]], batch: int) -> dict:
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "median_s": median,
        "min_s": {name: min(t) for name, t in times.items()},
        "max_s": {name: max(t) for name, t in times.items()},
        "images_per_s": {name: batch / m for name, m in median.items()},
        "speedup_over_torch_eager": {name: median["torch_eager"] / m for name, m in median.items()},
    }


def relative_errors(depth, reference) -> dict:
    """Per pixel |depth - reference| / reference: median and max (depth is positive)."""
    import numpy as np

    error = np.abs(np.asarray(depth, np.float64) - reference) / np.asarray(reference, np.float64)
    return {"median": float(np.median(error)), "max": float(error.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="nyu-kitti", choices=["nyu", "kitti", "nyu-kitti"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,4,8")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--bf16", action="store_true", help="also time zoedepth-jax bf16 and its error vs fp32")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--tiny", action="store_true", help="the tiny test architecture: a quick check of the script")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import reference
    import torch
    from transformers import ZoeDepthForDepthEstimation

    from zoedepth_jax.weights import from_pretrained

    result = {
        "variant": args.variant,
        "architecture": "tiny test model" if args.tiny else "released (BEiT-L/16, neck 256/512/1024/1024)",
        "input_hw": [args.height, args.width],
        "runs": args.runs,
        "batches": {},
        "torch_threads": torch.get_num_threads(),
        "jax_version": jax.__version__,
        "torch_version": torch.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoint"
        build_checkpoint(args.variant, folder, full=not args.tiny)
        torch_model = ZoeDepthForDepthEstimation.from_pretrained(folder).eval()
        compiled_torch = torch.compile(torch_model) if args.torch_compile else None
        models = {"jax_fp32": from_pretrained(folder)}
        if args.bf16:
            models["jax_bf16"] = from_pretrained(folder, dtype=jnp.bfloat16)
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            images = reference.test_images(batch, args.height, args.width, seed=batch)
            x = jnp.asarray(images.transpose(0, 2, 3, 1))
            entry, runners, depths = {"compile_s": {}}, {}, {}
            for name, (model, variables) in models.items():
                start = time.perf_counter()
                compiled = jax.jit(model.apply).lower(variables, x).compile()
                entry["compile_s"][name] = time.perf_counter() - start
                runners[name] = lambda c=compiled, v=variables, x=x: np.asarray(c(v, x).predicted_depth)

            @torch.no_grad()
            def run_torch(model=torch_model, images=images):
                return model(torch.from_numpy(images)).predicted_depth.numpy()

            runners["torch_eager"] = run_torch
            if compiled_torch is not None:
                start = time.perf_counter()
                try:
                    run_torch(compiled_torch)  # compiles on the first call
                    runners["torch_compile"] = lambda: run_torch(compiled_torch)
                except Exception as e:  # inductor needs a C++ toolchain; report what failed
                    entry["torch_compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                entry["compile_s"]["torch_compile"] = time.perf_counter() - start
            for name, run in runners.items():
                depths[name] = run()  # warm-up, and the outputs compared below
            entry |= summarize(time_interleaved(runners, args.runs), batch)
            reference_depth = depths["torch_eager"]
            entry["depth_error_vs_torch_eager"] = {
                name: relative_errors(d, reference_depth) if np.isfinite(d).all() else "non-finite output"
                for name, d in depths.items()
                if name != "torch_eager"
            }
            if not args.no_memory:
                entry["peak_rss_mib"] = {
                    name: measure_memory(name, folder, args.height, args.width, batch) for name in ("jax", "torch")
                }
            result["batches"][str(batch)] = entry
            print(json.dumps({batch: entry}, indent=2), flush=True)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
