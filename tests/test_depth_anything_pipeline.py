"""Depth Anything through the image processor, the pipeline (`DepthEstimator`) and `zoedepth-jax predict`: against
transformers' PIL-backed `DPTImageProcessorPil`, its post-processing and its model, end to end; relative depth named
as such everywhere; the options that need meters or ZoeDepth refused."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import reference
import torch
from hub_cache import lay_out_hub_cache
from PIL import Image
from tolerances import FP32_RELATIVE, POST_PROCESS_RELATIVE, depth_relative_error, relative_error
from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

from zoedepth_jax import (
    ConfigError,
    DepthAnythingImageProcessor,
    DepthAnythingOutput,
    DepthEstimator,
    ImageError,
    ZoeDepthImageProcessor,
    from_pretrained,
    pipeline,
)
from zoedepth_jax.cli import main
from zoedepth_jax.errors import ArgumentError
from zoedepth_jax.inference import depth_images

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "example.jpg"

# The preprocessor_config.json of depth-anything/Depth-Anything-V2-Small-hf (revision 32d03942; the V2 Base, Large
# and Metric checkpoints and V1's are written by the same conversion script with the same values), as transformers
# 4.x wrote it, with its bookkeeping keys. Stated here independently of zoedepth_jax's defaults.
RELEASED_CONFIG = {
    "_valid_processor_keys": ["images", "do_resize", "size", "keep_aspect_ratio", "ensure_multiple_of", "resample"],
    "do_normalize": True,
    "do_pad": False,
    "do_rescale": True,
    "do_resize": True,
    "ensure_multiple_of": 14,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "DPTImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "keep_aspect_ratio": True,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 518, "width": 518},
    "size_divisor": None,
}
RELEASED = {
    key: value for key, value in RELEASED_CONFIG.items() if key not in ("_valid_processor_keys", "size_divisor")
}
# The checkpoints of the pipeline tests carry a smaller size, so that the tiny models run on small inputs.
TEST_CONFIG = {**RELEASED_CONFIG, "size": {"height": 98, "width": 98}}


def hf_processor(**settings) -> DPTImageProcessorPil:
    return DPTImageProcessorPil(**{**RELEASED, **settings})


def hf_pixels(image, **settings) -> np.ndarray:
    """transformers' pixel values as NHWC (arrays declared channels-last)."""
    pixel_values = hf_processor(**settings)(image, return_tensors="np", input_data_format="channels_last")
    return pixel_values["pixel_values"].transpose(0, 2, 3, 1)


def random_rgb(rng, height, width) -> np.ndarray:
    """Noise over a gradient: every pixel differs from its neighbours, so every filter weight matters."""
    gradient = np.linspace(0, 128, width)[None, :, None] + np.linspace(0, 96, height)[:, None, None]
    return np.clip(gradient + rng.integers(0, 128, (height, width, 3)), 0, 255).astype(np.uint8)


def example_photo(height: int, width: int) -> np.ndarray:
    """The example photo, downscaled: real-looking content at a size the tiny models run fast on."""
    with Image.open(EXAMPLE) as image:
        return np.asarray(image.convert("RGB").resize((width, height), Image.BICUBIC))


# ------------------------------------------------------------------------------------------ processor


# (height, width): landscape and portrait photos, a 1080p frame, a wide and a tall strip, tiny and odd sizes, and
# one already at 518 on its short side.
SIZES = [(480, 640), (640, 480), (1080, 1920), (100, 300), (301, 97), (1, 1), (5, 7), (37, 53), (518, 700)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_pixel_values_are_transformers_bit_for_bit(size):
    """8-bit images: the same Pillow resize on the 8-bit image, the same float64 rescale stored as float32 and the
    same float32 normalisation as transformers, so no tolerance: the pixel values are equal."""
    rgb = random_rgb(np.random.default_rng(sum(size)), *size)
    expected = hf_pixels(rgb)
    ours = DepthAnythingImageProcessor()(rgb)["pixel_values"]
    assert expected.std() > 0.1, "degenerate test image"
    np.testing.assert_array_equal(ours, expected)
    assert DepthAnythingImageProcessor().processed_size(*size) == ours.shape[1:3]
    assert all(side % 14 == 0 for side in ours.shape[1:3])


def test_the_size_rule_scales_as_little_as_possible():
    """The side whose scale to 518 is closer to 1 reaches 518; the other keeps the aspect ratio, rounded to a
    multiple of 14 (halves to even: 100x300 scales to 172.7x518, 12.3 multiples)."""
    processor = DepthAnythingImageProcessor()
    assert processor.processed_size(480, 640) == (518, 686)
    assert processor.processed_size(1080, 1920) == (518, 924)
    assert processor.processed_size(100, 300) == (168, 518)
    assert processor.processed_size(518, 518) == (518, 518)
    assert processor.processed_size(480, 640, keep_aspect_ratio=False) == (518, 518)
    with pytest.raises(ImageError, match=r"image #0: 999x13 resizes to 518x0"):
        processor(np.zeros((999, 13, 3), np.uint8))


@pytest.mark.parametrize(
    "settings",
    [
        {"resample": 2},
        {"resample": 1, "keep_aspect_ratio": False},
        {"ensure_multiple_of": 1, "size": {"height": 97, "width": 203}},
        {"do_resize": False},
        {"do_normalize": False},
        {"do_rescale": False, "do_normalize": False},
    ],
    ids=["bilinear", "lanczos-fixed", "multiple-1", "no-resize", "no-normalize", "no-rescale"],
)
def test_options_match_transformers(settings):
    rgb = random_rgb(np.random.default_rng(3), 61, 83)
    np.testing.assert_array_equal(
        DepthAnythingImageProcessor()(rgb, **settings)["pixel_values"], hf_pixels(rgb, **settings)
    )


def test_files_and_pil_images_match_transformers(tmp_path):
    rgb = random_rgb(np.random.default_rng(4), 45, 70)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    expected = hf_processor()(str(path), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    for image in (str(path), path, Image.fromarray(rgb)):
        np.testing.assert_array_equal(DepthAnythingImageProcessor()(image)["pixel_values"], expected)


def test_released_config_reads_and_writes_as_transformers_does(tmp_path):
    ours = DepthAnythingImageProcessor.from_dict(RELEASED_CONFIG)
    theirs = json.loads(json.dumps(hf_processor().to_dict()))
    assert ours.to_dict() == theirs == DepthAnythingImageProcessor().to_dict()  # the defaults are the released ones
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(TEST_CONFIG))
    assert DepthAnythingImageProcessor.from_json_file(path).size == {"height": 98, "width": 98}
    custom = DepthAnythingImageProcessor(size=(266, 350), resample="bilinear", image_std=0.5)
    read_back = DPTImageProcessorPil.from_dict(custom.to_dict())  # transformers reads ours
    assert json.loads(json.dumps(read_back.to_dict())) == custom.to_dict()


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("crop_pct", 0.9, r"unknown key\(s\) \['crop_pct'\]"),
        ("do_pad", True, r"do_pad = true .* not supported"),
        ("resample", 7, r"resample must be .*'bicubic' \(Pillow code 3\)"),
        ("ensure_multiple_of", 14.5, "ensure_multiple_of must be a positive integer"),
        ("size", {"shortest_edge": 518}, "size must have exactly the keys 'height' and 'width'"),
        ("image_std", [0.229, 0, 0.225], "image_std must not contain 0"),
        ("image_processor_type", "ZoeDepthImageProcessor", r"not a Depth Anything \(DPT\) image processor"),
    ],
)
def test_bad_config_fields_are_named(field, value, match):
    with pytest.raises(ConfigError, match=match):
        DepthAnythingImageProcessor.from_dict({**RELEASED_CONFIG, field: value})


def test_post_processing_matches_transformers():
    ramp = np.linspace(3, 7, 98)[None, None, :]  # noise over a ramp in 2..10: bicubic overshoot stays above 0
    depth = (ramp + np.random.default_rng(5).uniform(-1, 3, (2, 70, 98))).astype(np.float32)
    sizes = [(37, 53), (480, 640)]
    theirs = hf_processor().post_process_depth_estimation(
        DepthAnythingOutput(torch.from_numpy(depth)), target_sizes=sizes
    )
    ours = DepthAnythingImageProcessor().post_process_depth_estimation(DepthAnythingOutput(depth), target_sizes=sizes)
    for result, expected in zip(ours, theirs, strict=True):
        assert result["predicted_depth"].dtype == np.float32
        assert (
            depth_relative_error(result["predicted_depth"], expected["predicted_depth"].numpy())
            <= POST_PROCESS_RELATIVE
        )
    unresized = DepthAnythingImageProcessor().post_process_depth_estimation(DepthAnythingOutput(depth))
    np.testing.assert_array_equal(unresized[1]["predicted_depth"], depth[1])
    with pytest.raises(ArgumentError, match="target_sizes has 1 entries for a batch of 2"):
        DepthAnythingImageProcessor().post_process_depth_estimation(DepthAnythingOutput(depth), target_sizes=sizes[:1])


# ------------------------------------------------------------------------------------------ pipeline

KINDS = ["relative", "metric"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(transformers model, folder with a preprocessor_config.json) per kind."""
    built = {}
    for seed, kind in enumerate(KINDS):
        folder = tmp_path_factory.mktemp(f"da_{kind}")
        hf_model = reference.build_depth_anything(kind, folder, seed=seed)
        (folder / "preprocessor_config.json").write_text(json.dumps(TEST_CONFIG))
        built[kind] = (hf_model, folder)
    return built


@torch.no_grad()
def transformers_depth(hf_model, image: np.ndarray) -> np.ndarray:
    """Depth at the image's size as transformers computes it: processor, model, post-processing with the size."""
    processor = hf_processor(size=TEST_CONFIG["size"])
    pixel_values = processor(image, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
    outputs = hf_model(pixel_values=pixel_values)
    return processor.post_process_depth_estimation(outputs, target_sizes=[image.shape[:2]])[0][
        "predicted_depth"
    ].numpy()


PHOTOS = [(60, 90), (49, 73)]  # both processed to 70x98 (with the checkpoints' size, 98): one batch of two


@pytest.fixture(scope="module")
def photos():
    return [example_photo(*size) for size in PHOTOS]


@pytest.fixture(scope="module")
def estimators(checkpoints):
    """One estimator per kind, from its folder (so with its preprocessor_config.json), batches of two."""
    return {kind: pipeline(folder, batch_size=2) for kind, (_, folder) in checkpoints.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_pipeline_matches_transformers_end_to_end(checkpoints, estimators, photos, kind):
    hf_model, _ = checkpoints[kind]
    estimator = estimators[kind]
    assert isinstance(estimator.processor, DepthAnythingImageProcessor) and estimator.processor.size["height"] == 98
    assert not estimator.flip and estimator.relative == (kind == "relative")
    results = estimator(photos)
    assert estimator.compile_count == 1  # one processed shape, one batch
    key = "predicted_relative_depth" if kind == "relative" else "predicted_depth"
    for photo, result in zip(photos, results, strict=True):
        assert set(result) == {key, "depth"}  # relative depth is never under predicted_depth
        expected, depth = transformers_depth(hf_model, photo), result[key]
        assert depth.shape == photo.shape[:2] and depth.dtype == np.float32
        assert expected.std() / abs(expected.mean()) > 0.05 and (expected > 0).mean() > 0.5, "degenerate reference"
        # Held to the map's scale, not per pixel: the bicubic resize to the photo's size undershoots 0 beside the
        # relative model's ReLU zeros and the metric one's smallest depths.
        error = relative_error(depth, expected)
        assert error <= FP32_RELATIVE, f"{photo.shape}: depth differs by {error:.2e}"
        picture = np.asarray(result["depth"])
        assert result["depth"].mode == "L" and picture.shape == photo.shape[:2]
        assert picture.flat[np.argmax(depth)] == 255 and picture.flat[np.argmin(depth)] == 0


def test_default_processor_and_module_input(checkpoints):
    """A module and its variables, without a folder: the released processor (518), its pixel values fed to the
    model as transformers feeds them."""
    hf_model, folder = checkpoints["relative"]
    model, variables = from_pretrained(folder)
    photo = example_photo(30, 40)  # processed to 392x518
    estimator = DepthEstimator(model, variables)
    assert estimator.processor.to_dict() == DepthAnythingImageProcessor().to_dict()
    depth = estimator(photo)["predicted_relative_depth"]
    with torch.no_grad():
        pixel_values = hf_processor()(photo, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
        assert tuple(pixel_values.shape[2:]) == (392, 518)
        outputs = hf_model(pixel_values=pixel_values)
    expected = hf_processor().post_process_depth_estimation(outputs, target_sizes=[(30, 40)])[0]["predicted_depth"]
    assert relative_error(depth, expected.numpy()) <= FP32_RELATIVE


def test_hub_id_loads_offline_from_the_cache_with_its_processor(checkpoints, estimators, photos, tmp_path, monkeypatch):
    _, folder = checkpoints["relative"]
    cache = tmp_path / "hub"
    lay_out_hub_cache(cache, "depth-anything/Depth-Anything-V2-Small-hf", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    estimator = pipeline("depth-anything/Depth-Anything-V2-Small-hf", cache_dir=str(cache), batch_size=2)
    assert estimator.relative and estimator.processor.size == {"height": 98, "width": 98}
    for cached, direct in zip(estimator(photos), estimators["relative"](photos), strict=True):
        np.testing.assert_array_equal(cached["predicted_relative_depth"], direct["predicted_relative_depth"])


def test_options_that_need_zoedepth_are_refused(checkpoints, tmp_path):
    _, folder = checkpoints["relative"]
    for options, match in [
        ({"flip": True}, "flip=True: Depth Anything has no flip average"),
        ({"uncertainty": True}, "uncertainty=True needs ZoeDepth's distribution over depth bins"),
        ({"processor": ZoeDepthImageProcessor()}, "runs with a DepthAnythingImageProcessor, got a ZoeDepth"),
    ]:
        with pytest.raises(ArgumentError, match=match):
            DepthEstimator(folder, **options)
    with pytest.raises(ConfigError, match="routing = 'batch': Depth Anything has a single head"):
        DepthEstimator(folder, routing="batch")
    model, variables = from_pretrained(folder)
    with pytest.raises(ArgumentError, match="routing = 'batch': Depth Anything has a single head"):
        DepthEstimator(model, variables, routing="batch")
    bad = tmp_path / "bad"
    bad.mkdir()
    for file in folder.iterdir():
        (bad / file.name).write_bytes(file.read_bytes())
    (bad / "preprocessor_config.json").write_text(json.dumps({**TEST_CONFIG, "do_pad": True}))
    with pytest.raises(ConfigError, match=r"bad/preprocessor_config.json: do_pad = true"):
        DepthEstimator(bad)


# ------------------------------------------------------------------------------------------ command line


def _outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_predict_names_relative_depth_as_such(checkpoints, estimators, photos, tmp_path, capsys):
    _, folder = checkpoints["relative"]
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    Image.fromarray(photos[0]).save(images / "cup.png")
    Image.fromarray(photos[1]).save(images / "nested" / "small.jpg")
    out = tmp_path / "out"
    command = ["predict", str(images), "--model", str(folder), "--out", str(out), "--npy"]
    assert main(command) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert "relative depth min" in printed.out and " m " not in printed.out
    assert "2 done, 0 skipped, 0 failed" in printed.err
    assert _outputs(out) == [
        "cup_relative_depth.npy",
        "cup_relative_depth.png",
        "cup_relative_depth_color.png",
        "nested/small_relative_depth.npy",
        "nested/small_relative_depth.png",
        "nested/small_relative_depth_color.png",
    ]
    depth = np.load(out / "cup_relative_depth.npy")
    alone_and_batched = relative_error(depth, estimators["relative"](photos)[0]["predicted_relative_depth"])
    assert alone_and_batched <= FP32_RELATIVE  # one image per call here, a batch of two there
    with Image.open(out / "cup_relative_depth.png") as png:
        assert png.mode in ("I;16", "I") and png.size == (90, 60)
        levels = np.asarray(png).astype(np.float64)
        low, high = float(png.text["relative_depth_min"]), float(png.text["relative_depth_max"])
    assert (low, high) == (float(depth.min()), float(depth.max())) and levels.min() == 0 and levels.max() == 65535
    decoded = low + levels / 65535 * (high - low)
    assert np.abs(decoded - depth).max() <= (high - low) / 65535 / 2 + 1e-6 * high  # half a step, plus fp32 rounding
    assert main(command) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().err  # resumes by the relative names


def test_metric_depth_anything_writes_millimetres_and_3d(checkpoints, photos, tmp_path, capsys):
    _, folder = checkpoints["metric"]
    image = tmp_path / "cup.png"
    Image.fromarray(photos[0]).save(image)
    out = tmp_path / "out"
    assert main(["predict", str(image), "--model", str(folder), "--out", str(out), "--npy", "--ply"]) == 0
    assert "depth min" in capsys.readouterr().out
    assert _outputs(out) == ["cup.ply", "cup_depth.npy", "cup_depth.png", "cup_depth_color.png"]
    depth = np.load(out / "cup_depth.npy")
    with Image.open(out / "cup_depth.png") as png:
        np.testing.assert_array_equal(np.asarray(png), np.clip(np.rint(depth.astype(np.float64) * 1000), 0, 65535))


def test_relative_model_refuses_what_needs_meters(checkpoints, photos, tmp_path, capsys):
    _, folder = checkpoints["relative"]
    image = tmp_path / "cup.png"
    Image.fromarray(photos[0]).save(image)
    base = ["predict", str(image), "--model", str(folder), "--out", str(tmp_path / "out")]
    for extra, message in [
        (["--ply"], "3D outputs (--ply, --glb) need depth in meters"),
        (["--glb"], "3D outputs (--ply, --glb) need depth in meters"),
        (["--flip"], "Depth Anything has no flip average"),
        (["--uncertainty"], "needs ZoeDepth's distribution over depth bins"),
    ]:
        assert main([*base, *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    Image.fromarray(photos[0]).save(pairs / "cup.png")
    Image.fromarray(np.full((60, 90), 1500, np.uint16)).save(pairs / "cup_depth.png")
    assert main(["eval", str(pairs), "--model", str(folder), "--no-progress"]) == 2
    assert "this model predicts relative depth" in capsys.readouterr().err


def test_help_mentions_depth_anything_and_the_relative_files(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    printed = capsys.readouterr().out
    assert "Depth Anything" in printed and "<name>_relative_depth.png" in printed and "NOT meters" in printed


def test_relative_png_encoding():
    depth = np.array([[1.0, 2.0, np.nan], [3.0, 0.5, 2.5]], dtype=np.float32)
    image, text = depth_images.relative_depth_to_png16(depth)
    assert image.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(image), [[13107, 39321, 0], [65535, 0, 52428]])  # (d - 0.5) / 2.5
    assert dict((key, value) for _, chunk, _ in text.chunks for key, value in [chunk.split(b"\0")]) == {
        b"relative_depth_min": b"0.5",
        b"relative_depth_max": b"3.0",
    }
    flat, _ = depth_images.relative_depth_to_png16(np.full((2, 3), 4.0, np.float32))
    assert not np.asarray(flat).any()
    color = np.asarray(depth_images.colorize_relative(depth)).sum(axis=2)
    assert color[1, 0] > color[0, 0] > color[1, 1] and color[0, 2] == color.min()  # near bright; NaN as far
