"""The README's picture with re-drawn weights: a photo's depth preview beside its uncertainty map, as one PNG.

    python examples/depth_and_uncertainty_picture.py --out assets/example_depth_std.png

The model is the released nyu-kitti architecture with re-drawn random weights, and the picture says so in its
caption: it shows the layout of the output, not what the released model sees. The picture from the released
weights comes from `zoedepth-jax selfcheck --write-example`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from zoedepth_jax import DepthEstimator
from zoedepth_jax.inference.depth_images import depth_and_uncertainty_picture

ROOT = Path(__file__).resolve().parents[1]
CAPTION = "RE-DRAWN RANDOM WEIGHTS: shows the output's layout, not the released model's depth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=ROOT / "assets" / "example.jpg")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import reference

    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "redrawn"
        reference.build("nyu-kitti", model, seed=0, full=True)
        result = DepthEstimator(model, uncertainty=True)(str(args.photo))
        depth_and_uncertainty_picture(result["predicted_depth"], result["depth_std"], CAPTION).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
