"""`zoedepth-jax selfcheck`, offline: re-drawn checkpoints laid out as a hub cache stand in for the released ones,
and generated photos for transformers' COCO test photos."""

from __future__ import annotations

import dataclasses
import json
import socket

import huggingface_hub
import jax
import numpy as np
import pytest
import reference
from hub_cache import lay_out_hub_cache
from PIL import Image

from zoedepth_jax import cli, selfcheck
from zoedepth_jax.selfcheck import checks
from zoedepth_jax.selfcheck.expected import CATS, POST_PROCESSED, RAW_OUTPUTS, SECOND_PHOTO, Expected

VARIANTS = ("nyu", "kitti", "nyu-kitti")
TEST_ORG = "zoedepth-jax-tests"  # hub ids with no released values, so only the transformers comparison applies
# The test checkpoints' processor resizes to about 64x96 instead of the released 384x512: the tiny models cost
# little at either size, transformers' forward does not.
SMALL_SIZE = {"height": 64, "width": 96}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A hub cache holding re-drawn tiny checkpoints as `TEST_ORG/zoedepth-<variant>`; the transformers models."""
    cache = tmp_path_factory.mktemp("hub-cache")
    models = {}
    for seed, variant in enumerate(VARIANTS):
        folder = tmp_path_factory.mktemp(variant)
        models[variant] = reference.build(variant, folder, seed=seed)
        (folder / "preprocessor_config.json").write_text(json.dumps({"size": SMALL_SIZE}))
        lay_out_hub_cache(cache, f"{TEST_ORG}/zoedepth-{variant}", folder)
    return cache, models


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Stand-ins for transformers' two COCO photos: generated, at sizes that pad and resize differently."""
    folder = tmp_path_factory.mktemp("coco")
    Image.fromarray(reference.photo_like(480, 640, seed=1)).save(folder / CATS)
    Image.fromarray(reference.photo_like(427, 640, seed=2)).save(folder / SECOND_PHOTO)
    return folder


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def run(capsys, *arguments) -> tuple[int, str]:
    status = cli.main(["selfcheck", *arguments])
    return status, capsys.readouterr().out


def model_arguments(variants=VARIANTS) -> list[str]:
    return [argument for variant in variants for argument in ("--model", f"{TEST_ORG}/zoedepth-{variant}")]


def test_passes_on_checkpoints_from_the_hub_cache_and_writes_the_example(
    hub_cache, fixtures, offline, capsys, tmp_path, monkeypatch
):
    cache, _ = hub_cache
    monkeypatch.setattr(selfcheck, "EXAMPLE_MODEL", f"{TEST_ORG}/zoedepth-nyu-kitti")
    out = tmp_path / "pictures"
    arguments = ["--fixtures", str(fixtures), "--cache-dir", str(cache), "--write-example", str(out)]
    status, table = run(capsys, *model_arguments(), *arguments)
    assert status == checks.EXIT_PASSED, table
    for variant in VARIANTS:
        for photo in ("example.jpg", CATS, SECOND_PHOTO):
            row = next(line for line in table.splitlines() if f"zoedepth-{variant} / {photo}" in line)
            assert " pass " in row and "max relative error" in row
    assert "--dtype auto picks" in table and "every check passed" in table
    color, side_by_side = (Image.open(out / name) for name in selfcheck.EXAMPLE_PICTURES)
    assert color.size == (600, 400) and side_by_side.size[0] == 2 * 600
    assert np.asarray(color).std() > 10, "the depth picture is flat"


def test_fails_when_one_converted_weight_is_perturbed(hub_cache, fixtures, offline, capsys, monkeypatch):
    cache, _ = hub_cache
    loaded = checks.from_pretrained

    def perturbed(folder):
        model, variables = loaded(folder)
        kernel = variables["params"]["backbone"]["encoder"]["layer_1"]["output"]["dense"]["kernel"]
        variables["params"]["backbone"]["encoder"]["layer_1"]["output"]["dense"]["kernel"] = kernel.at[0, 0].add(0.05)
        return model, variables

    monkeypatch.setattr(checks, "from_pretrained", perturbed)
    status, table = run(capsys, *model_arguments(["nyu"]), "--fixtures", str(fixtures), "--cache-dir", str(cache))
    assert status == checks.EXIT_FAILED, table
    assert "FAIL" in next(line for line in table.splitlines() if "zoedepth-nyu / example.jpg" in line)


def test_offline_without_the_models_says_what_was_not_checked(tmp_path, offline, capsys):
    status, table = run(capsys, "--cache-dir", str(tmp_path))
    assert status == checks.EXIT_INCOMPLETE not in (0, 1, 2)
    for model in selfcheck.DEFAULT_MODELS:
        row = next(line for line in table.splitlines() if line.startswith("load") and model in line)
        assert "not checked" in row and "hub cache" in row
    for photo in (CATS, SECOND_PHOTO):
        row = next(line for line in table.splitlines() if photo in line)
        assert "not checked" in row and "offline" in row


def test_a_depth_anything_checkpoint_is_not_checked_as_zoedepth(tmp_path, offline, capsys):
    folder = tmp_path / "depth-anything"
    reference.build_depth_anything("relative", folder)
    status, table = run(capsys, "--model", str(folder), "--fixtures", str(tmp_path))
    assert status == checks.EXIT_INCOMPLETE, table
    row = next(line for line in table.splitlines() if line.startswith("load"))
    assert "not checked" in row and "DepthAnythingForDepthEstimation" in row


def transformers_corners(model, photos, expected: Expected) -> tuple:
    """What transformers' own processor, model and post-processing give for `expected`'s test on `photos`:
    (corners, raw shape or None)."""
    import torch

    images = [Image.open(photos / name) for name in expected.images]
    if not expected.post_processed:
        with torch.no_grad():
            inputs = reference.hf_processor(size=SMALL_SIZE)(images=images, return_tensors="pt")
            depth = model(**inputs).predicted_depth.numpy()
        return (tuple(map(tuple, depth[0, :3, :3].tolist())),), depth.shape[1:]
    processor = reference.hf_processor(size=SMALL_SIZE, keep_aspect_ratio=False)
    inputs = processor(images=images, return_tensors="pt", do_pad=expected.pad)
    with torch.no_grad():
        outputs = model(**inputs)
        flipped = model(pixel_values=torch.flip(inputs.pixel_values, dims=[3])) if expected.flip else None
    depths = reference.hf_post_process(
        processor,
        outputs,
        source_sizes=[image.size[::-1] for image in images],
        outputs_flipped=flipped,
        do_remove_padding=expected.pad,
    )
    return tuple(tuple(map(tuple, depth[:3, :3].tolist())) for depth in depths), None


def test_expected_values_are_checked_with_transformers_rule(hub_cache, fixtures, offline, capsys, monkeypatch):
    """The released values stand replaced by transformers' own results (its processor, model and post-processing)
    on the re-drawn nyu-kitti checkpoint: all five pass; values moved by twice the tolerance fail."""
    cache, models = hub_cache
    model_id = f"{TEST_ORG}/zoedepth-nyu-kitti"
    stand_ins = []
    for expected in (RAW_OUTPUTS[1], *POST_PROCESSED):
        corners, shape = transformers_corners(models["nyu-kitti"], fixtures, expected)
        stand_ins.append(dataclasses.replace(expected, model=model_id, corners=corners, raw_shape=shape))
    assert np.std(stand_ins[0].corners) > 1e-3, "the re-drawn model's corner is flat: a weak check"
    monkeypatch.setattr(checks, "expectations_for", lambda model: tuple(stand_ins) if model == model_id else ())
    arguments = ["--model", model_id, "--fixtures", str(fixtures), "--cache-dir", str(cache)]
    status, table = run(capsys, *arguments)
    assert status == checks.EXIT_PASSED, table
    assert sum(" pass " in line for line in table.splitlines() if line.startswith("expected values")) == 5
    # the rule those rows went through: inside atol + rtol x value passes, twice the tolerance away fails
    expected = stand_ins[3]
    corners = np.asarray(expected.corners)
    tolerance = expected.atol + expected.rtol * np.abs(corners)
    assert checks._compare_corners(expected, corners + 0.9 * tolerance, None).verdict == checks.PASS
    assert checks._compare_corners(expected, corners - 2 * tolerance, None).verdict == checks.FAIL
    assert checks._compare_corners(expected, corners, "predicted_depth is (64, 96)").verdict == checks.FAIL


def test_dtype_auto_picks_by_measurement_and_says_so(hub_cache, capsys, monkeypatch):
    from zoedepth_jax.inference import precision

    cache, _ = hub_cache
    (folder,) = (cache / f"models--{TEST_ORG}--zoedepth-nyu" / "snapshots").iterdir()
    for command in ("predict", "eval"):
        for bf16_gflops, picked in ((300.0, "bfloat16"), (120.0, "float32")):
            timing = precision.PrecisionTiming("test CPU", 200.0, bf16_gflops)
            monkeypatch.setattr(cli, "measure_precision", lambda timing=timing: timing)
            arguments = cli._build_parser().parse_args([command, "in", "--model", str(folder), "--dtype", "auto"])
            estimator = cli._estimator_from_args(arguments)
            assert jax.numpy.dtype(estimator.model.dtype) == jax.numpy.dtype(picked)
            assert f"--dtype auto: {picked}" in capsys.readouterr().err


def test_precision_measurement_is_a_real_timing():
    from zoedepth_jax.inference.precision import measure_precision

    timing = measure_precision()
    assert timing.float32_gflops > 1 and timing.bfloat16_gflops > 1
    assert timing.fastest in ("float32", "bfloat16") and timing.fastest in timing.describe()


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.network
def test_released_checkpoints_pass_selfcheck(capsys):
    if huggingface_hub.constants.HF_HUB_OFFLINE or not _hub_reachable():
        pytest.skip("needs the network: huggingface.co is not reachable (or HF_HUB_OFFLINE is set)")
    status, table = run(capsys)
    assert status == checks.EXIT_PASSED, table
