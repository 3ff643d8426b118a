"""Every numerical tolerance of the test suite, with its reason.

Relative error of a tensor is max|ours - reference| / max|reference|: the tensor's own scale, so ReLU zeros
and sign changes of intermediates do not divide by zero. Depth is positive, so for `predicted_depth` the
error is taken per pixel, max(|ours - reference| / reference), the stricter of the two.
"""

import numpy as np

# fp32 against transformers on CPU: the project's parity target (issue: "fp32 max relative error <= 1e-4").
# Measured headroom: tiny checkpoints agree to ~1e-6; the remaining difference is summation order in matmuls,
# convolutions and softmax, which XLA and PyTorch schedule differently.
FP32_RELATIVE = 1e-4


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def depth_relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    assert (reference > 0).all(), "metric depth must be positive"
    return float((np.abs(ours - reference) / reference).max())


# The normed (KITTI) attractor chain amplifies fp32 rounding about threefold per stage: at the full BEiT-L
# size, transformers' own fp32 bin centres of the last stage are ~4e-4 from a float64 run. For those tensors
# the test asks that ours be no farther from transformers-in-float64 than transformers-in-fp32 is, with this
# margin for rounding that falls differently.
NORMED_BINS_VS_FLOAT64_FACTOR = 1.5
