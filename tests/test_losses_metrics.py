"""The SILog loss, the domain cross-entropy and the evaluation metrics on small fixed arrays, against values
computed by hand (in the comments) or by one textbook numpy expression per metric."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from tolerances import LOSS_RELATIVE

from zoedepth_jax.evaluation.metrics import METRIC_NAMES, average_metrics, compute_errors, compute_metrics, crop_mask
from zoedepth_jax.training.losses import domain_cross_entropy, silog_loss

E = math.e


def test_silog_loss_by_hand():
    # Valid pixels: prediction (1, e, 1, e) against target 1, so g = log(pred) - log(target) = (0, 1, 0, 1).
    # mean g = 1/2; unbiased variance = 4 * (1/2)^2 / (4 - 1) = 1/3; Dg = 1/3 + 0.15 * 1/4 = 0.3708333...;
    # loss = 10 * sqrt(Dg) = 6.0896...  The 1e-7 inside the logarithms moves it by ~1e-7.
    # Two masked-out pixels hold values that would dominate (or NaN) the loss if they were read.
    prediction = jnp.array([[[1.0, E, 1.0], [E, 50.0, 3.0]]])
    target = jnp.array([[[1.0, 1.0, 1.0], [1.0, 0.0, jnp.nan]]])
    mask = jnp.array([[[True, True, True], [True, False, False]]])
    expected = 10 * math.sqrt(1 / 3 + 0.15 / 4)
    assert float(silog_loss(prediction, target, mask)) == pytest.approx(expected, rel=LOSS_RELATIVE)
    # beta = 0: the variance alone.
    assert float(silog_loss(prediction, target, mask, beta=0.0)) == pytest.approx(10 / math.sqrt(3), rel=LOSS_RELATIVE)


def test_silog_loss_pools_the_batch_and_ignores_masked_gradients():
    # Two images of one valid pixel each: pooled, g = (0, 1) -> mean 1/2, unbiased variance 1/2,
    # loss = 10 * sqrt(1/2 + 0.15/4). (Per image, the variance of one pixel would be undefined.)
    prediction = jnp.array([[[1.0, 7.0]], [[E, 7.0]]])
    target = jnp.array([[[1.0, 0.0]], [[1.0, 0.0]]])
    mask = jnp.array([[[True, False]], [[True, False]]])
    assert float(silog_loss(prediction, target, mask)) == pytest.approx(
        10 * math.sqrt(0.5 + 0.15 / 4), rel=LOSS_RELATIVE
    )
    grad = jax.grad(silog_loss)(prediction, target, mask)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[:, :, 1] == 0)


def test_silog_loss_resizes_the_prediction_as_torch():
    """A prediction smaller than the target is resized (bilinear, align_corners=True) as the original does."""
    rng = np.random.default_rng(0)
    prediction = rng.uniform(0.5, 5, (2, 6, 8)).astype(np.float32)
    target = rng.uniform(0.5, 5, (2, 9, 13)).astype(np.float32)
    mask = rng.uniform(size=target.shape) < 0.8
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(prediction)[:, None], target.shape[1:], mode="bilinear", align_corners=True
    )[:, 0]
    g = torch.log(resized[mask] + 1e-7) - torch.log(torch.from_numpy(target)[mask] + 1e-7)
    expected = float(10 * torch.sqrt(torch.var(g) + 0.15 * torch.mean(g) ** 2))
    assert float(silog_loss(prediction, target, mask)) == pytest.approx(expected, rel=LOSS_RELATIVE)


def test_domain_cross_entropy_by_hand():
    # -log softmax: image 0 (label nyu=0) log(1 + e^-2) = 0.126928; image 1 (label kitti=1) log(1 + e^-1) = 0.313262.
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2  # 0.220095
    assert float(domain_cross_entropy(logits, jnp.array([0, 1]))) == pytest.approx(expected, rel=1e-6)


# --- evaluation metrics ---------------------------------------------------------------------------------------

GT = np.array([1.0, 2.0, 4.0, 8.0])
PRED = np.array([1.0, 2.5, 3.0, 8.0])


def test_compute_errors_by_hand():
    # Ratios max(gt/pred, pred/gt) = (1, 1.25, 4/3, 1). delta1 counts ratio < 1.25 strictly: 2 of 4.
    # abs_rel = (0 + 0.5/2 + 1/4 + 0) / 4 = 0.125; sq_rel = (0 + 0.25/2 + 1/4 + 0) / 4 = 0.09375;
    # rmse = sqrt((0 + 0.25 + 1 + 0) / 4) = sqrt(0.3125).
    errors = compute_errors(GT, PRED)
    assert errors["delta1"] == 0.5
    assert errors["delta2"] == 1.0 and errors["delta3"] == 1.0
    assert errors["abs_rel"] == pytest.approx(0.125, rel=1e-12)
    assert errors["sq_rel"] == pytest.approx(0.09375, rel=1e-12)
    assert errors["rmse"] == pytest.approx(math.sqrt(0.3125), rel=1e-12)
    # Log metrics, one textbook expression each: e = ln(pred) - ln(gt) = (0, ln 1.25, ln 0.75, 0).
    e = np.log(PRED) - np.log(GT)
    assert errors["rmse_log"] == pytest.approx(math.sqrt((math.log(1.25) ** 2 + math.log(0.75) ** 2) / 4), rel=1e-12)
    assert errors["log10"] == pytest.approx((abs(math.log10(1.25)) + abs(math.log10(0.75))) / 4, rel=1e-12)
    assert errors["silog"] == pytest.approx(100 * math.sqrt(np.mean(e**2) - np.mean(e) ** 2), rel=1e-12)
    assert set(errors) == set(METRIC_NAMES)


def test_compute_metrics_masks_clips_and_resizes():
    # gt 0 (no depth), NaN and >= max_depth are not evaluated; the prediction's NaN becomes min_depth and its
    # inf max_depth before comparing. Valid pixels: gt (2, 4, 5) against pred (2, 10, 1e-3 -> clipped).
    gt = np.array([[0.0, 2.0, np.nan], [4.0, 5.0, 10.0]])
    pred = np.array([[3.0, 2.0, 1.0], [np.inf, np.nan, 2.0]])
    errors = compute_metrics(gt, pred, min_depth=1e-3, max_depth=10.0)
    expected = compute_errors(np.array([2.0, 4.0, 5.0]), np.array([2.0, 10.0, 1e-3]))
    assert errors == pytest.approx(expected, rel=1e-6)
    # A prediction of another size is resized to the ground truth's (bilinear, corners aligned): a 2x2 ramp
    # 1..2 becomes a 3x3 ramp with 1.5 in the middle.
    ramp = np.array([[1.0, 1.0], [2.0, 2.0]], np.float32)
    gt3 = np.array([[1.0, 1.0, 1.0], [1.5, 1.5, 1.5], [2.0, 2.0, 2.0]])
    assert compute_metrics(gt3, ramp, 1e-3, 10.0)["abs_rel"] == pytest.approx(0.0, abs=1e-7)
    assert compute_metrics(np.zeros((2, 2)), ramp, 1e-3, 10.0) is None  # nothing valid


def test_crops_as_the_original_defines_them():
    # Garg: rows int(0.40810811 h):int(0.99189189 h), columns int(0.03594771 w):int(0.96405229 w).
    # KITTI 375x1242 -> rows 153:371 (153.04, 371.96), columns 44:1197 (44.65, 1197.35).
    garg = crop_mask((375, 1242), "garg")
    assert _bounds(garg) == (153, 371, 44, 1197)
    # Eigen (KITTI): rows int(0.3324324 h):int(0.91351351 h) -> 124:342 (124.66, 342.57), columns as Garg's.
    assert _bounds(crop_mask((375, 1242), "eigen_kitti")) == (124, 342, 44, 1197)
    # Eigen (NYU): rows 45:471, columns 41:601 of a 480x640 frame; other sizes by the same fractions.
    assert _bounds(crop_mask((480, 640), "eigen_nyu")) == (45, 471, 41, 601)
    assert _bounds(crop_mask((240, 320), "eigen_nyu")) == (22, 235, 20, 300)  # 45/2 -> 22, 471/2 -> 235
    assert crop_mask((3, 4), "none").all()
    with pytest.raises(ValueError, match="crop"):
        crop_mask((3, 4), "eigen")


def _bounds(mask):
    rows, columns = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    assert mask.sum() == len(rows) * len(columns), "a crop is one rectangle"
    return rows[0], rows[-1] + 1, columns[0], columns[-1] + 1


def test_metrics_are_averaged_per_image():
    # Image A: 4 pixels with abs_rel 0.125 (above); image B: 1 pixel with abs_rel 0.5 (pred 3 for gt 2).
    # Per image: (0.125 + 0.5) / 2 = 0.3125. Pooled over the 5 pixels it would be (0.5 + 0.5) / 5 = 0.2.
    a = compute_metrics(GT.reshape(2, 2), PRED.reshape(2, 2), 1e-3, 10.0)
    b = compute_metrics(np.array([[2.0]]), np.array([[3.0]]), 1e-3, 10.0)
    mean = average_metrics([a, b])
    assert mean["abs_rel"] == pytest.approx(0.3125, rel=1e-12)
    assert mean["delta1"] == pytest.approx((0.5 + 0.0) / 2, rel=1e-12)  # 3/2 = 1.5 is not < 1.25
