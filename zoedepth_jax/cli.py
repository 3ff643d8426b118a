"""The `zoedepth-jax` command: metric depth maps for images and folders, and checkpoint conversion.

    zoedepth-jax predict photo.jpg holiday_photos/ --out depth_out
    zoedepth-jax convert Intel/zoedepth-nyu-kitti ./zoedepth-nyu-kitti-flax

JAX is imported only when a command runs, so that `--help` answers at once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoedepth_jax.errors import ZoeDepthError

DEFAULT_MODEL = "Intel/zoedepth-nyu-kitti"
DEFAULT_OUT = "depth_out"
DTYPES = ("float32", "bfloat16")
ROUTINGS = ("per_image", "batch")
# Files a folder is searched for (case-insensitive); a file named on the command line is tried whatever its name.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
# Images loaded and processed at a time: enough for several full batches per processed shape.
CHUNK_BATCHES = 4

_DESCRIPTION = """\
ZoeDepth metric monocular depth in JAX: estimates, for every pixel of a photo, its distance from the camera
in meters.

  zoedepth-jax predict photo.jpg --out depth_out        depth maps for images and folders
  zoedepth-jax convert Intel/zoedepth-nyu ./nyu-flax   a checkpoint as a folder that loads without torch

Run `zoedepth-jax COMMAND --help` for the options of each command."""

_PREDICT_DESCRIPTION = """\
Estimates metric depth for each IMAGE (a file, or a folder searched recursively for .jpg/.png/.bmp/.tif/.webp
files) and writes into --out, per image, named after it (photo.jpg gives photo_depth.png, ...):

  <name>_depth.png        depth as a 16-bit greyscale PNG of MILLIMETRES (uint16: 1235 = 1.235 m;
                          0..65535 = 0..65.535 m, farther is clipped to 65535), the KITTI convention
  <name>_depth_color.png  a coloured picture for viewing (near is bright, far is dark); --no-color skips it
  <name>_depth.npy        with --npy: the depth as float32 METERS (numpy.load), exact

Every output has the size of its source image. Images found in a folder keep their sub-folder under --out.
Images are prepared exactly as transformers' ZoeDepthImageProcessor does (reflect padding, resize to a multiple
of 32 near 384x512) and, by default, also run mirrored with the two depths averaged (--no-flip halves the
time). Outputs that already exist are skipped, so an interrupted run resumes where it stopped (--overwrite
redoes them). An image that cannot be read is reported and skipped; the others go on and the exit status is 1.

Works offline with a local checkpoint folder: --model ./zoedepth-nyu-kitti (see `zoedepth-jax convert`)."""

_CONVERT_DESCRIPTION = """\
Reads a checkpoint (a Hugging Face hub id such as Intel/zoedepth-nyu-kitti, or a local folder holding
config.json and model.safetensors / pytorch_model.bin / flax_model.safetensors) and writes it to OUT as
config.json + flax_model.safetensors (+ preprocessor_config.json when the source has one), a folder that
`predict --model OUT` and `from_pretrained(OUT)` load quickly and without torch."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoedepth-jax", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    predict = commands.add_parser(
        "predict",
        help="depth maps for images and folders (16-bit millimetre PNGs, colour previews, optional .npy)",
        description=_PREDICT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files and/or folders of images")
    predict.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="ID_OR_DIR",
        help=f"hub id or local checkpoint folder (default: {DEFAULT_MODEL}, indoor and outdoor; downloaded once)",
    )
    predict.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"folder for the outputs (default: {DEFAULT_OUT})"
    )
    predict.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per model call (default 1)")
    predict.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="average with the prediction for the mirrored image, as the original ZoeDepth does (default: on)",
    )
    predict.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="compute type of the backbone and neck: float32 (default, exact) or bfloat16 (faster on GPU/TPU, "
        "slightly less accurate); weights stay float32",
    )
    predict.add_argument(
        "--routing",
        choices=ROUTINGS,
        default="per_image",
        help="for models with several heads (nyu-kitti: indoor/outdoor): per_image (default) lets each image "
        "choose its head; batch applies transformers' one-head-per-batch rule (same result for one image)",
    )
    predict.add_argument("--npy", action="store_true", help="also write float32 meters as <name>_depth.npy")
    predict.add_argument("--no-color", action="store_true", help="do not write the colour preview")
    predict.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.set_defaults(func=_predict)

    convert = commands.add_parser(
        "convert",
        help="convert a checkpoint (hub id or folder) into a Flax-native folder that loads without torch",
        description=_CONVERT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("src", metavar="SRC", help="hub id (e.g. Intel/zoedepth-nyu-kitti) or local checkpoint folder")
    convert.add_argument("out", metavar="OUT", help="folder to write config.json and flax_model.safetensors into")
    convert.add_argument("--overwrite", action="store_true", help="replace the files if OUT already holds them")
    convert.set_defaults(func=_convert)
    return parser


@dataclass(frozen=True)
class Job:
    """One image to do: where it is read from and the stem its outputs are written under (`<stem>.png`, ...)."""

    source: Path
    stem: Path

    def outputs(self, npy: bool, color: bool) -> list[Path]:
        paths = [self.stem.with_name(self.stem.name + ".png")]
        if color:
            paths.append(self.stem.with_name(self.stem.name + "_color.png"))
        if npy:
            paths.append(self.stem.with_name(self.stem.name + ".npy"))
        return paths


def collect_jobs(inputs: list[str], out_dir: Path) -> tuple[list[Job], list[str]]:
    """Expands files and folders into jobs; returns them and the inputs that do not exist.

    A folder is searched recursively for IMAGE_SUFFIXES, skipping anything inside `out_dir`, and its images keep
    their relative sub-folder under `out_dir`. Two inputs that would write the same outputs are an error.
    """
    jobs, missing = [], []
    out_resolved = out_dir.resolve()
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                if out_resolved in file.resolve().parents:
                    continue  # our own outputs, from an earlier run with --out inside the input folder
                relative = file.relative_to(path)
                jobs.append(Job(file, out_dir / relative.parent / f"{relative.stem}_depth"))
        elif path.is_file():
            jobs.append(Job(path, out_dir / f"{path.stem}_depth"))
        else:
            missing.append(name)
    by_stem: dict[Path, list[Path]] = {}
    for job in jobs:
        by_stem.setdefault(job.stem, []).append(job.source)
    clashes = {stem: sources for stem, sources in by_stem.items() if len(sources) > 1}
    if clashes:
        listed = "; ".join(f"{', '.join(map(str, s))} -> {stem}.png" for stem, s in clashes.items())
        raise ZoeDepthError(f"inputs would overwrite each other's outputs: {listed} (rename, or run them separately)")
    return jobs, missing


def _write_outputs(job: Job, depth: np.ndarray, npy: bool, color: bool) -> None:
    from zoedepth_jax import imaging
    from zoedepth_jax.files import write_atomically

    def save_npy(temp: str) -> None:
        with open(temp, "wb") as f:
            np.save(f, depth)

    job.stem.parent.mkdir(parents=True, exist_ok=True)
    paths = job.outputs(npy, color)
    # The 16-bit PNG is written last: its presence marks the image as done for a resumed run.
    if color:
        preview = imaging.colorize(depth)
        write_atomically(paths[1], lambda temp: preview.save(temp, format="PNG"))
    if npy:
        write_atomically(paths[-1], save_npy)
    png16 = imaging.depth_to_png16(depth)
    write_atomically(paths[0], lambda temp: png16.save(temp, format="PNG"))


def _depth_summary(depth: np.ndarray) -> str:
    finite = depth[np.isfinite(depth)]
    if finite.size == 0:
        return "depth: no finite values"
    return f"depth min {finite.min():.3f} m  median {np.median(finite):.3f} m  max {finite.max():.3f} m"


def _predict(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ZoeDepthError(f"--batch-size must be at least 1, got {args.batch_size}")
    out_dir = Path(args.out)
    jobs, missing = collect_jobs(args.inputs, out_dir)
    for name in missing:
        print(f"error: {name}: no such file or folder (skipped)", file=sys.stderr)
    todo = [
        job for job in jobs if args.overwrite or not all(p.exists() for p in job.outputs(args.npy, not args.no_color))
    ]
    skipped = len(jobs) - len(todo)
    if skipped:
        print(f"{skipped} image(s) already done in {out_dir}, skipped (--overwrite redoes them)", file=sys.stderr)
    failed = len(missing)
    if todo:
        failed += _run_jobs(todo, args)
    if not jobs and not missing:
        print("no images found in the given folders", file=sys.stderr)
    done = len(todo) - (failed - len(missing))
    print(f"{done} done, {skipped} skipped, {failed} failed; outputs in {out_dir}", file=sys.stderr)
    return 1 if failed else 0


def _run_jobs(jobs: list[Job], args: argparse.Namespace) -> int:
    """Runs the model over `jobs`, writing outputs as it goes; returns how many failed."""
    import jax.numpy as jnp
    from tqdm import tqdm

    from zoedepth_jax.pipeline import DepthEstimator

    estimator = DepthEstimator(
        args.model,
        flip=args.flip,
        batch_size=args.batch_size,
        dtype={"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype],
        routing=args.routing,
    )
    failed = 0
    color = not args.no_color
    chunk_size = args.batch_size * CHUNK_BATCHES
    with tqdm(total=len(jobs), unit="image", disable=args.no_progress, file=sys.stderr) as bar:
        for start in range(0, len(jobs), chunk_size):
            ready, prepared = [], []
            for job in jobs[start : start + chunk_size]:
                try:
                    prepared.append(estimator.prepare(job.source, name=str(job.source)))
                    ready.append(job)
                except ZoeDepthError as e:
                    failed += 1
                    bar.write(f"error: {e} (skipped)", file=sys.stderr)
                    bar.update(1)
            for job, depth in zip(ready, estimator.predict_prepared(prepared, progress=bar.update), strict=True):
                try:
                    _write_outputs(job, depth, args.npy, color)
                except OSError as e:
                    failed += 1
                    bar.write(f"error: {job.source}: cannot write outputs: {e}", file=sys.stderr)
                    continue
                bar.write(f"{job.source}: {depth.shape[1]}x{depth.shape[0]}  {_depth_summary(depth)}")
                bad = int(depth.size - np.count_nonzero(np.isfinite(depth)))
                if bad:
                    bar.write(
                        f"warning: {job.source}: {bad} of {depth.size} depths are not finite; they are stored "
                        "as 0 in the 16-bit PNG and drawn as far in the colour image",
                        file=sys.stderr,
                    )
    return failed


def _convert(args: argparse.Namespace) -> int:
    import jax

    from zoedepth_jax.files import write_atomically
    from zoedepth_jax.processing import ZoeDepthImageProcessor
    from zoedepth_jax.weights import (
        CONFIG_NAME,
        FLAX_WEIGHTS_NAME,
        PREPROCESSOR_CONFIG_NAME,
        from_pretrained,
        resolve,
        save_pretrained,
    )

    start = time.perf_counter()
    out = Path(args.out)
    names = (CONFIG_NAME, FLAX_WEIGHTS_NAME, PREPROCESSOR_CONFIG_NAME)
    existing = [str(out / name) for name in names if (out / name).exists()]
    if existing and not args.overwrite:  # checked before the (slow) load; save_pretrained checks again
        raise ZoeDepthError(f"not overwriting {', '.join(existing)} (pass --overwrite)")

    print(f"[1/3] finding {args.src}", file=sys.stderr)
    folder = resolve(args.src)
    print(f"[2/3] reading and converting the weights in {folder}", file=sys.stderr)
    model, variables = from_pretrained(folder)
    processor_config = folder / PREPROCESSOR_CONFIG_NAME
    if processor_config.is_file():
        ZoeDepthImageProcessor.from_json_file(processor_config)  # refuse to pass on settings we cannot run
    print(f"[3/3] writing {out}", file=sys.stderr)
    try:
        save_pretrained(out, model, variables, overwrite=args.overwrite)
        if processor_config.is_file():
            write_atomically(out / PREPROCESSOR_CONFIG_NAME, lambda temp: shutil.copyfile(processor_config, temp))
    except FileExistsError as e:
        raise ZoeDepthError(f"{e}; pass --overwrite") from None
    except OSError as e:
        raise ZoeDepthError(f"cannot write {out}: {e}") from None
    seconds = time.perf_counter() - start
    num_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(variables["params"]))
    written = sum((out / name).stat().st_size for name in names if (out / name).exists())
    print(f"converted {args.src} -> {out}")
    print(f"  parameters:    {num_params:,}")
    print(f"  bytes written: {written:,} ({written / 2**20:.1f} MiB)")
    print(f"  seconds:       {seconds:.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 some images failed, 2 error)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ZoeDepthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
