"""A folder of mixed-size photos through `DepthEstimator`, against transformers' processor + model +
post-processing on the same files in the same run: images/s with and without flip, and compile counts.

    python benchmarks/bench_pipeline.py [--size full|tiny] [--repeat 1] [--batch-size 1] [--json FILE]

The folder holds photos of four aspect ratios at several resolutions (4:3 and 3:4, 16:9, 3:2), written as JPEG
and PNG, so the run covers decoding, processing, the model (compiled once per processed shape) and
post-processing. Both sides read the same files. `--size full` is the released architecture (BEiT-L, re-drawn
weights); `tiny` is a small model for a quick check of the plumbing. Needs the `bench` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# (height, width) of the photos: 480x640 and 600x800 share a processed shape (384x512), so do 720x1280 and
# 540x960; 640x480 and 400x600 have shapes of their own.
PHOTO_SIZES = [(480, 640), (600, 800), (640, 480), (720, 1280), (540, 960), (400, 600)]


def write_folder(folder: Path) -> list[Path]:
    import reference
    from PIL import Image

    folder.mkdir(parents=True)
    paths = []
    for k, (height, width) in enumerate(PHOTO_SIZES):
        path = folder / f"photo{k}.{'jpg' if k % 2 == 0 else 'png'}"
        Image.fromarray(reference.photo_like(height, width, seed=k)).save(path)
        paths.append(path)
    return paths


def measure(folder: Path, hf_model, paths: list[Path], flip: bool, batch_size: int, repeat: int) -> dict:
    """Both sides over the same files: our first pass (with its compiles), then `repeat` interleaved passes."""
    import numpy as np
    import reference
    from PIL import Image

    from zoedepth_jax import DepthEstimator

    estimator = DepthEstimator(folder, flip=flip, batch_size=batch_size)

    def ours():
        return [d["predicted_depth"] for d in estimator(paths)]

    def theirs():  # what a transformers user writes: processor, model (twice with flip), post-processing
        return [reference.hf_depth_pipeline(hf_model, np.asarray(Image.open(p).convert("RGB")), flip) for p in paths]

    start = time.perf_counter()
    depths_ours = ours()
    first_pass = time.perf_counter() - start
    depths_theirs = theirs()  # warm-up
    times = {"zoedepth_jax": [], "transformers": []}
    for _ in range(repeat):
        for name, run in (("zoedepth_jax", ours), ("transformers", theirs)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    shapes = {estimator.processor.processed_size(*depth.shape) for depth in depths_ours}
    return {
        "zoedepth_jax_first_pass_s": first_pass,
        "compiles": estimator.compile_count,
        "processed_shapes": len(shapes),
        "median_pass_s": median,
        "images_per_s": {name: len(paths) / m for name, m in median.items()},
        "speedup_jax_over_transformers": median["transformers"] / median["zoedepth_jax"],
        "max_relative_depth_difference": max(
            float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(depths_ours, depths_theirs, strict=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over the folder, interleaved")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import jax
    import reference
    import torch

    results = {"size": args.size, "images": len(PHOTO_SIZES), "photo_sizes": PHOTO_SIZES, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        hf_model = reference.build("nyu-kitti", checkpoint, seed=0, full=args.size == "full")
        reference.hf_processor().save_pretrained(checkpoint)
        paths = write_folder(Path(tmp) / "photos")
        for flip in (False, True):
            results["flip" if flip else "no_flip"] = measure(
                checkpoint, hf_model, paths, flip, args.batch_size, args.repeat
            )
    results |= {
        "jax_version": jax.__version__,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
