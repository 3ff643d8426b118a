"""The README's picture: a photo's depth preview beside its uncertainty map, as one PNG.

    python examples/depth_and_uncertainty_picture.py --model Intel/zoedepth-nyu-kitti --out assets/example_depth_std.png
    python examples/depth_and_uncertainty_picture.py --redrawn --out assets/example_depth_std.png

With `--redrawn` (when the released weights cannot be reached) the model is the released nyu-kitti architecture
with re-drawn random weights, and the picture says so in its caption: it shows the layout of the output, not what
the released model sees.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from zoedepth_jax import DepthEstimator
from zoedepth_jax.inference.depth_images import colorize

ROOT = Path(__file__).resolve().parents[1]
CAPTION_HEIGHT = 40


def picture(estimator: DepthEstimator, photo: Path, caption: str) -> Image.Image:
    """[depth preview | uncertainty map] of `photo`, with `caption` under them."""
    result = estimator(str(photo))
    depth, uncertainty = colorize(result["predicted_depth"]), result["depth_std_image"]
    width, height = depth.size
    canvas = Image.new("RGB", (2 * width, height + CAPTION_HEIGHT), "white")
    canvas.paste(depth, (0, 0))
    canvas.paste(uncertainty, (width, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, height + 8), "depth (near = bright)", fill="black")
    draw.text((width + 8, height + 8), "depth std (uncertain = bright)", fill="black")
    draw.text((8, height + 22), caption, fill=(160, 0, 0))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="hub id or checkpoint folder")
    source.add_argument("--redrawn", action="store_true", help="the released architecture with re-drawn weights")
    parser.add_argument("--photo", type=Path, default=ROOT / "assets" / "example.jpg")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model, caption = args.model, f"model: {args.model}"
        if args.redrawn:
            sys.path.insert(0, str(ROOT / "tests"))
            import reference

            model = Path(scratch) / "redrawn"
            reference.build("nyu-kitti", model, seed=0, full=True)
            caption = "RE-DRAWN RANDOM WEIGHTS: shows the output's layout, not the released model's depth"
        estimator = DepthEstimator(model, uncertainty=True)
        picture(estimator, args.photo, caption).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
