"""Every numerical tolerance of the test suite, with its reason.

Relative error of a tensor is max|ours - reference| / max|reference|: the tensor's own scale, so ReLU zeros
and sign changes of intermediates do not divide by zero. Depth is positive, so for `predicted_depth` the
error is taken per pixel, max(|ours - reference| / reference), the stricter of the two.
"""

import numpy as np

from zoedepth_jax.selfcheck.checks import DEPTH_RELATIVE_TOLERANCE, FLOAT64_ARBITER_FACTOR

# fp32 against transformers on CPU: the project's parity target, fp32 max relative error <= 1e-4, the same bound
# `zoedepth-jax selfcheck` holds the released checkpoints to (hence defined there). Measured headroom: tiny
# checkpoints agree to ~1e-6; the remaining difference is summation order in matmuls, convolutions and softmax,
# which XLA and PyTorch schedule differently.
FP32_RELATIVE = DEPTH_RELATIVE_TOLERANCE


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def depth_relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    assert (reference > 0).all(), "metric depth must be positive"
    return float((np.abs(ours - reference) / reference).max())


# Layers computed another way than `nn.Conv` (tests/test_layers.py). fp32: the same products summed in another
# order (a matmul's blocking against a convolution's), measured ~1e-7 of the output's scale. bf16: products of
# bf16 values are exact in fp32 and both sides accumulate in fp32 (the reference in fp32 on the same values);
# ours adds the bias in fp32 and rounds to bf16 once, at most 2^-8 of each value, so at most 2^-8 of the
# tensor's scale (plus the fp32 summation order, ~1e-7). Adding the bias after rounding, as `nn.Conv` does in
# bf16, rounds twice and does not meet this bound (4.3e-3 to 4.8e-3).
LAYER_FP32_RELATIVE = 1e-6
LAYER_BF16_RELATIVE = 2.0**-8 + LAYER_FP32_RELATIVE
# A bf16 attention's gradients against fp32 autodiff of the same rounded inputs: the score gradient is rounded to
# bf16 before its two matmuls, as the forward's weights are before theirs: two roundings in a row.
ATTENTION_GRADIENT_BF16_RELATIVE = 2 * LAYER_BF16_RELATIVE


# The normed (KITTI) attractor chain amplifies fp32 rounding about threefold per stage: at the full BEiT-L
# size, transformers' own fp32 bin centres of the last stage are ~4e-4 from a float64 run. For those tensors
# the test asks that ours be no farther from transformers-in-float64 than transformers-in-fp32 is, with this
# margin for rounding that falls differently.
NORMED_BINS_VS_FLOAT64_FACTOR = FLOAT64_ARBITER_FACTOR  # selfcheck applies the same rule


# Image processor (tests/test_processing.py). Every step but the resize is exact (the rescale of uint8 is the
# same float64 product cast to float32, padding is a copy, normalisation the same float32 expression); the resize
# uses torch's source coordinates and weights bit for bit, and differs only in how the float32 weighted sums round
# (torch's compiled kernel fuses some multiply-adds, numpy does not). Measured: <= 5e-7 on values in [-1, 1].
# The error is taken relative to max(1, max|reference|), so that the same bound applies to outputs left on the
# 0..255 scale (do_rescale and do_normalize off), whose float32 ulp is already 1.5e-5.
PIXEL_VALUES_ABS = 1e-5

# uint8 input with do_rescale=False: transformers resizes the uint8 array with torch's fixed-point uint8 kernel,
# which rounds to integers (differently from rounding the float result); we resize in float32. The two differ by
# at most one 0..255 level before normalisation.
UINT8_RESIZE_LEVELS = 1.0

# post_process_depth_estimation against torch's bicubic interpolate, at the parity bound. Measured ~1e-7: the same
# coordinates and weights as torch, float32 sums rounded differently.
POST_PROCESS_RELATIVE = 1e-4

# The flip mixture's mean and standard deviation (processor.mixture_of_two) against the moments of float64 samples
# of the two distributions: a handful of float32 operations on values of order one, ~1e-7.
MIXTURE_RELATIVE = 1e-6

# ops.resize_bilinear / resize_bicubic against torch.nn.functional.interpolate, relative to the input's scale.
# Coordinates and weights are torch's bit for bit; what remains is the rounding of 2 (bilinear) or 4 (bicubic)
# float32 products summed per axis. Measured <= 2e-7.
RESIZE_RELATIVE = 1e-6

# The resizes' own gradient (input samples gathering the outputs that read them) against autodiff of the gathers
# (a scatter-add), relative to the gradient's scale: the same fp32 products, summed in another order, and a
# sample read twice by one output (border clamping) weighted once by the summed weight. Measured <= 2.5e-7.
RESIZE_GRADIENT_RELATIVE = 1e-6

# Training losses (tests/test_losses_metrics.py) against hand-computed values and torch. The losses run in fp32:
# a log, a mean and a variance over a few pixels round at ~1e-7; the 1e-7 inside the logarithms moves the
# hand values (which leave it out) by about as much.
LOSS_RELATIVE = 1e-5

# Gradients of the SILog loss against PyTorch's autograd through transformers (tests/test_training.py), per
# parameter leaf: |norm(ours) - norm(torch)| / norm(torch) and max|ours - torch| / max|torch|.
# Measured on the tiny re-drawn checkpoints of the test: nyu 4.4e-4, kitti 4.3e-4 (worst leaf, in the metric
# head; 2.8e-4 and 6.0e-4 with another seed). fp32 rounding of the forward is amplified through the attractor
# chain on the way back; it is noise of both sides, not a difference of definitions: against torch in float64,
# ours was 3.4e-4 off and torch's own fp32 gradients 5.4e-4 (kitti, the 6.0e-4 seed).
GRADIENT_RELATIVE = 1e-3

# Ten optimizer steps against torch's AdamW + OneCycleLR + clip_grad_norm_ (tests/test_optimization.py):
# the same arithmetic, with learning rates in fp32 here and float64 there. Measured <= 6e-7 after ten steps, on
# parameters of order one (a few fp32 ulps).
OPTIMIZER_ABS = 1e-6

# benchmarks/cpu_peers.py --quick (tests/test_cpu_peers.py): depth of each runtime against PyTorch eager fp32 on
# the tiny nyu-kitti model, per pixel. jax_fp32 and onnxruntime are fp32 runs of the same graph and are held to
# FP32_RELATIVE (measured 4.3e-5 and 3.2e-5; transformers' own fp32 depth is 2.8e-5 from a float64 run).
# OpenVINO's f32 SoftPlus computes log(1 + exp(x)) without log1p: for x in [-10, -5] it is up to 2e-2 off in
# relative terms (torch 1e-7), and the softplus bin centres and attractors of the nyu head go through it.
# Measured 2.5e-3 (batch 1) and 2.1e-3 (batch 2), with a median of 3e-7 like the others: a few pixels. The
# bound leaves 4x headroom and stays 10x below what a bf16 run gives (max 0.1-0.3), so it still tells f32 apart.
OPENVINO_F32_DEPTH_RELATIVE = 1e-2

# The bf16 configurations of the same benchmark (jax_bf16, torch_eager_bf16, openvino_default on CPUs with bf16):
# per-pixel medians measured 3e-3 to 7e-3, maxima 0.1-0.35 (on a few pixels). The median is the stable figure;
# this bound catches a wrong image or layout: the two images of the batch swapped give a median of 0.09, an
# upside-down image (depth flipped back) 0.26.
BF16_DEPTH_MEDIAN_RELATIVE = 5e-2

# 3D points (tests/test_geometry.py) in float32 against values computed by hand in float64: a subtraction, a
# division and a product per coordinate, each rounding at 2^-24 relative; measured <= 7e-8.
GEOMETRY_FP32_RELATIVE = 1e-6
# Camera intrinsics are float64 Python arithmetic: the same formula written another way (math.radians against
# 55 * pi / 180, a scale and its inverse) differs by a few float64 ulps, ~1e-16.
GEOMETRY_FLOAT64_RELATIVE = 1e-12

# Depth Anything V1 metric at full size on re-drawn weights (tests/test_depth_anything_v1_metric.py, slow): every
# intermediate up to the last bin centres agrees with transformers to ~1e-5 of its scale, but at some pixels the
# log-binomial runs near its minimum temperature (0.0212) and amplifies fp32 rounding of its last step: per pixel,
# transformers' own fp32 depth was 2.6e-3 from a float64 run and ours 2.2e-3. Where depth exceeds the parity bound,
# transformers in float64 decides, by the rule and margin of the normed bins above.
LOG_BINOMIAL_VS_FLOAT64_FACTOR = FLOAT64_ARBITER_FACTOR


def assert_zoedepth_maps_match(ours: dict, expected: dict, exact_depth: np.ndarray | None = None):
    """Depth (per pixel), bin centres, relative depth, neck maps and backbone stages agree; none is degenerate.
    With `exact_depth` (transformers in float64), depth beyond the bound passes if it is no farther from that than
    transformers' fp32 depth is (LOG_BINOMIAL_VS_FLOAT64_FACTOR)."""
    for image in expected["predicted_depth"]:
        assert image.std() / image.mean() > 0.05, f"degenerate reference depth (std/mean {image.std() / image.mean()})"
    errors = {}
    for name, value in expected.items():
        assert np.std(value) > 1e-3, f"degenerate reference {name}"
        errors[name] = relative_error(ours[name], value)
    errors["predicted_depth"] = depth_relative_error(ours["predicted_depth"], expected["predicted_depth"])
    if exact_depth is not None and errors["predicted_depth"] > FP32_RELATIVE:
        ours_off = depth_relative_error(ours["predicted_depth"], exact_depth)
        theirs_off = depth_relative_error(expected["predicted_depth"], exact_depth)
        assert ours_off <= LOG_BINOMIAL_VS_FLOAT64_FACTOR * theirs_off, (ours_off, theirs_off)
        del errors["predicted_depth"]
    worst = max(errors, key=errors.get)
    assert errors[worst] <= FP32_RELATIVE, f"{worst} differs by {errors[worst]:.2e} (all: {errors})"
