"""Depth Anything (V2, relative and metric) against transformers' `DepthAnythingForDepthEstimation`, loaded through
`from_pretrained` from the files `save_pretrained` wrote: depth, backbone stages and neck maps."""

from __future__ import annotations

import functools
import json
import shutil
import warnings

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from hub_cache import lay_out_hub_cache
from tolerances import FP32_RELATIVE, depth_relative_error, relative_error

from zoedepth_jax import (
    CheckpointError,
    ConfigError,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    apply_with_intermediates,
    from_pretrained,
    save_pretrained,
)
from zoedepth_jax.errors import ConfigWarning

# Patch grids 5x7 (the strided reassemble layer rounds up: 3x4), 9x7 (taller than wide) and 4x6. The other tests
# run at 2x70x98, whose programs the parity tests have compiled already.
CASES = [("relative", (70, 98)), ("relative", (126, 98)), ("metric", (70, 98)), ("metric", (56, 84))]
KINDS = ["relative", "metric"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(transformers model, folder) per kind, built once for the module."""
    built = {}
    for seed, kind in enumerate(KINDS):
        folder = tmp_path_factory.mktemp(kind)
        built[kind] = (reference.build_depth_anything(kind, folder, seed=seed), folder)
    return built


def nhwc(images):
    return jnp.asarray(images.transpose(0, 2, 3, 1))


@functools.cache
def compiled(config: DepthAnythingConfig):
    """One jitted forward with intermediates per config (each load builds a new module of an equal config)."""
    model = DepthAnythingForDepthEstimation(config)
    return jax.jit(lambda variables, x: apply_with_intermediates(model, variables, x))


def run_ours(model, variables, images) -> dict:
    output, intermediates = compiled(model.config)(variables, nhwc(images))
    return dict(intermediates, predicted_depth=output.predicted_depth)


def depth(model, variables, images) -> np.ndarray:
    return np.asarray(run_ours(model, variables, images)["predicted_depth"])


def assert_matches(ours: dict, expected: dict, kind: str):
    """Every tensor transformers produced agrees; the reference is not degenerate."""
    for image in expected["predicted_depth"]:
        assert image.std() / image.mean() > 0.2, f"degenerate reference depth (std/mean {image.std() / image.mean()})"
        assert (image > 0).mean() > 0.5, "the reference depth is zero on most pixels"
    errors = {}
    for name, value in expected.items():
        assert name in ours, f"zoedepth-jax does not produce {name}"
        assert np.std(value) > 1e-3, f"degenerate reference {name}"
        errors[name] = relative_error(ours[name], value)
    if kind == "metric":  # positive everywhere: held per pixel, the stricter measure
        errors["predicted_depth"] = depth_relative_error(ours["predicted_depth"], expected["predicted_depth"])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= FP32_RELATIVE, f"{worst} differs by {errors[worst]:.2e} (all: {errors})"


@pytest.mark.parametrize("kind, size", CASES, ids=[f"{k}-{h}x{w}" for k, (h, w) in CASES])
def test_matches_transformers(checkpoints, kind, size):
    hf_model, folder = checkpoints[kind]
    images = reference.test_images(2, *size, seed=size[0] + size[1])
    model, variables = from_pretrained(folder)
    assert isinstance(model, DepthAnythingForDepthEstimation)
    assert model.config.depth_estimation_type == kind
    expected = reference.run_depth_anything(hf_model, images)
    assert_matches(run_ours(model, variables, images), expected, kind)
    if kind == "metric":
        depth = expected["predicted_depth"]
        assert depth.max() <= 20 and depth.max() > 10, "metric depth spans its range up to max_depth = 20"


def test_perturbing_one_weight_breaks_parity(checkpoints):
    """The parity check can fail: one entry of the backbone's position-embedding table changed by 1% is caught
    (one weight of a tiny neck convolution changed by 1% moves depth by ~8e-5 per pixel, just below the bound)."""
    hf_model, folder = checkpoints["metric"]
    images = reference.test_images(2, 70, 98, seed=11)
    expected = reference.run_depth_anything(hf_model, images)
    model, variables = from_pretrained(folder)
    embeddings = variables["params"]["backbone"]["embeddings"]
    embeddings["position_embeddings"] = embeddings["position_embeddings"].at[0, 7, 5].multiply(1.01)
    with pytest.raises(AssertionError, match="differs by"):
        assert_matches(run_ours(model, variables, images), expected, "metric")


def test_hub_id_loads_offline_from_the_cache(checkpoints, tmp_path, monkeypatch):
    """A hub id in the hub cache loads with the hub offline (HF_HUB_OFFLINE), as the model a user downloaded;
    one that is not in the cache is a CheckpointError naming it."""
    _, folder = checkpoints["relative"]
    cache = tmp_path / "hub"
    lay_out_hub_cache(cache, "depth-anything/Depth-Anything-V2-Small-hf", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model, variables = from_pretrained("depth-anything/Depth-Anything-V2-Small-hf", cache_dir=str(cache))
    direct_model, direct = from_pretrained(folder)
    images = reference.test_images(2, 70, 98, seed=2)
    np.testing.assert_array_equal(depth(model, variables, images), depth(direct_model, direct, images))
    with pytest.raises(CheckpointError, match="Depth-Anything-V2-Base-hf"):
        from_pretrained("depth-anything/Depth-Anything-V2-Base-hf", cache_dir=str(cache))


def test_save_pretrained_round_trip(checkpoints, tmp_path):
    _, folder = checkpoints["metric"]
    model, variables = from_pretrained(folder)
    out = save_pretrained(tmp_path / "flax", model, variables)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "flax_model.safetensors"]
    reloaded, reloaded_variables = from_pretrained(out)
    assert reloaded.config == model.config and isinstance(reloaded, DepthAnythingForDepthEstimation)
    images = reference.test_images(2, 70, 98, seed=4)
    np.testing.assert_array_equal(depth(reloaded, reloaded_variables, images), depth(model, variables, images))


def test_config_round_trips_and_transformers_reads_it(checkpoints):
    from transformers import DepthAnythingConfig as HFDepthAnythingConfig

    _, folder = checkpoints["metric"]
    raw = json.loads((folder / "config.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)  # every field transformers writes is known
        config = DepthAnythingConfig.from_dict(raw)
    assert config.max_depth == 20 and config.backbone_config.out_indices == (1, 2, 3, 4)
    written = json.loads(config.to_json_string())
    assert DepthAnythingConfig.from_dict(written) == config
    hf_config = HFDepthAnythingConfig.from_dict(written)
    assert hf_config.depth_estimation_type == "metric" and hf_config.max_depth == 20
    assert hf_config.backbone_config.out_indices == [1, 2, 3, 4]
    assert not hf_config.backbone_config.reshape_hidden_states


def test_checkpoint_and_config_errors_name_the_problem(checkpoints, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, folder = checkpoints["relative"]
    raw = json.loads((folder / "config.json").read_text())
    for edit, field in [
        ({"depth_estimation_type": "disparity"}, "depth_estimation_type"),
        ({"backbone_config": dict(raw["backbone_config"], reshape_hidden_states=True)}, "reshape_hidden_states"),
        ({"backbone_config": dict(raw["backbone_config"], use_swiglu_ffn=True)}, "use_swiglu_ffn"),
        ({"backbone_config": dict(raw["backbone_config"], model_type="beit")}, "model_type"),
        ({"reassemble_hidden_size": 64}, "reassemble_hidden_size"),
        ({"neck_hidden_sizes": [16, 32, 48]}, "neck_hidden_sizes"),
    ]:
        with pytest.raises(ConfigError, match=field):
            DepthAnythingConfig.from_dict(dict(raw, **edit))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(dict(raw, model_type="dpt")))
    save_file(load_file(folder / "model.safetensors"), bad / "model.safetensors")
    with pytest.raises(ConfigError, match="model_type = 'dpt'"):
        from_pretrained(bad)
    tensors = load_file(folder / "model.safetensors")
    del tensors["head.conv2.bias"]
    tensors["neck.reassemble_stage.layers.2.resize.weight"] = np.zeros((48, 48, 3, 3), np.float32)
    (bad / "config.json").write_text(json.dumps(raw))
    save_file(tensors, bad / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        from_pretrained(bad)
    message = str(info.value)
    assert "neck.reassemble_stage.layers.2.resize.weight" in message and "head/conv2/bias" in message


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_full_size_v2_large_matches_transformers(tmp_path, kind):
    """Depth Anything V2 Large's architecture (ViT-L/14, neck 256/512/1024/1024) at 518x392."""
    hf_model = reference.build_depth_anything(kind, tmp_path, seed=5, full=True)
    images = reference.test_images(1, 518, 392, seed=6)
    model, variables = from_pretrained(tmp_path)
    assert_matches(run_ours(model, variables, images), reference.run_depth_anything(hf_model, images), kind)


def test_convert_copies_the_processor_settings(checkpoints, tmp_path):
    """`convert` of a Depth Anything folder keeps its (DPT) preprocessor_config.json as it is."""
    from zoedepth_jax.weights.loading import convert

    _, folder = checkpoints["relative"]
    source = tmp_path / "source"
    shutil.copytree(folder, source)
    settings = {"image_processor_type": "DPTImageProcessor", "size": {"height": 518, "width": 518}}
    (source / "preprocessor_config.json").write_text(json.dumps(settings))
    conversion = convert(source, tmp_path / "out")
    assert json.loads((conversion.out / "preprocessor_config.json").read_text()) == settings
    model, _ = from_pretrained(conversion.out)
    assert isinstance(model, DepthAnythingForDepthEstimation)


def test_convert_refuses_processor_settings_the_processor_cannot_run(checkpoints, tmp_path):
    """A Depth Anything folder whose preprocessor_config.json holds a key the processor does not know: convert
    fails naming the file and the key, and writes nothing."""
    from zoedepth_jax.weights.loading import convert

    _, folder = checkpoints["relative"]
    source = tmp_path / "source"
    shutil.copytree(folder, source)
    settings = {"image_processor_type": "DPTImageProcessor", "size": {"height": 518, "width": 518}, "do_warp": True}
    (source / "preprocessor_config.json").write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match=r"preprocessor_config.json: unknown key\(s\) \['do_warp'\]"):
        convert(source, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# The layout of the released V2 Small config.json (transformers writes a nested config as its differences from the
# class defaults); the top level as transformers 4.x wrote it.
RELEASED_V2_SMALL = {
    "architectures": ["DepthAnythingForDepthEstimation"],
    "backbone": None,
    "backbone_config": {
        "architectures": ["Dinov2Model"],
        "hidden_size": 384,
        "image_size": 518,
        "model_type": "dinov2",
        "num_attention_heads": 6,
        "out_features": ["stage3", "stage6", "stage9", "stage12"],
        "out_indices": [3, 6, 9, 12],
        "reshape_hidden_states": False,
        "torch_dtype": "float32",
    },
    "backbone_kwargs": None,
    "fusion_hidden_size": 64,
    "head_hidden_size": 32,
    "head_in_index": -1,
    "initializer_range": 0.02,
    "model_type": "depth_anything",
    "neck_hidden_sizes": [48, 96, 192, 384],
    "patch_size": 14,
    "reassemble_factors": [4, 2, 1, 0.5],
    "reassemble_hidden_size": 384,
    "torch_dtype": "float32",
    "transformers_version": "4.42.0.dev0",
    "use_pretrained_backbone": False,
    "use_timm_backbone": False,
}


def test_released_config_layout_reads_as_transformers_reads_it():
    """Fields a released config leaves out take transformers' defaults (layer count, eps, MLP width, kind)."""
    from transformers import DepthAnythingConfig as HFDepthAnythingConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        ours = DepthAnythingConfig.from_dict(RELEASED_V2_SMALL)
    theirs = HFDepthAnythingConfig.from_dict(RELEASED_V2_SMALL)
    backbone, their_backbone = ours.backbone_config, theirs.backbone_config
    assert backbone.num_hidden_layers == their_backbone.num_hidden_layers == 12
    assert backbone.layer_norm_eps == their_backbone.layer_norm_eps
    assert backbone.intermediate_size == int(their_backbone.hidden_size * their_backbone.mlp_ratio)
    assert backbone.layerscale_value == their_backbone.layerscale_value
    assert backbone.qkv_bias == their_backbone.qkv_bias and backbone.apply_layernorm == their_backbone.apply_layernorm
    assert list(backbone.out_indices) == list(their_backbone.out_indices)
    assert ours.depth_estimation_type == theirs.depth_estimation_type == "relative"
    assert ours.max_depth == theirs.max_depth
    without_backbone = {k: v for k, v in RELEASED_V2_SMALL.items() if k != "backbone_config"}
    default = HFDepthAnythingConfig.from_dict(without_backbone).backbone_config
    assert list(DepthAnythingConfig.from_dict(without_backbone).backbone_config.out_indices) == default.out_indices
