"""Depth evaluation metrics as the original ZoeDepth computes them (isl-org ZoeDepth `zoedepth/utils/misc.py`,
`compute_errors` and `compute_metrics`; averaging as `evaluate.py`).

Host-side numpy in float64: the valid pixels of each image are a data-dependent selection, and evaluation runs
once per image. Per image: the prediction is resized to the ground truth's size (bilinear, `align_corners=True`)
when the sizes differ and clipped to the evaluation range; pixels whose ground truth lies strictly inside the
range, and inside the crop, are compared. A dataset's figure is the mean of the per-image figures (each image
counts once, whatever its number of valid pixels), as the original's running average.

Metric names: `delta1..3` are the original's `a1..a3`, `log10` its `log_10`; the others keep their names.
"""

from __future__ import annotations

import numpy as np

from zoedepth_jax.errors import ArgumentError
from zoedepth_jax.ops import resize_bilinear

METRIC_NAMES = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
CROPS = ("none", "garg", "eigen_kitti", "eigen_nyu")

# Row and column fractions of the crops, as the original writes them: (top, bottom, left, right), each bound
# int(fraction * size). Garg's crop and the KITTI variant of Eigen's are defined this way for any image size.
_FRACTION_CROPS = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen_kitti": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
}
# Eigen's NYU crop: rows 45:471, columns 41:601 of the 480x640 NYU-v2 frames.
_NYU_EIGEN_CROP = ((45, 471, 480), (41, 601, 640))


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The nine metrics over matching 1-D arrays of valid ground-truth and predicted depths (meters, > 0).

    delta_k: share of pixels with max(gt/pred, pred/gt) < 1.25^k (strictly); abs_rel: mean |gt - pred| / gt;
    sq_rel: mean (gt - pred)^2 / gt; rmse: sqrt(mean (gt - pred)^2); rmse_log: sqrt(mean (ln gt - ln pred)^2);
    log10: mean |log10 gt - log10 pred|; silog: 100 * sqrt(mean(e^2) - mean(e)^2) with e = ln pred - ln gt
    (the biased variance, no beta: this is the metric, not the training loss).
    """
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    ratio = np.maximum(gt / pred, pred / gt)
    log_error = np.log(pred) - np.log(gt)
    return {
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(log_error**2))),
        "log10": float(np.mean(np.abs(np.log10(gt) - np.log10(pred)))),
        "silog": float(100 * np.sqrt(np.mean(log_error**2) - np.mean(log_error) ** 2)),
    }


def crop_mask(shape: tuple[int, int], crop: str) -> np.ndarray:
    """`[H, W]` bool: the evaluation crop of an image of `shape`.

    "garg" and "eigen_kitti" use the original's fractions of the size. "eigen_nyu" is rows 45:471, columns
    41:601 at 480x640, as the original; at other sizes it takes the same fractions, rounded down (the original
    applies the 480x640 indices to any size). "none": every pixel.
    """
    if crop not in CROPS:
        raise ArgumentError(f"crop = {crop!r}: expected one of {CROPS}")
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    if crop == "none":
        mask[:] = True
    elif crop == "eigen_nyu":
        (top, bottom, rows), (left, right, columns) = _NYU_EIGEN_CROP
        mask[top * height // rows : bottom * height // rows, left * width // columns : right * width // columns] = True
    else:
        top, bottom, left, right = _FRACTION_CROPS[crop]
        mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask


def compute_metrics(
    gt: np.ndarray, pred: np.ndarray, min_depth: float, max_depth: float, crop: str = "none"
) -> dict[str, float] | None:
    """The metrics of one image: `gt [H, W]` and `pred [h, w]` in meters (gt <= 0 or NaN means no depth).

    The prediction is resized to `gt`'s size if needed, then clipped to [min_depth, max_depth] (+inf to the
    maximum, NaN to the minimum). Pixels with min_depth < gt < max_depth inside the crop are compared. Returns
    None when the image has no such pixel (the original would average NaNs; it is left out here).
    """
    gt = np.asarray(gt, np.float64)
    pred = np.asarray(pred, np.float32)
    if pred.shape != gt.shape:
        pred = resize_bilinear(pred, gt.shape, align_corners=True, axes=(0, 1))
    pred = np.asarray(pred, np.float64)
    pred = np.where(np.isnan(pred), min_depth, np.clip(pred, min_depth, max_depth))
    with np.errstate(invalid="ignore"):  # NaN ground truth compares False: not valid
        valid = (gt > min_depth) & (gt < max_depth) & crop_mask(gt.shape, crop)
    if not valid.any():
        return None
    return compute_errors(gt[valid], pred[valid])


def average_metrics(per_image: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over images (each image weighs the same)."""
    if not per_image:
        raise ArgumentError("no image to average over")
    return {name: float(np.mean([m[name] for m in per_image])) for name in METRIC_NAMES}
