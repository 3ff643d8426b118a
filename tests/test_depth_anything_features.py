"""The DINOv2-family models (Depth Anything V2 relative and metric, ZoeDepth on DINOv2, Depth Anything V1 metric)
through everything else the package does: `jax.export`, ONNX, bf16, several devices and fine-tuning (the ZoeDepth-
head ones; Depth Anything V2 is refused). 3D outputs of a metric Depth Anything model: test_depth_anything_pipeline.

Tiny re-drawn checkpoints, all at one input size of 56x84 (4x6 patches of 14), so each model compiles few times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from PIL import Image
from test_finetune import write_scenes
from tolerances import BF16_DEPTH_MEDIAN_RELATIVE, FP32_RELATIVE, depth_relative_error, relative_error

from zoedepth_jax import ConfigError, DepthEstimator, ZoeDepthImageProcessor, from_pretrained
from zoedepth_jax.cli import main
from zoedepth_jax.inference.export import export_model, load_exported, save_exported
from zoedepth_jax.training.config import TrainConfig
from zoedepth_jax.training.finetune import finetune
from zoedepth_jax.training.optimizer import GROUPS, group_learning_rates, parameter_labels
from zoedepth_jax.weights.loading import convert

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 56, 84
KINDS = ("relative", "metric", "zoedepth-dinov2")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{kind: folder} of tiny checkpoints: transformers' Depth Anything V2 relative and metric and ZoeDepth on
    DINOv2, and a Depth Anything V1 metric `.pt` converted to a folder ("v1-metric"); the ZoeDepth-head ones with
    the processor a DINOv2 model needs (multiples of 14, here 56x84)."""
    folders = {kind: tmp_path_factory.mktemp(kind) for kind in (*KINDS, "v1-metric")}
    reference.build_depth_anything("relative", folders["relative"], seed=1)
    reference.build_depth_anything("metric", folders["metric"], seed=2)
    reference.build_zoedepth_dinov2(folders["zoedepth-dinov2"], seed=3)
    original = tmp_path_factory.mktemp("v1-original") / "depth_anything_metric_depth_indoor.pt"
    reference.build_depth_anything_v1("indoor", original, seed=4)
    convert(original, folders["v1-metric"], variant="indoor")
    processor = ZoeDepthImageProcessor(size=(HEIGHT, WIDTH), ensure_multiple_of=14, do_pad=False)
    for kind in ("zoedepth-dinov2", "v1-metric"):
        (folders[kind] / "preprocessor_config.json").write_text(json.dumps(processor.to_dict()))
    return folders


@pytest.fixture(scope="module")
def loaded(checkpoints):
    """{kind: (model, variables, jitted apply)} in fp32."""
    result = {}
    for kind, folder in checkpoints.items():
        model, variables = from_pretrained(folder)
        result[kind] = (model, variables, jax.jit(model.apply))
    return result


def pixels(batch: int, seed: int = 0) -> jax.Array:
    return jnp.asarray(reference.test_images(batch, HEIGHT, WIDTH, seed=seed).transpose(0, 2, 3, 1))


def depth_error(kind: str, ours, expected) -> float:
    """Per pixel for metric depth (positive); relative to the map's scale for relative depth, whose ReLU leaves
    zeros."""
    return relative_error(ours, expected) if kind == "relative" else depth_relative_error(ours, expected)


# --------------------------------------------------------------------------------------------------------------
# jax.export
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["relative", "zoedepth-dinov2"])
def test_jax_export_round_trip_matches_apply(loaded, checkpoints, kind, tmp_path, capsys):
    model, variables, apply = loaded[kind]
    path = tmp_path / f"{kind}.jaxexport"
    if kind == "relative":  # through the command line
        command = ["export", str(path), "--model", str(checkpoints[kind])]
        assert main([*command, "--height", str(HEIGHT), "--width", str(WIDTH)]) == 0
        assert "any batch size" in capsys.readouterr().out
    else:
        save_exported(path, export_model(model, variables, HEIGHT, WIDTH))
    run = load_exported(path)
    for batch in (1, 2):  # one artifact, a symbolic batch
        x = pixels(batch, seed=batch)
        depth, logits = run(variables, x)
        expected = apply(variables, x).predicted_depth
        assert np.asarray(expected).std() > 1e-2  # not a degenerate reference
        assert logits.shape == (batch, 0)  # one head: the same (depth, logits) contract as single-head ZoeDepth
        assert depth_error(kind, depth, expected) <= FP32_RELATIVE


def test_export_sizes_are_multiples_of_the_patch_size(checkpoints, loaded, tmp_path, capsys):
    model, variables, _ = loaded["relative"]
    with pytest.raises(ConfigError, match="multiples of the patch size 14"):
        export_model(model, variables, 64, WIDTH)  # a multiple of 16, not of 14
    out = tmp_path / "model.jaxexport"
    command = ["export", str(out), "--model", str(checkpoints["zoedepth-dinov2"]), "--height", "64", "--width", "84"]
    assert main(command) == 2
    assert "multiples of the patch size 14: 64x84" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "14 for the DINOv2 models" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, output",
    [("relative", "predicted_relative_depth"), ("metric", "predicted_depth"), ("zoedepth-dinov2", "predicted_depth")],
)
def test_onnx_matches_jax(checkpoints, loaded, kind, output, tmp_path):
    pytest.importorskip("jax2onnx", reason="ONNX export needs jax2onnx (the onnx extra)")
    ort = pytest.importorskip("onnxruntime", reason="running the exported graph needs onnxruntime")
    from zoedepth_jax.inference.onnx_export import export_onnx

    model, variables, apply = loaded[kind]
    path = tmp_path / f"{kind}.onnx"
    if kind == "metric":  # through the command line
        command = ["export", str(path), "--model", str(checkpoints[kind]), "--format", "onnx"]
        assert main([*command, "--height", str(HEIGHT), "--width", str(WIDTH)]) == 0
    else:
        export_onnx(model, variables, path, HEIGHT, WIDTH)
    onnx_runtime = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in onnx_runtime.get_outputs()] == [output]
    x = pixels(2, seed=5)
    (depth,) = onnx_runtime.run(None, {"pixel_values": np.asarray(x)})
    expected = apply(variables, x).predicted_depth
    assert np.asarray(expected).std() > 1e-2
    assert depth_error(kind, depth, expected) <= FP32_RELATIVE


# --------------------------------------------------------------------------------------------------------------
# bf16
# --------------------------------------------------------------------------------------------------------------


def median_relative(ours, expected) -> float:
    """The median over pixels of |ours - expected| / expected, over the pixels where the reference is positive (a
    relative map's ReLU leaves some at 0)."""
    ours, expected = np.asarray(ours, np.float64), np.asarray(expected, np.float64)
    positive = expected > 0
    return float(np.median(np.abs(ours - expected)[positive] / expected[positive]))


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_is_close_to_fp32_and_computes_in_bf16(checkpoints, loaded, kind):
    _, variables, apply = loaded[kind]
    model, bf16_variables = from_pretrained(checkpoints[kind], dtype=jnp.bfloat16)
    x = pixels(1, seed=7)
    assert "bf16" in str(jax.make_jaxpr(model.apply)(bf16_variables, x))
    depth = jax.jit(model.apply)(bf16_variables, x).predicted_depth
    assert depth.dtype == jnp.float32  # the output stays fp32
    error = median_relative(depth, apply(variables, x).predicted_depth)
    assert 10 * FP32_RELATIVE < error <= BF16_DEPTH_MEDIAN_RELATIVE, error  # really bf16, the same depth


def test_pipeline_dtype_bf16(checkpoints):
    photo = reference.photo_like(HEIGHT, WIDTH, seed=4)
    fp32 = DepthEstimator(checkpoints["metric"])(photo)["predicted_depth"]
    estimator = DepthEstimator(checkpoints["metric"], dtype=jnp.bfloat16)
    assert estimator.model.dtype == jnp.bfloat16
    bf16 = estimator(photo)["predicted_depth"]
    assert 10 * FP32_RELATIVE < median_relative(bf16, fp32) <= BF16_DEPTH_MEDIAN_RELATIVE


# --------------------------------------------------------------------------------------------------------------
# Several devices
# --------------------------------------------------------------------------------------------------------------


def test_two_devices_give_the_single_device_depth(checkpoints, tmp_path):
    photos = [reference.photo_like(HEIGHT, WIDTH, seed=k) for k in range(3)]  # odd: padded to the device count
    paths = []
    for k, photo in enumerate(photos):
        paths.append(str(tmp_path / f"photo{k}.png"))
        Image.fromarray(photo).save(paths[-1])
    alone = [d["predicted_depth"] for d in DepthEstimator(checkpoints["metric"], batch_size=1)(paths)]
    code = """
        import sys, jax, numpy as np
        from zoedepth_jax import DepthEstimator
        checkpoint, out, *paths = sys.argv[1:]
        estimator = DepthEstimator(checkpoint, devices=jax.devices())
        assert len(estimator.devices) == 2 and estimator.batch_size == 2, estimator.devices
        np.savez(out, *[d["predicted_depth"] for d in estimator(paths)])
        """
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(ROOT))
    out = tmp_path / "sharded.npz"
    command = [sys.executable, "-c", textwrap.dedent(code), str(checkpoints["metric"]), str(out), *paths]
    child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    saved = np.load(out)
    for k, expected in enumerate(alone):
        assert depth_relative_error(saved[f"arr_{k}"], expected) <= FP32_RELATIVE, paths[k]


# --------------------------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------------------------


def group_of_each(params) -> dict[str, str]:
    labels = jax.tree_util.tree_flatten_with_path(parameter_labels(params))[0]
    return {"/".join(k.key for k in path): label for path, label in labels}


@pytest.mark.parametrize("kind", ["zoedepth-dinov2", "v1-metric"])
def test_dinov2_parameter_groups_follow_depth_anything(loaded, kind):
    """Depth Anything's metric_depth trainer: DINOv2's pos_embed is the position-encoding group, the rest of the
    DINOv2 the encoder; the reassemble stage belongs to the DPT head, the decoder; its recipe puts every group but
    the head at a fiftieth of the learning rate."""
    model, variables, _ = loaded[kind]
    groups = group_of_each(variables["params"])
    assert {name for name, group in groups.items() if group == "relative_position"} == {
        "backbone/embeddings/position_embeddings"
    }
    for name, group in groups.items():
        if name.startswith("backbone/") and "position_embeddings" not in name:
            assert group == "encoder", name
        if name.startswith(("neck/", "relative_head/")):
            assert group == "decoder", name
        if name.startswith("metric_head/"):
            assert group == "head", name
    assert any(name.startswith("neck/reassemble_stage/") for name in groups)
    config = TrainConfig.for_model(model.config, total_steps=10)
    rates = group_learning_rates(config)
    assert set(rates) == set(GROUPS)
    assert rates == {**dict.fromkeys(GROUPS, config.learning_rate / 50), "head": config.learning_rate}


@pytest.mark.parametrize("kind", ["zoedepth-dinov2"])
def test_finetune_zoedepth_head_on_dinov2(checkpoints, tmp_path, kind):
    """Two steps on generated scenes; the result is a model folder with the training's processor (multiples of 14)."""
    train = write_scenes(tmp_path / "train", 2, height=HEIGHT, width=WIDTH)
    folder = checkpoints[kind]
    result = finetune(folder, train, tmp_path / "run", steps=2, batch_size=2, progress=False)
    assert result.step == 2 and result.final is not None
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and all(np.isfinite(line["loss"]) for line in lines)
    before = from_pretrained(folder)[1]["params"]
    after = from_pretrained(result.final)[1]["params"]
    moved = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b), before, after)
    assert all(jax.tree_util.tree_leaves(moved["metric_head"]))  # the head trained
    assert any(jax.tree_util.tree_leaves(moved["backbone"]))  # and the DINOv2
    processor = json.loads((result.final / "preprocessor_config.json").read_text())
    assert processor["ensure_multiple_of"] == 14 and processor["size"] == {"height": HEIGHT, "width": WIDTH}


def test_finetune_refuses_depth_anything_v2(checkpoints, tmp_path, capsys):
    train = write_scenes(tmp_path / "train", 2, height=HEIGHT, width=WIDTH)
    with pytest.raises(ConfigError, match=r"Depth Anything V2 model \(DepthAnythingForDepthEstimation, relative\)"):
        finetune(checkpoints["relative"], train, tmp_path / "run", steps=2, batch_size=2, progress=False)
    assert not (tmp_path / "run").exists()
    command = ["finetune", str(train), "--out", str(tmp_path / "run"), "--model", str(checkpoints["metric"])]
    assert main([*command, "--steps", "2", "--batch-size", "2", "--no-progress"]) == 2
    assert "fine-tuning trains ZoeDepth-head models" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
