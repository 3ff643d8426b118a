"""bf16 compute: parameters stored in bf16 where the model only uses them in bf16, and bf16 depth against fp32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from tolerances import BF16_DEPTH_MEDIAN_RELATIVE

from zoedepth_jax import from_pretrained
from zoedepth_jax.modeling.layers import traced_forms
from zoedepth_jax.weights.dtypes import cast_to_compute_dtype


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nyu-kitti")
    reference.build("nyu-kitti", folder, seed=3)
    return folder


def dtypes_by_path(params) -> dict[str, jnp.dtype]:
    return {jax.tree_util.keystr(path): leaf.dtype for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_bf16_load_stores_only_bf16_uses_in_bf16(checkpoint):
    model, variables = from_pretrained(checkpoint, dtype=jnp.bfloat16)
    stored = dtypes_by_path(variables["params"])
    bf16 = {path for path, dtype in stored.items() if dtype == jnp.bfloat16}
    # The kernels of the backbone, neck and relative head, layer scales and the CLS token.
    for path in (
        "['backbone']['encoder']['layer_0']['attention']['attention']['query']['kernel']",
        "['backbone']['encoder']['layer_0']['intermediate']['dense']['kernel']",
        "['backbone']['encoder']['layer_0']['lambda_1']",
        "['backbone']['embeddings']['cls_token']",
        "['neck']['fusion_stage']['layers_0']['residual_layer2']['convolution1']['kernel']",
        "['relative_head']['conv3']['kernel']",
    ):
        assert path in bf16, path
    # Everything used in fp32 stays fp32: LayerNorms, relative-position tables, metric heads and router, and the
    # biases of the matmul-form layers (added to the fp32 accumulator before rounding, as torch does).
    assert stored["['backbone']['encoder']['layer_0']['intermediate']['dense']['bias']"] == jnp.float32
    for path in bf16:
        assert not any(part in path for part in ("layernorm", "relative_position_bias", "metric_head")), path
    assert any("layernorm_before" in p for p in stored) and any("metric_head" in p for p in stored)
    backbone_bytes = [
        sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(v["params"]["backbone"]))
        for v in (from_pretrained(checkpoint)[1], variables)
    ]
    assert backbone_bytes[1] < 0.6 * backbone_bytes[0]  # the backbone's weights are halved


def test_stored_bf16_gives_bit_identical_depth(checkpoint):
    model, fp32_variables = from_pretrained(checkpoint)
    bf16_model = model.clone(dtype=jnp.bfloat16)
    cast = cast_to_compute_dtype(bf16_model, fp32_variables)
    assert cast_to_compute_dtype(model, fp32_variables) is fp32_variables  # fp32: nothing to do
    images = jnp.asarray(reference.test_images(2, 96, 128, seed=5).transpose(0, 2, 3, 1))
    forward = jax.jit(bf16_model.apply)
    from_fp32 = forward(fp32_variables, images)
    from_bf16 = forward(cast, images)
    np.testing.assert_array_equal(np.asarray(from_bf16.predicted_depth), np.asarray(from_fp32.predicted_depth))
    np.testing.assert_array_equal(np.asarray(from_bf16.domain_logits), np.asarray(from_fp32.domain_logits))


@pytest.mark.parametrize("forms", ["cpu", "plain"])  # the bf16 forms differ most: row-tiled convolutions on CPU
def test_bf16_depth_against_fp32(checkpoint, forms):
    """bf16 compute moves depth by a few tenths of a percent (per-pixel median), far less than a wrong layout."""
    fp32_model, fp32_variables = from_pretrained(checkpoint)
    bf16_model, bf16_variables = from_pretrained(checkpoint, dtype=jnp.bfloat16)
    images = jnp.asarray(reference.test_images(2, 96, 128, seed=6).transpose(0, 2, 3, 1))
    reference_depth = np.asarray(jax.jit(fp32_model.apply)(fp32_variables, images).predicted_depth, np.float64)
    with traced_forms(forms):  # a fresh function, so that jit traces it under these forms
        depth = jax.jit(lambda v, x: bf16_model.apply(v, x).predicted_depth)(bf16_variables, images)
    depth = np.asarray(depth, np.float64)
    assert (reference_depth.std(axis=(1, 2)) / reference_depth.mean(axis=(1, 2)) > 0.05).all()  # not degenerate
    error = np.median(np.abs(depth - reference_depth) / reference_depth)
    assert 0 < error <= BF16_DEPTH_MEDIAN_RELATIVE
    swapped = np.median(np.abs(depth[::-1] - reference_depth) / reference_depth)
    assert swapped > BF16_DEPTH_MEDIAN_RELATIVE  # the bound tells the images apart
