"""The `zoedepth-jax` command: metric depth maps from images, and checkpoint conversion.

    zoedepth-jax predict photo.jpg other.png --out depth_out
    zoedepth-jax convert Intel/zoedepth-nyu-kitti ./zoedepth-nyu-kitti-flax

JAX is imported only when a command runs, so that `--help` answers at once.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zoedepth_jax.errors import ZoeDepthError

DEFAULT_MODEL = "Intel/zoedepth-nyu-kitti"
DEFAULT_OUT = "depth_out"
DTYPES = ("float32", "bfloat16")
ROUTINGS = ("per_image", "batch")

_DESCRIPTION = """\
ZoeDepth metric monocular depth in JAX: estimates, for every pixel of a photo, its distance from the camera
in meters."""

_PREDICT_DESCRIPTION = """\
Estimates metric depth for each IMAGE and writes three files per image into --out, named after the image
(photo.jpg gives photo_depth.png, photo_depth.npy, photo_depth_color.png):

  <stem>_depth.png        depth as a 16-bit greyscale PNG holding uint16 MILLIMETRES
                          (value 1235 = 1.235 m; 0 and 65535 are the clipping limits, 0..65.535 m)
  <stem>_depth.npy        depth as a float32 numpy array in METERS (np.load), same height x width as the image
  <stem>_depth_color.png  a coloured picture for viewing only: near is bright, far is dark

All outputs have the size of the source image. An image that cannot be read is reported and skipped; the exit
status is then 1. Images with the same file name in different folders overwrite each other's outputs.

Note: images are prepared with a provisional resize (to about 384x512, sides multiples of 32, keeping the
aspect ratio), not yet the exact transformers ZoeDepthImageProcessor, so depths can differ slightly from
transformers' pipeline."""

_CONVERT_DESCRIPTION = """\
Reads a checkpoint (a Hugging Face hub id such as Intel/zoedepth-nyu-kitti, or a local folder holding
config.json and model.safetensors / pytorch_model.bin / flax_model.safetensors) and writes it to OUT as
config.json + flax_model.safetensors, a folder that `predict --model OUT` and `from_pretrained(OUT)` load
quickly and without torch."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoedepth-jax", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    predict = commands.add_parser(
        "predict",
        help="estimate depth maps for images (writes 16-bit millimetre PNGs, float32 meter .npy, colour previews)",
        description=_PREDICT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads: JPEG, PNG, ...)"
    )
    predict.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="ID_OR_DIR",
        help=f"hub id or local checkpoint folder (default: {DEFAULT_MODEL}; downloaded once, then cached)",
    )
    predict.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder for the outputs, created if needed (default: {DEFAULT_OUT})",
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
        help="for models with several heads (e.g. nyu-kitti: indoor/outdoor): per_image (default) lets each image "
        "choose its head; batch applies transformers' one-head-per-batch rule (same result for one image)",
    )
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


def _write_atomically(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Writes through a temporary file in the same folder, then renames it over `path` (no half-written files)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _write_outputs(stem: Path, depth: np.ndarray) -> None:
    """Writes `<stem>.png` (uint16 mm), `<stem>.npy` (float32 m) and `<stem>_color.png`, each atomically."""
    from zoedepth_jax import imaging

    png16 = imaging.depth_to_png16(depth)
    color = imaging.colorize(depth)
    _write_atomically(stem.with_name(stem.name + ".png"), lambda f: png16.save(f, format="PNG"))
    _write_atomically(stem.with_name(stem.name + ".npy"), lambda f: np.save(f, depth))
    _write_atomically(stem.with_name(stem.name + "_color.png"), lambda f: color.save(f, format="PNG"))


def _depth_summary(depth: np.ndarray) -> str:
    finite = depth[np.isfinite(depth)]
    if finite.size == 0:
        return "depth: no finite values"
    return f"depth min {finite.min():.3f} m  median {np.median(finite):.3f} m  max {finite.max():.3f} m"


def _predict(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp

    from zoedepth_jax import imaging
    from zoedepth_jax.weights import from_pretrained

    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ZoeDepthError(f"cannot create the output folder {out_dir}: {e}") from None
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    model, variables = from_pretrained(args.model, dtype=dtype, routing=args.routing)
    apply = jax.jit(model.apply)  # compiled once per distinct input size

    failed = 0
    for image_path in args.images:
        try:
            image = imaging.load_rgb(image_path)
            pixel_values, source_size = imaging.simple_preprocess(image)
            output = apply(variables, jnp.asarray(pixel_values))
            depth = np.asarray(output.predicted_depth[0], dtype=np.float32)
            depth = imaging.resize_depth(depth, source_size)
            stem = out_dir / f"{Path(image_path).stem}_depth"
            _write_outputs(stem, depth)
        except (ZoeDepthError, OSError) as e:
            failed += 1
            message = str(e) if isinstance(e, imaging.ImageError) else f"{image_path}: {e}"
            print(f"error: {message} (skipped)", file=sys.stderr)
            continue
        print(
            f"{image_path}: {source_size[1]}x{source_size[0]}  {_depth_summary(depth)}  -> {stem}.png/.npy/_color.png"
        )
        bad = int(depth.size - np.count_nonzero(np.isfinite(depth)))
        if bad:
            print(
                f"warning: {image_path}: {bad} of {depth.size} depths are not finite (NaN/inf); "
                "they are stored as 0 in the 16-bit PNG and drawn as far in the colour image",
                file=sys.stderr,
            )
        sys.stdout.flush()
    if failed:
        print(f"{failed} of {len(args.images)} image(s) failed", file=sys.stderr)
        return 1
    return 0


def _convert(args: argparse.Namespace) -> int:
    import jax

    from zoedepth_jax.weights import CONFIG_NAME, FLAX_WEIGHTS_NAME, from_pretrained, save_pretrained

    start = time.perf_counter()
    out = Path(args.out)
    existing = [str(out / name) for name in (CONFIG_NAME, FLAX_WEIGHTS_NAME) if (out / name).exists()]
    if existing and not args.overwrite:  # checked before the (slow) load; save_pretrained checks again
        raise ZoeDepthError(f"not overwriting {', '.join(existing)} (pass --overwrite)")
    model, variables = from_pretrained(args.src)
    try:
        save_pretrained(out, model, variables, overwrite=args.overwrite)
    except FileExistsError as e:
        raise ZoeDepthError(f"{e}; pass --overwrite") from None
    except OSError as e:
        raise ZoeDepthError(f"cannot write {out}: {e}") from None
    seconds = time.perf_counter() - start
    num_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(variables["params"]))
    written = sum((out / name).stat().st_size for name in (CONFIG_NAME, FLAX_WEIGHTS_NAME))
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
