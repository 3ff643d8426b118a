"""Evaluation on a folder of images with ground-truth depth: the `zoedepth-jax eval` command's work.

Folder layout (searched recursively; `pairs` holds the rules, which fine-tuning reads its data by too): every
image `<name>.<ext>` (jpg, png, ...) with its ground truth beside it as `<name>_depth.png`, a 16-bit greyscale PNG
holding depth x `depth_scale` (0 = no depth). KITTI's ground truth uses 256 per meter; NYU-v2 exports and
`zoedepth-jax predict` use millimetres (1000 per meter).

Per image, as the original's `evaluate.py` with its flip augmentation: the `DepthEstimator` predicts depth at the
image's size, averaged with the prediction for the mirrored image (ZoeDepth; a metric Depth Anything model runs
each image once, as transformers does; relative models are refused); `metrics.compute_metrics` resizes it to the
ground truth's size if that differs, clips it to the depth range and compares the valid pixels inside the crop.
The dataset's figures are the means over images. Unlike the original (which resizes the input inside the model
and the prediction bilinearly), the estimator pads and resizes as transformers' image processors do; the
original's KITTI input crop (`do_kb_crop`) and NYU border handling are preprocessing, left to the folder's images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zoedepth_jax.domains import DEPTH_RANGES
from zoedepth_jax.errors import ArgumentError, ImageError
from zoedepth_jax.evaluation.metrics import METRIC_NAMES, average_metrics, compute_metrics
from zoedepth_jax.evaluation.pairs import DEPTH_SUFFIX as DEPTH_SUFFIX  # the pair rules, shared with training
from zoedepth_jax.evaluation.pairs import find_pairs as find_pairs
from zoedepth_jax.evaluation.pairs import read_depth_png
from zoedepth_jax.inference.estimator import METRIC_DEPTH_KEY, DepthEstimator, PreparedImage

CHUNK_IMAGES = 16  # images loaded and predicted at a time: memory stays flat for folders of any size


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How predictions are compared: the depth range (meters, exclusive) of valid ground truth, to which the
    prediction is also clipped, the crop (see `metrics.crop_mask`) and the ground-truth PNG scale (per meter)."""

    min_depth: float
    max_depth: float
    crop: str
    depth_scale: float

    def __post_init__(self):
        if not 0 <= self.min_depth < self.max_depth or self.depth_scale <= 0:
            raise ArgumentError(f"need 0 <= min depth < max depth and a positive depth scale, got {self}")


# The original's evaluation settings (utils/config.py DATASETS_CONFIG): NYU-v2 with Eigen's crop, KITTI with
# Garg's crop, each over its domain's depth range; the PNG scales are the datasets' usual ones.
DATASETS = {
    "nyu": EvalSettings(*DEPTH_RANGES["nyu"], crop="eigen_nyu", depth_scale=1000.0),
    "kitti": EvalSettings(*DEPTH_RANGES["kitti"], crop="garg", depth_scale=256.0),
}


@dataclasses.dataclass(frozen=True)
class ImageResult:
    image: Path
    metrics: dict[str, float] | None  # None: no valid ground-truth pixel in the crop and range
    error: str | None = None  # the image or its ground truth could not be read


def evaluate_pairs(
    estimator: DepthEstimator,
    pairs: list[tuple[Path, Path]],
    settings: EvalSettings,
    progress: Callable[[int], None] | None = None,
) -> list[ImageResult]:
    """Predicts and scores every pair; results in the order of `pairs`. An unreadable image or ground truth is
    a result with an error (the others go on). The estimator must predict meters: a relative model is an
    ArgumentError."""
    if estimator.relative:
        raise ArgumentError(
            "evaluation compares depth in meters with the ground truth; this model predicts relative depth "
            "(affine-invariant inverse depth, no unit): evaluate a metric model (ZoeDepth, or a Depth Anything "
            "Metric checkpoint)"
        )
    results: list[ImageResult] = []
    for start in range(0, len(pairs), CHUNK_IMAGES):
        chunk = pairs[start : start + CHUNK_IMAGES]
        loaded: dict[int, tuple[np.ndarray, PreparedImage]] = {}
        errors: dict[int, str] = {}
        for k, (image, depth) in enumerate(chunk):
            try:
                loaded[k] = read_depth_png(depth, settings.depth_scale), estimator.prepare(image, name=str(image))
            except ImageError as e:
                errors[k] = str(e)
        if progress is not None and errors:
            progress(len(errors))
        predictions = estimator.predict_prepared([prepared for _, prepared in loaded.values()], progress=progress)
        scores = {
            k: compute_metrics(
                truth, prediction[METRIC_DEPTH_KEY], settings.min_depth, settings.max_depth, settings.crop
            )
            for (k, (truth, _)), prediction in zip(loaded.items(), predictions, strict=True)
        }
        results.extend(ImageResult(image, scores.get(k), errors.get(k)) for k, (image, _) in enumerate(chunk))
    return results


def format_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    """A plain-text table: one row per (label, metrics), one column per metric (delta1..3, errors)."""
    width = max([len("images")] + [len(label) for label, _ in rows])
    header = f"{'':<{width}}  " + "  ".join(f"{name:>8}" for name in METRIC_NAMES)
    lines = [header]
    for label, metrics in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{metrics[name]:>8.4f}" for name in METRIC_NAMES))
    return "\n".join(lines)


def summary_table(results: list[ImageResult], per_image: bool) -> str:
    """The table `zoedepth-jax eval` prints: the mean over the scored images (and each image's row)."""
    scored = [r for r in results if r.metrics is not None]
    rows = [(str(r.image), r.metrics) for r in scored] if per_image else []
    rows.append((f"mean of {len(scored)} images", average_metrics([r.metrics for r in scored])))
    return format_table(rows)
