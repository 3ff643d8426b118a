"""What the depth uncertainty and the 3D files cost, on this machine.

    python benchmarks/uncertainty_3d.py [--checkpoint DIR] [--runs 5] [--json FILE] [--quick]

1. The forward with `with_uncertainty=True` against the default one: the released nyu-kitti architecture with
   re-drawn weights, fp32, batch 1 at 384x512, both compiled first, then timed in alternation (medians).
2. Writing a 480x640 photo's point cloud (PLY) and mesh (GLB) as `zoedepth-jax predict --ply --glb` does: points
   from the depth, the edge mask, and each file (median of `--runs`).

`--quick` runs the tiny model at 64x96 and a 48x64 photo: a check that the script works, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import build_checkpoint, commit, machine_facts


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_forwards(folder: Path, height: int, width: int, runs: int) -> dict:
    """Median seconds of the default forward and of the forward with uncertainty, timed in alternation."""
    import jax
    import reference

    from zoedepth_jax import from_pretrained

    model, variables = from_pretrained(folder)
    pixels = jax.numpy.asarray(reference.test_images(1, height, width, seed=1).transpose(0, 2, 3, 1))
    forwards = {
        "default": jax.jit(model.apply),
        "with_uncertainty": jax.jit(lambda v, x: model.apply(v, x, with_uncertainty=True)),
    }

    def run(forward) -> float:
        return _seconds(lambda: jax.block_until_ready(forward(variables, pixels)))

    first_call_s = {name: run(forward) for name, forward in forwards.items()}  # each compiles here
    times = {name: [] for name in forwards}
    for _ in range(runs):
        for name, forward in forwards.items():
            times[name].append(run(forward))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "input": [1, height, width, 3],
        "first_call_s": first_call_s,
        "runs_s": times,
        "median_s": medians,
        "extra_fraction": medians["with_uncertainty"] / medians["default"] - 1,
    }


def time_3d_files(height: int, width: int, runs: int, scratch: Path) -> dict:
    """Median seconds of each step of writing a photo's PLY and GLB, on a scene with depth edges."""
    from zoedepth_jax.geometry.camera import intrinsics_from_fov
    from zoedepth_jax.geometry.files import write_mesh, write_point_cloud
    from zoedepth_jax.geometry.points import depth_edges_mask, depth_to_points, to_opengl

    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:height, 0:width]
    depth = (2.0 + 3.0 * rows / height).astype(np.float32)  # a floor receding
    depth[height // 4 : height // 2, width // 3 : 2 * width // 3] = 1.5  # a box in front: depth edges
    colors = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    intrinsics = intrinsics_from_fov(height, width)
    steps = {
        "points": lambda: np.asarray(depth_to_points(depth, intrinsics)),
        "edge_mask": lambda: np.asarray(depth_edges_mask(depth)),
    }
    points, keep = steps["points"](), ~steps["edge_mask"]()  # the first calls compile
    steps["ply"] = lambda: write_point_cloud(scratch / "cloud.ply", points, colors, keep, overwrite=True)
    steps["glb"] = lambda: write_mesh(scratch / "mesh.glb", np.asarray(to_opengl(points)), colors, keep, overwrite=True)
    times = {name: [_seconds(step) for _ in range(runs)] for name, step in steps.items()}
    return {
        "photo": [height, width],
        "kept_points": int(keep.sum()),
        "bytes": {"ply": (scratch / "cloud.ply").stat().st_size, "glb": (scratch / "mesh.glb").stat().st_size},
        "median_s": {name: statistics.median(values) for name, values in times.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a save_pretrained folder; built (nyu-kitti) if absent")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="the tiny model and small sizes: a check, not a figure")
    args = parser.parse_args(argv)
    forward_size, photo_size = ((64, 96), (48, 64)) if args.quick else ((384, 512), (480, 640))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = args.checkpoint
        if folder is None or not (folder / "config.json").exists():
            folder = folder or scratch / "checkpoint"
            build_checkpoint(folder, full=not args.quick)
        result = {
            "machine": machine_facts(),
            "commit": commit(),
            "model": "nyu-kitti tiny" if args.quick else "nyu-kitti, released architecture, re-drawn weights",
            "forward_fp32": time_forwards(folder, *forward_size, args.runs),
            "files_3d": time_3d_files(*photo_size, args.runs, scratch),
        }
    forward = result["forward_fp32"]
    print(
        f"forward fp32 {forward['median_s']['default']:.3f} s, with uncertainty "
        f"{forward['median_s']['with_uncertainty']:.3f} s ({100 * forward['extra_fraction']:+.1f}%)"
    )
    files = result["files_3d"]
    print(f"3D files for a {photo_size[0]}x{photo_size[1]} photo: {files['median_s']} ({files['kept_points']} points)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
