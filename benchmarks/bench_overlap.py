"""Is the device the bottleneck of folder inference? Throughput of `predict`'s folder runner (decode, preprocess,
model, post-process, PNG encode and writes, overlapped on worker threads) against the model alone.

    python benchmarks/bench_overlap.py [--images 24] [--size 480x640] [--runs 3] [--json FILE]

Model: the tiny test architecture (re-drawn weights), so that I/O is as large a share as it gets; the full-size
model only makes the device's share bigger. Reports, as medians over `--runs`:
  read / write   decode + preprocess alone; colour preview + PNG encode + writes alone
  compute only   `DepthEstimator.predict_prepared` on images already decoded and processed (model + post-process)
  serial         decode+preprocess, compute and writes one after another (the sum of the three timed apart)
  overlapped     `zoedepth_jax.inference.folders.run_jobs` on the folder, as `zoedepth-jax predict` runs it
The aim is overlapped throughput >= 90% of compute-only throughput: reading and writing hidden behind the model.
Needs the `bench` extra (transformers builds the test model).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", default="480x640", help="HEIGHTxWIDTH of the photos")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))

    import reference
    from PIL import Image

    from zoedepth_jax import DepthEstimator
    from zoedepth_jax.inference import folders

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference.build("nyu-kitti", tmp / "checkpoint", seed=0)
        photos = tmp / "photos"
        photos.mkdir()
        for k in range(args.images):
            Image.fromarray(reference.photo_like(height, width, seed=k)).save(photos / f"photo{k:03d}.jpg", quality=90)
        estimator = DepthEstimator(tmp / "checkpoint", flip=False, batch_size=args.batch_size)
        jobs, _ = folders.collect_jobs([str(photos)], tmp / "out")

        def timed(fn):
            start = time.perf_counter()
            result = fn()
            return time.perf_counter() - start, result

        estimator.predict_prepared([estimator.prepare(job.source) for job in jobs])  # compile
        times = {"read": [], "compute_only": [], "write": [], "serial": [], "overlapped": []}
        for _ in range(args.runs):
            shutil.rmtree(tmp / "out", ignore_errors=True)
            read_s, prepared = timed(lambda: [estimator.prepare(job.source) for job in jobs])
            compute_s, results = timed(lambda: estimator.predict_prepared(prepared))  # noqa: B023
            write_s, _ = timed(
                lambda: [folders.write_outputs(j, r, folders.Outputs()) for j, r in zip(jobs, results, strict=True)]  # noqa: B023
            )
            times["read"].append(read_s)
            times["write"].append(write_s)
            times["compute_only"].append(compute_s)
            times["serial"].append(read_s + compute_s + write_s)
            shutil.rmtree(tmp / "out")
            overlapped_s, summary = timed(
                lambda: folders.run_jobs(jobs, estimator, folders.Outputs(), progress=False, log=lambda _: None)
            )
            assert summary.done == len(jobs), summary
            times["overlapped"].append(overlapped_s)

    median = {name: statistics.median(t) for name, t in times.items()}
    images_per_s = {name: args.images / m for name, m in median.items()}
    result = {
        "images": args.images,
        "photo_size": [height, width],
        "batch_size": args.batch_size,
        "runs": args.runs,
        "median_s": median,
        "images_per_s": images_per_s,
        "overlapped_over_compute_only": images_per_s["overlapped"] / images_per_s["compute_only"],
        "serial_over_compute_only": images_per_s["serial"] / images_per_s["compute_only"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
