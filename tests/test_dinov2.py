"""The DINOv2 backbone against transformers' `Dinov2Model`: every layer's hidden state, on patch grids other than
the pretraining grid (so the position embeddings are interpolated), converted from files `save_pretrained` wrote."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
import torch
from tolerances import FP32_RELATIVE, RESIZE_RELATIVE, assert_zoedepth_maps_match, relative_error

from zoedepth_jax import (
    CheckpointError,
    ConfigError,
    ZoeDepthConfig,
    ZoeDepthForDepthEstimation,
    apply_with_intermediates,
    from_pretrained,
)
from zoedepth_jax.config import Dinov2Config
from zoedepth_jax.modeling.dinov2 import Dinov2Model, interpolate_position_embeddings
from zoedepth_jax.weights import hf_names, readers

# Patch grids 5x7 (both sides grow), 3x6 (one shrinks, one grows) and 4x4 (the pretraining grid: no resize).
SIZES = [(70, 98), (42, 84), (56, 56)]


def load(folder, dtype=jnp.float32):
    """(model, variables) of a folder holding a transformers Dinov2Model (config.json, model.safetensors)."""
    config = Dinov2Config.from_dict(json.loads((folder / "config.json").read_text()), where="config")
    model = Dinov2Model(config, dtype=dtype)
    side = 2 * config.patch_size
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))["params"]
    tensors, _ = readers.read_safetensors(folder / "model.safetensors")
    params = hf_names.convert_hf_state_dict(tensors, config, shapes, source=str(folder))
    return model, {"params": jax.tree_util.tree_map(jnp.asarray, params)}


def run_ours(model, variables, images_nchw) -> dict[str, np.ndarray]:
    output = jax.jit(model.apply)(variables, jnp.asarray(images_nchw.transpose(0, 2, 3, 1)))
    result = {"last_hidden_state": np.asarray(output.last_hidden_state)}
    for i, hidden in enumerate(output.hidden_states):
        result[f"hidden_state_{i}"] = np.asarray(hidden)
    return result


def assert_matches(ours: dict, expected: dict):
    """Every hidden state agrees; the reference is not degenerate (tokens differ, every layer changes them)."""
    layers = len([name for name in expected if name.startswith("hidden_state_")]) - 1
    for name, value in expected.items():
        spread = value.std(axis=1).mean() / np.abs(value).mean()  # across tokens, relative to the values' size
        assert spread > 0.1, f"degenerate reference {name}: tokens nearly equal ({spread:.2e})"
    for i in range(layers):
        change = relative_error(expected[f"hidden_state_{i + 1}"], expected[f"hidden_state_{i}"])
        assert change > 0.05, f"layer {i} barely changes its input ({change:.2e})"
    errors = {name: relative_error(ours[name], value) for name, value in expected.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= FP32_RELATIVE, f"{worst} differs by {errors[worst]:.2e} (all: {errors})"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dinov2")
    return reference.build_dinov2(folder, seed=0), folder


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_hidden_state_matches_transformers(tiny, size):
    hf_model, folder = tiny
    images = reference.test_images(2, *size, seed=size[0] + size[1])
    model, variables = load(folder)
    assert_matches(run_ours(model, variables, images), reference.run_dinov2(hf_model, images))


@pytest.mark.parametrize("grid", [(5, 7), (3, 6), (4, 4), (37, 28)])
def test_position_embeddings_interpolate_as_transformers(tiny, grid):
    """The resized table against transformers' own `interpolate_pos_encoding` (bicubic to a size, in fp32)."""
    hf_model, folder = tiny
    patch = hf_model.config.patch_size
    height, width = grid[0] * patch, grid[1] * patch
    tokens = torch.zeros(1, 1 + grid[0] * grid[1], hf_model.config.hidden_size)
    with torch.no_grad():
        expected = hf_model.embeddings.interpolate_pos_encoding(tokens, height, width).numpy()
    _, variables = load(folder)
    table = variables["params"]["embeddings"]["position_embeddings"]
    ours = interpolate_position_embeddings(table, grid)
    assert relative_error(ours, expected) <= RESIZE_RELATIVE
    if grid == (4, 4):  # the pretraining grid: the table itself
        np.testing.assert_array_equal(ours, table)


def test_perturbing_one_weight_breaks_parity(tiny):
    """The parity check can fail: one entry of the position-embedding table changed by 1% is caught (it reaches
    the output through the interpolation). One matmul weight of this 48-wide model changed by 1% moves the hidden
    states by ~2e-5 of their scale, below the bound: a single weight is too small a change to detect here."""
    hf_model, folder = tiny
    images = reference.test_images(1, 70, 98, seed=3)
    expected = reference.run_dinov2(hf_model, images)
    model, variables = load(folder)
    embeddings = variables["params"]["embeddings"]
    embeddings["position_embeddings"] = embeddings["position_embeddings"].at[0, 7, 5].multiply(1.01)
    with pytest.raises(AssertionError, match="differs by"):
        assert_matches(run_ours(model, variables, images), expected)


def test_checkpoint_mismatches_are_listed(tiny, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, folder = tiny
    tensors = load_file(folder / "model.safetensors")
    del tensors["encoder.layer.2.mlp.fc2.bias"]
    tensors["encoder.layer.2.mlp.fc3.weight"] = np.zeros((4, 4), np.float32)
    tensors["embeddings.position_embeddings"] = tensors["embeddings.position_embeddings"][:, :10]
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        load(tmp_path)
    message = str(info.value)
    assert "encoder.layer.2.mlp.fc3.weight" in message and "unexpected keys (1)" in message
    assert "embeddings.position_embeddings: (1, 10, 48)" in message
    assert "encoder/layer_2/mlp/fc2/bias" in message


def test_config_reads_and_writes_transformers_fields(tiny):
    from transformers import Dinov2Config as HFDinov2Config

    _, folder = tiny
    raw = json.loads((folder / "config.json").read_text())
    config = Dinov2Config.from_dict(raw)
    assert config.intermediate_size == 4 * config.hidden_size and config.position_grid == 4
    assert config.out_indices == (config.num_hidden_layers,)  # transformers' default: the last stage
    assert Dinov2Config.from_dict(config.to_dict()) == config
    written = HFDinov2Config(**{k: v for k, v in config.to_dict().items() if k != "model_type"})
    assert written.out_indices == [config.num_hidden_layers]
    for field, value in [("use_swiglu_ffn", True), ("hidden_act", "silu"), ("model_type", "vit")]:
        with pytest.raises(ConfigError, match=field):
            Dinov2Config.from_dict(dict(raw, **{field: value}))
    with pytest.raises(ConfigError, match="image_size"):
        Dinov2Config.from_dict(dict(raw, image_size=[56, 70]))


@pytest.mark.slow
def test_full_size_vit_large_matches_transformers(tmp_path):
    """ViT-L/14 pretrained at 518 (Depth Anything V2 Large's backbone) at 518x392: a 37x28 grid."""
    hf_model = reference.build_dinov2(tmp_path, seed=1, full=True)
    images = reference.test_images(1, 518, 392, seed=2)
    model, variables = load(tmp_path)
    assert_matches(run_ours(model, variables, images), reference.run_dinov2(hf_model, images))


# ZoeDepth on a DINOv2 backbone: transformers' ZoeDepthForDepthEstimation built from a Dinov2Config.


@pytest.fixture(scope="module")
def zoedepth_on_dinov2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoedepth_dinov2")
    return reference.build_zoedepth_dinov2(folder, seed=4), folder


@functools.cache
def compiled_zoedepth(config: ZoeDepthConfig):
    """One jitted forward with intermediates per config (each load builds a new module of an equal config)."""
    model = ZoeDepthForDepthEstimation(config)
    return jax.jit(lambda variables, x: apply_with_intermediates(model, variables, x))


def run_zoedepth(model, variables, images_nchw) -> dict[str, np.ndarray]:
    output, intermediates = compiled_zoedepth(model.config)(variables, jnp.asarray(images_nchw.transpose(0, 2, 3, 1)))
    return dict(intermediates, predicted_depth=output.predicted_depth)


def test_zoedepth_on_dinov2_matches_transformers(zoedepth_on_dinov2):
    """Depth, bin centres, neck maps and the layernormed backbone stages, on a 5x7 patch grid."""
    hf_model, folder = zoedepth_on_dinov2
    model, variables = from_pretrained(folder)
    assert isinstance(model.config.backbone_config, Dinov2Config)
    images = reference.test_images(2, 70, 98, seed=8)
    expected = reference.run_reference_on_dinov2(hf_model, images)
    assert {"backbone_stage4", "neck_fusion_3", "bin_centers_metric", "relative_depth"} <= set(expected)
    assert_zoedepth_maps_match(run_zoedepth(model, variables, images), expected)


def test_zoedepth_on_dinov2_perturbed_weight_breaks_parity(zoedepth_on_dinov2):
    hf_model, folder = zoedepth_on_dinov2
    model, variables = from_pretrained(folder)
    embeddings = variables["params"]["backbone"]["embeddings"]
    embeddings["position_embeddings"] = embeddings["position_embeddings"].at[0, 7, 5].multiply(1.01)
    images = reference.test_images(2, 70, 98, seed=8)
    with pytest.raises(AssertionError, match="differs by"):
        assert_zoedepth_maps_match(
            run_zoedepth(model, variables, images), reference.run_reference_on_dinov2(hf_model, images)
        )


@pytest.mark.slow
def test_full_size_zoedepth_on_dinov2_matches_transformers(tmp_path):
    """transformers' ZoeDepth on DINOv2-L/14 (its last four layers, the released neck) at 392x518, a 28x37 grid:
    the depth and every intermediate. transformers' depth is 16 pixels per patch, and the odd 37 columns pass the
    stride-2 stage as 19: 448x608."""
    hf_model = reference.build_zoedepth_dinov2(tmp_path, seed=5, full=True)
    model, variables = from_pretrained(tmp_path)
    backbone = model.config.backbone_config
    assert (backbone.num_hidden_layers, backbone.hidden_size, backbone.out_indices) == (24, 1024, (21, 22, 23, 24))
    images = reference.test_images(1, 392, 518, seed=9)
    expected = reference.run_reference_on_dinov2(hf_model, images)
    assert expected["predicted_depth"].shape == (1, 448, 608)
    assert_zoedepth_maps_match(run_zoedepth(model, variables, images), expected)


def test_zoedepth_config_with_dinov2_backbone(zoedepth_on_dinov2):
    _, folder = zoedepth_on_dinov2
    raw = json.loads((folder / "config.json").read_text())
    assert raw["backbone_hidden_size"] == 48 and raw["backbone_config"]["model_type"] == "dinov2"
    config = ZoeDepthConfig.from_dict(raw)
    assert ZoeDepthConfig.from_dict(json.loads(config.to_json_string())) == config
    backbone = raw["backbone_config"]
    for edit, field in [
        (dict(backbone, reshape_hidden_states=True), "reshape_hidden_states"),
        (dict(backbone, use_relative_position_bias=True), "model_type"),  # BEiT's fields under a dinov2 label
    ]:
        with pytest.raises(ConfigError, match=field):
            ZoeDepthConfig.from_dict(dict(raw, backbone_config=edit))
    with pytest.raises(ConfigError, match="backbone_hidden_size"):
        ZoeDepthConfig.from_dict(dict(raw, backbone_hidden_size=64))
