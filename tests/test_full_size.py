"""The released architecture (BEiT-L/16, neck 256/512/1024/1024) against transformers at 384x512, batch 1."""

from __future__ import annotations

import pytest
import reference
from test_parity import assert_matches, nhwc
from tolerances import NORMED_BINS_VS_FLOAT64_FACTOR, relative_error

from zoedepth_jax import apply_with_intermediates, from_pretrained


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["nyu-kitti", "kitti"])
def test_full_size_matches_transformers(tmp_path, variant):
    hf_model = reference.build(variant, tmp_path, seed=0, full=True)
    images = reference.test_images(1, 384, 512, seed=0)
    expected = reference.run_reference(hf_model, images)
    model, variables = from_pretrained(tmp_path)
    output, intermediates = apply_with_intermediates(model, variables, nhwc(images))
    ours = dict(intermediates, predicted_depth=output.predicted_depth)
    if output.domain_logits is not None:
        ours["domain_logits"] = output.domain_logits
    normed_bins = [n for n in expected if n.startswith("bin_centers") and model.config.bin_centers_type == "normed"]
    assert_matches(ours, {n: v for n, v in expected.items() if n not in normed_bins})
    if normed_bins:  # see tolerances.NORMED_BINS_VS_FLOAT64_FACTOR
        exact = reference.run_reference(hf_model.double(), images.astype("float64"))
        for name in normed_bins:
            reference_noise = relative_error(expected[name], exact[name])
            assert relative_error(ours[name], exact[name]) <= NORMED_BINS_VS_FLOAT64_FACTOR * reference_noise, name
