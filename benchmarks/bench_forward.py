"""Full-size forward: zoedepth-jax (jit, after compile) against transformers PyTorch eager, in one run.

    python benchmarks/bench_forward.py [--variant nyu-kitti] [--runs 5] [--height 384 --width 512]

Builds the released architecture (BEiT-L/16 at 384, neck 256/512/1024/1024) with re-drawn weights through
transformers, saves it with `save_pretrained`, loads it with `zoedepth_jax.weights.from_pretrained`, then times
both frameworks on the same input with the runs interleaved (JAX, torch, JAX, torch, ...) so that machine noise
hits both alike. Reports medians, min/max, the speed ratio, JAX compile time, the max relative depth difference
and the peak resident memory of each framework measured in a fresh subprocess. Needs the `test` extra.
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


def build_checkpoint(variant: str, folder: Path) -> None:
    import reference

    reference.build(variant, folder, seed=0, full=True)


def measure_memory(framework: str, folder: Path, height: int, width: int) -> float:
    """Peak RSS (MiB) of a fresh process that loads the checkpoint in one framework and runs one forward.

    Read from VmHWM in /proc/self/status, which belongs to the process's own address space. `ru_maxrss` would
    not do: Linux carries it across fork + exec, so a child reports at least its parent's peak (this script's
    parent holds both models at once).
    """
    code = f"""
import re, numpy as np
x = np.zeros((1, 3, {height}, {width}), np.float32)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="nyu-kitti", choices=["nyu", "kitti", "nyu-kitti"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import jax
    import numpy as np
    import reference
    import torch
    from transformers import ZoeDepthForDepthEstimation

    from zoedepth_jax.weights import from_pretrained

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoint"
        build_checkpoint(args.variant, folder)
        images = reference.test_images(1, args.height, args.width, seed=0)

        torch_model = ZoeDepthForDepthEstimation.from_pretrained(folder).eval()
        model, variables = from_pretrained(folder)
        forward = jax.jit(model.apply)
        x = jax.numpy.asarray(images.transpose(0, 2, 3, 1))
        start = time.perf_counter()
        compiled = forward.lower(variables, x).compile()
        compile_s = time.perf_counter() - start

        def run_jax():
            return np.asarray(compiled(variables, x).predicted_depth)

        @torch.no_grad()
        def run_torch():
            return torch_model(torch.from_numpy(images)).predicted_depth.numpy()

        depth_jax, depth_torch = run_jax(), run_torch()  # warm-up
        times = {"jax": [], "torch": []}
        for _ in range(args.runs):
            for name, fn in (("jax", run_jax), ("torch", run_torch)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        memory = {name: measure_memory(name, folder, args.height, args.width) for name in ("jax", "torch")}

    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "variant": args.variant,
        "input": [1, args.height, args.width, 3],
        "runs": args.runs,
        "median_s": median,
        "min_s": {name: min(t) for name, t in times.items()},
        "max_s": {name: max(t) for name, t in times.items()},
        "speedup_jax_over_torch": median["torch"] / median["jax"],
        "jax_compile_s": compile_s,
        "peak_rss_mib": memory,
        "max_relative_depth_difference": float(np.abs(depth_jax - depth_torch).max() / np.abs(depth_torch).max()),
        "torch_threads": torch.get_num_threads(),
        "jax_version": jax.__version__,
        "torch_version": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
