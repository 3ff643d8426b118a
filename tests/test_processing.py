"""The image processor against transformers' PIL-backed `ZoeDepthImageProcessorPil` (the one transformers uses
without torchvision), the post-processing against torch's bicubic interpolate, and the input rules and errors."""

from __future__ import annotations

import ast
import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tolerances import (
    MIXTURE_RELATIVE,
    PIXEL_VALUES_ABS,
    POST_PROCESS_RELATIVE,
    RESIZE_GRADIENT_RELATIVE,
    RESIZE_RELATIVE,
    UINT8_RESIZE_LEVELS,
    depth_relative_error,
    relative_error,
)
from transformers.models.zoedepth import image_processing_pil_zoedepth as hf_module

from zoedepth_jax import ConfigError, ImageError, ZoeDepthOutput, ops
from zoedepth_jax.inference.images import load_image
from zoedepth_jax.inference.processor import RELEASED_DEFAULTS, ZoeDepthImageProcessor, mixture_of_two

HF = reference.hf_processor()  # the released settings, stated independently of ours in tests/reference.py
OURS = ZoeDepthImageProcessor()


def random_rgb(rng, height, width) -> np.ndarray:
    """Noise over a gradient: every pixel differs from its neighbours, so every interpolation weight matters."""
    gradient = np.linspace(0, 128, width)[None, :, None] + np.linspace(0, 96, height)[:, None, None]
    return np.clip(gradient + rng.integers(0, 128, (height, width, 3)), 0, 255).astype(np.uint8)


def hf_pixels(images, **overrides) -> np.ndarray:
    """transformers' pixel values as NHWC. Arrays are declared channels-last: transformers guesses the channel
    axis otherwise, and reads a 3- or 4-row image as channels-first."""
    items = images if isinstance(images, list) else [images]
    if any(isinstance(item, np.ndarray) for item in items):
        overrides["input_data_format"] = "channels_last"
    return HF(images, return_tensors="np", **overrides)["pixel_values"].transpose(0, 2, 3, 1)


def pixel_error(ours, reference) -> float:
    """max |ours - reference|, relative to max(1, max |reference|) (see tolerances.PIXEL_VALUES_ABS)."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    assert ours.dtype == np.float32
    scale = max(1.0, float(np.abs(reference).max()))
    return float(np.abs(ours.astype(np.float64) - reference).max() / scale)


def assert_varied(pixels):
    assert pixels.std() > 0.05 * max(1.0, float(np.abs(pixels).max())), "degenerate test image"


# ------------------------------------------------------------------------------------------ parity: options


side = st.one_of(st.integers(5, 40), st.integers(41, 500))
shape = st.one_of(
    st.tuples(side, side),
    st.tuples(st.integers(5, 12), st.integers(300, 1500)),  # very wide
    st.tuples(st.integers(300, 1500), st.integers(5, 12)),  # very tall
)
overrides = st.fixed_dictionaries(
    {},
    optional={
        "do_pad": st.booleans(),
        "do_resize": st.booleans(),
        "keep_aspect_ratio": st.booleans(),
        "size": st.builds(lambda h, w: {"height": h, "width": w}, st.integers(16, 640), st.integers(16, 640)),
        "ensure_multiple_of": st.sampled_from([1, 7, 14, 32]),
        "resample": st.sampled_from([2, 3]),  # Pillow's codes: bilinear, bicubic
        "do_normalize": st.booleans(),
        "image_mean": st.lists(st.floats(0, 1, width=32), min_size=3, max_size=3),
        "image_std": st.lists(st.floats(0.125, 2, width=32), min_size=3, max_size=3),
    },
)


@settings(max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=shape,
    kind=st.sampled_from(["uint8", "pil", "float32", "float64", "unit float32"]),
    options=overrides,
    seed=st.integers(0, 2**31),
)
def test_matches_transformers(size, kind, options, seed):
    """Random sizes (odd, tiny, very wide and tall), input kinds and every option, against transformers."""
    rgb = random_rgb(np.random.default_rng(seed), *size)
    if kind == "pil":
        image = Image.fromarray(rgb)
    elif kind == "unit float32":  # a float image in [0, 1]: do_rescale off, as such images need
        image = rgb.astype(np.float32) / 255 + np.float32(1e-3)
        options = {**options, "do_rescale": False}
    elif kind.startswith("float"):  # not integer-valued
        image = rgb.astype(kind) + np.asarray(0.25, kind)
    else:
        image = rgb
    try:
        expected = hf_pixels(image, **options)
    except RuntimeError as error:  # torch refuses to resize to an empty size; we name the image instead
        assert "sizes should be greater than 0" in str(error)
        with pytest.raises(ImageError, match="resizes to"):
            OURS(image, **options)
        return
    ours = OURS(image, **options)["pixel_values"]
    assert_varied(expected)
    assert pixel_error(ours, expected) <= PIXEL_VALUES_ABS
    assert OURS.processed_size(*size, **options) == ours.shape[1:3]


@pytest.mark.parametrize(
    "size, options",
    [
        ((5, 5), {}),  # the smallest image ZoeDepth's padding fits in
        ((8, 400), {}),  # about as wide as a 8-row image can be and still resize to a row of 32
        ((400, 10), {}),
        ((333, 111), {}),
        ((480, 640), {}),
        ((3, 4), {"do_pad": False}),  # a 3-row array: transformers would guess channels-first without the hint
        ((1, 1), {"do_pad": False}),
        ((37, 41), {"do_resize": False}),
        ((37, 41), {"do_pad": False, "do_resize": False}),
        ((200, 120), {"keep_aspect_ratio": False, "ensure_multiple_of": 1, "size": {"height": 97, "width": 203}}),
        ((200, 120), {"do_normalize": False}),
        ((200, 120), {"resample": 3}),
        ((200, 120), {"do_rescale": False, "do_normalize": False}),  # float input, on the 0..255 scale throughout
        ((198, 898), {}),  # padded to 256x1024: scales 1.5 and 0.5 tie, and transformers keeps the height's
        ((256, 1024), {"do_pad": False}),
        ((48, 64), {"do_pad": False, "keep_aspect_ratio": False, "size": {"height": 48, "width": 80}}),  # 2.5 -> 2
    ],
)
def test_matches_transformers_at_the_edges(size, options):
    rgb = random_rgb(np.random.default_rng(sum(size)), *size)
    image = rgb.astype(np.float32) + np.float32(0.5) if options.get("do_rescale") is False else rgb
    expected = hf_pixels(image, **options)
    ours = OURS(image, **options)["pixel_values"]
    assert pixel_error(ours, expected) <= PIXEL_VALUES_ABS
    assert OURS.processed_size(*size, **options) == ours.shape[1:3]


@pytest.mark.parametrize(
    "options", [{}, {"do_normalize": False}, {"do_pad": False, "image_mean": 0.25, "image_std": [0.229, 0.224, 0.3]}]
)
def test_every_step_but_the_resize_is_bit_exact(options):
    """Rescale (float64 product, float32 result), reflection padding and normalisation are transformers' own
    arithmetic: without the resize the pixel values are identical, not just close."""
    rgb = random_rgb(np.random.default_rng(18), 31, 45)
    for image in (rgb, rgb.astype(np.float64) + 0.125):
        ours = OURS(image, do_resize=False, **options)["pixel_values"]
        np.testing.assert_array_equal(ours, hf_pixels(image, do_resize=False, **options).astype(np.float32))


def test_a_batch_is_its_images_stacked():
    rng = np.random.default_rng(1)
    images = [random_rgb(rng, 90, 120) for _ in range(3)]
    ours = OURS(images)["pixel_values"]
    assert ours.shape == (3, *OURS.processed_size(90, 120), 3) == (3, 384, 480, 3)
    assert pixel_error(ours, hf_pixels(images)) <= PIXEL_VALUES_ABS
    np.testing.assert_array_equal(OURS(np.stack(images))["pixel_values"], ours)  # a 4-D array is a batch
    np.testing.assert_array_equal(OURS(images[1])["pixel_values"][0], ours[1])


def test_uint8_without_rescale_is_resized_in_float():
    """transformers resizes such an image as uint8 and rounds; we resize in float32, as for every other input."""
    rgb = random_rgb(np.random.default_rng(2), 50, 70)
    ours = OURS(rgb, do_rescale=False)["pixel_values"]
    assert pixel_error(ours, hf_pixels(rgb.astype(np.float32), do_rescale=False)) <= PIXEL_VALUES_ABS
    quantised = hf_pixels(rgb, do_rescale=False)
    level = 1 / 0.5  # one 0..255 level after (x - 0.5) / 0.5
    assert np.abs(ours - quantised).max() <= UINT8_RESIZE_LEVELS * level + 1e-3


# ------------------------------------------------------------------------------------------ parity: inputs


def test_paths_match_transformers(tmp_path):
    rgb = random_rgb(np.random.default_rng(3), 61, 83)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    expected = hf_pixels(str(path))
    for given_as in (str(path), path):
        assert pixel_error(OURS(given_as)["pixel_values"], expected) <= PIXEL_VALUES_ABS
    np.testing.assert_array_equal(OURS(str(path))["pixel_values"], OURS(rgb)["pixel_values"])


EIGHT_BIT_MODES = ["1", "L", "LA", "P", "PA", "RGBA", "CMYK", "YCbCr"]  # and RGBX (no file format keeps it)


@pytest.mark.parametrize("mode", EIGHT_BIT_MODES)
def test_eight_bit_modes_match_transformers_reading_the_file(tmp_path, mode):
    """transformers converts every image it opens from a path to RGB with Pillow; so do we, for files and image
    objects alike (transformers fails on, or for YCbCr misreads, non-RGB image objects)."""
    image = Image.fromarray(random_rgb(np.random.default_rng(4), 45, 52)).convert(mode)
    path = tmp_path / f"image.{mode}.tiff"  # TIFF stores every one of these modes losslessly
    image.save(path)
    assert Image.open(path).mode == image.mode
    expected = hf_pixels(str(path))
    assert_varied(expected)
    assert pixel_error(OURS(str(path))["pixel_values"], expected) <= PIXEL_VALUES_ABS
    assert pixel_error(OURS(image)["pixel_values"], expected) <= PIXEL_VALUES_ABS
    loaded = load_image(image)
    assert loaded.dtype == np.uint8 and loaded.shape == (45, 52, 3)


def test_alpha_is_dropped_not_composited():
    rgb = random_rgb(np.random.default_rng(5), 20, 30)
    alpha = np.random.default_rng(6).integers(0, 256, (20, 30, 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=2)
    np.testing.assert_array_equal(load_image(rgba), rgb)
    np.testing.assert_array_equal(load_image(Image.fromarray(rgba, "RGBA")), rgb)
    np.testing.assert_array_equal(load_image(Image.fromarray(rgba, "RGBA").convert("RGBX")), rgb)
    grey = rgb[:, :, 0]
    for array in (grey, grey[:, :, None], np.stack([grey, alpha[:, :, 0]], axis=2)):
        np.testing.assert_array_equal(load_image(array), np.repeat(grey[:, :, None], 3, axis=2))


def test_greyscale_arrays_match_transformers_given_rgb():
    grey = random_rgb(np.random.default_rng(7), 40, 50)[:, :, 0]
    expected = hf_pixels(np.repeat(grey[:, :, None], 3, axis=2))  # transformers needs three channels
    assert pixel_error(OURS(grey)["pixel_values"], expected) <= PIXEL_VALUES_ABS


def test_integer_and_bool_arrays():
    rgb = random_rgb(np.random.default_rng(8), 30, 40)
    as_int64 = rgb.astype(np.int64)  # e.g. from np.random.randint: read as 8-bit, as transformers reads it
    assert pixel_error(OURS(as_int64)["pixel_values"], hf_pixels(as_int64)) <= PIXEL_VALUES_ABS
    np.testing.assert_array_equal(load_image(as_int64), rgb)
    mask = rgb[:, :, 0] > 100
    np.testing.assert_array_equal(load_image(mask)[:, :, 0], np.where(mask, 255, 0))
    with pytest.raises(ImageError, match=r"int64 array with values -1\.\.255"):
        load_image(np.concatenate([as_int64, -np.ones_like(as_int64[:1])]))


def test_sixteen_bit_and_float_modes_follow_the_documented_rules(tmp_path):
    """16-bit (and mode I) values v read as v / 257 on the 0..255 scale; so 8-bit content stored in 16 bits
    (v = 257 u) processes exactly as the 8-bit image. Mode F values are taken as they are."""
    rgb = random_rgb(np.random.default_rng(9), 33, 47)
    grey8 = rgb[:, :, 0]
    as_rgb = np.repeat(grey8[:, :, None], 3, axis=2)
    reference = OURS(as_rgb)["pixel_values"]
    sixteen = Image.fromarray(grey8.astype(np.uint16) * 257)
    assert sixteen.mode == "I;16"
    path = tmp_path / "sixteen.png"
    sixteen.save(path)
    big_endian = Image.frombytes("I;16B", sixteen.size, (grey8.astype(">u2") * 257).tobytes())
    for image in (sixteen, path, sixteen.convert("I"), big_endian, grey8.astype(np.uint16) * 257):
        loaded = load_image(image)
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, as_rgb)
        assert pixel_error(OURS(image)["pixel_values"], reference) <= PIXEL_VALUES_ABS
    fine = Image.fromarray(np.arange(33 * 47, dtype=np.uint16).reshape(33, 47) * 40)  # not a multiple of 257
    np.testing.assert_array_equal(load_image(fine)[:, :, 1], np.asarray(fine, np.float32) / np.float32(257))
    floats = grey8.astype(np.float32) + np.float32(0.375)
    np.testing.assert_array_equal(load_image(Image.fromarray(floats, "F")), np.repeat(floats[:, :, None], 3, axis=2))
    with pytest.raises(ImageError, match=r"mode I .* values 0\.\.70000"):
        load_image(Image.fromarray(np.array([[0, 70000]] * 5, dtype=np.int32), "I"))


def test_exif_orientation_is_applied_to_paths_only(tmp_path):
    """As transformers: its load_image (paths) applies the EXIF orientation, image objects are taken as given."""
    rgb = random_rgb(np.random.default_rng(10), 40, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    Image.fromarray(rgb).save(path, exif=exif)
    assert load_image(path).shape == (64, 40, 3)
    assert pixel_error(OURS(str(path))["pixel_values"], hf_pixels(str(path))) <= PIXEL_VALUES_ABS
    with Image.open(path) as opened:
        assert load_image(opened).shape == (40, 64, 3)
        assert pixel_error(OURS(opened)["pixel_values"], hf_pixels(opened)) <= PIXEL_VALUES_ABS


# ------------------------------------------------------------------------------------------ configuration


def test_released_defaults_are_transformers_settings():
    expected = json.loads(json.dumps(HF.to_dict()))  # tuples as lists, as in the JSON file
    assert OURS.to_dict() == expected
    assert ZoeDepthImageProcessor.from_dict(expected).to_dict() == expected
    assert ZoeDepthImageProcessor(**RELEASED_DEFAULTS).to_dict() == expected
    custom = ZoeDepthImageProcessor(size=(256, 320), resample="bicubic", image_std=0.25)
    read_back = hf_module.ZoeDepthImageProcessorPil.from_dict(custom.to_dict())  # transformers reads ours
    assert json.loads(json.dumps(read_back.to_dict())) == custom.to_dict()


def test_from_json_file_and_overrides(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    config = {
        **RELEASED_DEFAULTS,
        "processor_class": "ZoeDepthProcessor",
        "image_processor_type": "ZoeDepthImageProcessor",
    }
    path.write_text(json.dumps({**config, "size": {"height": 256, "width": 320}, "resample": 3}))
    processor = ZoeDepthImageProcessor.from_json_file(path)
    assert processor.size == {"height": 256, "width": 320} and processor.resample == "bicubic"
    assert processor.processed_size(480, 640) == (256, 320)
    assert processor.processed_size(480, 640, size=(384, 512), do_pad=False) == (384, 512)
    assert processor.size == {"height": 256, "width": 320}  # overrides last one call
    assert processor.processed_size(480, 640, do_pad=None, size=None) == (256, 320)  # None: the processor's value


@pytest.mark.parametrize(
    "config, match",
    [
        ({"do_pad": True, "crop_pct": 0.9}, r"unknown key\(s\) \['crop_pct'\]"),
        ({"resample": 0}, "'bilinear'.*'bicubic'"),
        ({"size": {"shortest_edge": 384}}, "'height' and 'width'"),
        ({"image_std": [0.5, 0.0, 0.5]}, "must not contain 0"),
        ({"ensure_multiple_of": 0}, "positive"),
        ({"do_pad": "yes"}, "true or false"),
        ({"image_processor_type": "DPTImageProcessor"}, "not a ZoeDepth image processor"),
    ],
)
def test_bad_configs(config, match):
    with pytest.raises(ConfigError, match=match):
        ZoeDepthImageProcessor.from_dict(config)


def test_bad_config_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="missing.json"):
        ZoeDepthImageProcessor.from_json_file(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json: not valid JSON"):
        ZoeDepthImageProcessor.from_json_file(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="do_flip"):
        OURS(random_rgb(np.random.default_rng(0), 10, 10), do_flip=True)


# ------------------------------------------------------------------------------------------ image errors


def test_unreadable_files(tmp_path):
    with pytest.raises(ImageError, match=r"nothing\.png: no such file"):
        load_image(tmp_path / "nothing.png")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ImageError, match=r"noise\.png: cannot read the file"):
        load_image(tmp_path / "noise.png")
    Image.fromarray(random_rgb(np.random.default_rng(0), 64, 64)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"truncated\.png: cannot read the image: OSError"):
        load_image(tmp_path / "truncated.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match=r"noise\.png"):  # a batch names the file that failed
        OURS([tmp_path / "whole.png", str(tmp_path / "noise.png")])


@pytest.mark.parametrize(
    "image, match",
    [
        (Image.new("HSV", (8, 8)), r"image #0: unsupported image mode 'HSV' \(8x8\)"),
        (Image.new("RGB", (8, 0)), r"image #0: the image is empty \(mode RGB, 0x8\)"),  # PIL sizes are (w, h)
        (np.zeros((0, 10, 3), np.uint8), r"image #0: the image is empty \(array of shape \(0, 10, 3\)"),
        (np.zeros((3, 40, 50), np.uint8), r"shape \(3, 40, 50\) \(channels first\?"),
        (np.zeros((10, 10, 5), np.uint8), r"got shape \(10, 10, 5\)"),
        (np.full((10, 10, 3), np.nan, np.float32), "non-finite"),
        (np.zeros((10, 10, 3), np.complex64), "unsupported array dtype complex64"),
        (np.zeros((4, 10, 3), np.uint8), r"image #0: 4x10 is too small .* at least 5 pixels"),
        (np.zeros((7, 900, 3), np.uint8), r"image #0: 17x1026 \(padded\) resizes to 0x512"),
        ("https://example.com/a.png", "URLs are not read"),
        (3.5, "cannot use a float as an image"),
    ],
)
def test_unusable_images(image, match):
    with pytest.raises(ImageError, match=match):
        OURS(image)


def test_unsupported_mode_in_a_file(tmp_path):
    path = tmp_path / "lab.tiff"
    Image.new("LAB", (8, 6)).save(path)
    with pytest.raises(ImageError, match=r"lab\.tiff: unsupported image mode 'LAB' \(6x8\)"):
        OURS(path)


def test_mixed_shapes_cannot_be_batched():
    rng = np.random.default_rng(11)
    images = [random_rgb(rng, 100, 100), random_rgb(rng, 100, 300)]
    with pytest.raises(ImageError, match=r"image #0: 384x384; image #1: 192x512"):
        OURS(images)
    with pytest.raises(ImageError, match="no images"):
        OURS([])


def test_processing_imports_neither_torch_nor_transformers():
    root = Path(__file__).resolve().parents[1] / "zoedepth_jax"
    for module in ("inference/images.py", "inference/processor.py", "inference/depth_anything_processor.py", "ops.py"):
        tree = ast.parse((root / module).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {name.split(".")[0] for name in imported} & {"torch", "transformers", "torchvision"}, module


# ------------------------------------------------------------------------------------------ resizes


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    "source, target",
    [
        ((7, 9), (20, 31)),
        ((50, 40), (13, 17)),
        ((48, 64), (384, 512)),
        ((6, 1), (3, 5)),
        ((9, 9), (1, 1)),
        ((96, 4), (1082, 1300)),  # large: a source coordinate computed without torch's fused multiply-add is off
    ],
)
def test_resizes_match_torch(mode, align_corners, source, target):
    x = np.random.default_rng(12).standard_normal((2, *source, 3)).astype(np.float32)
    nchw = torch.from_numpy(x.transpose(0, 3, 1, 2))
    expected = torch.nn.functional.interpolate(nchw, target, mode=mode, align_corners=align_corners)
    expected = expected.numpy().transpose(0, 2, 3, 1)
    resize = ops.resize_bilinear if mode == "bilinear" else ops.resize_bicubic
    for array in (x, jnp.asarray(x)):  # numpy computes with numpy, JAX with JAX
        result = resize(array, target, align_corners=align_corners)
        assert isinstance(result, np.ndarray) == isinstance(array, np.ndarray)
        assert relative_error(np.asarray(result), expected) <= RESIZE_RELATIVE
    channels_first = resize(x.transpose(0, 3, 1, 2), target, align_corners=align_corners, axes=(2, 3))
    assert relative_error(channels_first, expected.transpose(0, 3, 1, 2)) <= RESIZE_RELATIVE


def resized_by_autodiff_of_the_gathers(x, target, mode, align_corners, factors=(None, None)):
    """The resize written as plain gathers (torch's taps from `ops`), for autodiff to differentiate."""
    taps = ops._linear_taps if mode == "bilinear" else ops._cubic_taps
    for axis, size, factor in ((2, target[1], factors[1]), (1, target[0], factors[0])):  # width first, as torch
        if x.shape[axis] == size and factor is None:
            continue
        indices, weights = taps(x.shape[axis], size, align_corners, np.float32, factor)
        shape = [1] * x.ndim
        shape[axis] = size
        x = sum(
            jnp.take(x, i, axis=axis) * jnp.asarray(w.reshape(shape), x.dtype)
            for i, w in zip(indices, weights, strict=True)
        )
    return x


RESIZES = [
    ((7, 9), (20, 31)),
    ((50, 40), (13, 17)),  # shrinking: some samples read by no output
    ((6, 1), (3, 5)),  # a border sample read twice by one output
    ((24, 32), (48, 64)),
]


@pytest.mark.parametrize(
    "mode, align_corners, source, target, factors",
    [(m, a, s, t, (None, None)) for m in ("bilinear", "bicubic") for a in (False, True) for s, t in RESIZES]
    + [("bicubic", False, (5, 7), (5, 7), (1.0, 1.0))],  # a scale factor of 1 still resamples (DINOv2's table)
)
def test_resize_gradients_match_autodiff_of_the_gathers(mode, align_corners, source, target, factors):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, *source, 3)), jnp.float32)
    resize = ops.resize_bilinear if mode == "bilinear" else ops.resize_bicubic
    kwargs = {} if factors[0] is None else {"scale_factors": factors}
    resized, vjp = jax.vjp(lambda x: resize(x, target, align_corners=align_corners, **kwargs), x)
    reference_resized, reference_vjp = jax.vjp(
        lambda x: resized_by_autodiff_of_the_gathers(x, target, mode, align_corners, factors), x
    )
    gradient = jnp.asarray(rng.standard_normal(resized.shape), jnp.float32)
    np.testing.assert_array_equal(resized, reference_resized)
    (ours,), (expected,) = vjp(gradient), reference_vjp(gradient)
    assert np.abs(np.asarray(expected)).max() > 1, "a gradient of the inputs' scale"
    assert relative_error(ours, expected) <= RESIZE_GRADIENT_RELATIVE
    assert "scatter" not in str(jax.make_jaxpr(vjp)(gradient)), "the gradient is gathers, not a scatter-add"


@pytest.mark.parametrize("target", [(96, 32), (24, 128)], ids=["height", "width"])
def test_bf16_resize_gradient_is_the_fp32_one_rounded_once(target):
    """The gradient of a bf16 resize of one axis sums its terms in fp32 and rounds the sum once: within half a
    bf16 step of the fp32 gradient of the same (bf16-valued) inputs, which a sum of bf16-rounded terms is not.
    (A resize of both axes rounds between the two, as its forward pass does.)"""
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((2, 24, 32, 16)), jnp.bfloat16)
    gradient = jnp.asarray(rng.standard_normal((2, *target, 16)), jnp.bfloat16)

    def gradient_of(x, gradient):
        return jax.vjp(lambda x: ops.resize_bilinear(x, target, align_corners=True), x)[1](gradient)[0]

    ours = gradient_of(x, gradient)
    assert ours.dtype == jnp.bfloat16
    exact = np.asarray(gradient_of(x.astype(jnp.float32), gradient.astype(jnp.float32)), np.float64)
    error = np.abs(np.asarray(ours, np.float64) - exact)
    worst = np.max(error / np.abs(exact))
    assert (error <= 2.0**-8 * np.abs(exact) * (1 + 1e-5)).all(), f"off by {worst:.2e} of itself"


# ------------------------------------------------------------------------------------------ post-processing


def torch_post_process(depth, flipped=None, source_sizes=None, target_sizes=None, do_remove_padding=True):
    """transformers' post-processing written with torch ops (its own calls torchvision's resize, which for
    tensors and antialias=False is interpolate(mode="bicubic", align_corners=False))."""
    bicubic = torch.nn.functional.interpolate
    depth = torch.from_numpy(depth)
    if flipped is not None:
        depth = (depth + torch.flip(torch.from_numpy(flipped), dims=[-1])) / 2
    results = []
    for index, image in enumerate(depth.unsqueeze(1)):  # [1, H, W]
        if source_sizes is not None:
            height, width = source_sizes[index]
            rows = int(np.sqrt(height / 2) * 3) if do_remove_padding else 0
            columns = int(np.sqrt(width / 2) * 3) if do_remove_padding else 0
            size = (height + 2 * rows, width + 2 * columns)
            image = bicubic(image[None], size=size, mode="bicubic", align_corners=False)[0]
            if rows > 0:
                image = image[:, rows:-rows, :]
            if columns > 0:
                image = image[:, :, columns:-columns]
        if target_sizes is not None:
            image = bicubic(image[None], size=tuple(target_sizes[index]), mode="bicubic", align_corners=False)[0]
        results.append(image[0].numpy())
    return results


def random_depth(seed, shape=(2, 48, 64)) -> np.ndarray:
    """Positive, varied depth in 2..10 m: noise over a ramp (bicubic overshoot stays well above 0)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(3, 7, shape[-1])[None, None, :]
    return (ramp + rng.uniform(-1, 3, shape)).astype(np.float32)


SOURCES = [(37, 53), (480, 640)]
TARGETS = [(20, 30), (96, 128)]


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"source_sizes": SOURCES},
        {"source_sizes": np.array(SOURCES), "target_sizes": TARGETS},
        {"source_sizes": SOURCES, "do_remove_padding": False},
        {"target_sizes": TARGETS, "do_remove_padding": False},
        {"do_remove_padding": False},
    ],
    ids=["source", "source+target", "source-no-unpad", "target-no-unpad", "neither"],
)
def test_post_processing_matches_torch(flip, kwargs):
    depth = random_depth(13)
    flipped = random_depth(14) if flip else None
    outputs = ZoeDepthOutput(predicted_depth=jnp.asarray(depth))
    outputs_flipped = ZoeDepthOutput(predicted_depth=flipped) if flip else None
    ours = OURS.post_process_depth_estimation(outputs, outputs_flipped=outputs_flipped, **kwargs)
    reference = torch_post_process(depth, flipped, **kwargs)
    assert len(ours) == len(reference) == 2
    for result, expected in zip(ours, reference, strict=True):
        depth_map = result["predicted_depth"]
        assert isinstance(depth_map, np.ndarray) and depth_map.dtype == np.float32
        assert expected.std() / expected.mean() > 0.05
        assert depth_relative_error(depth_map, expected) <= POST_PROCESS_RELATIVE
    if "target_sizes" in kwargs:
        assert [r["predicted_depth"].shape for r in ours] == TARGETS
    elif "source_sizes" in kwargs:
        assert [r["predicted_depth"].shape for r in ours] == SOURCES


def two_point_mixture(means: list[np.ndarray], stds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of an equal mixture, computed from samples: each distribution as the two points mean +- std
    (probability 1/2 each, which has exactly that mean and std), the mixture as all the points, equally weighted."""
    points = np.stack([m + sign * s for m, s in zip(means, stds, strict=True) for sign in (-1.0, 1.0)]).astype(
        np.float64
    )
    mean = points.mean(axis=0)
    return mean, np.sqrt(np.square(points - mean).mean(axis=0))


def test_mixture_of_two_is_the_mixture_of_the_distributions():
    rng = np.random.default_rng(3)
    means = [rng.uniform(1, 9, (5, 7)).astype(np.float32) for _ in range(2)]
    stds = [rng.uniform(0.01, 2, (5, 7)).astype(np.float32) for _ in range(2)]
    mean, std = mixture_of_two(means[0], stds[0], means[1], stds[1])
    expected_mean, expected_std = two_point_mixture(means, stds)
    assert relative_error(mean, expected_mean) <= MIXTURE_RELATIVE
    assert relative_error(std, expected_std) <= MIXTURE_RELATIVE
    assert relative_error(std, (stds[0] + stds[1]) / 2) > 0.1  # the mean of the stds is another quantity
    assert mixture_of_two(means[0], None, means[1], None)[1] is None


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [{"source_sizes": SOURCES}, {"source_sizes": SOURCES, "target_sizes": TARGETS}, {"do_remove_padding": False}],
    ids=["source", "source+target", "neither"],
)
def test_post_processing_carries_depth_std(flip, kwargs):
    """depth_std goes through the flip mixture, unpadding and resizes of the depth, as a map of its own."""
    depth, std = random_depth(13), random_depth(15) / 10
    outputs = ZoeDepthOutput(predicted_depth=jnp.asarray(depth), depth_std=jnp.asarray(std))
    outputs_flipped = None
    expected_std = std
    if flip:
        flipped, flipped_std = random_depth(14), random_depth(16) / 10
        outputs_flipped = ZoeDepthOutput(predicted_depth=flipped, depth_std=flipped_std)
        expected_std = two_point_mixture([depth, flipped[:, :, ::-1]], [std, flipped_std[:, :, ::-1]])[1]
    ours = OURS.post_process_depth_estimation(outputs, outputs_flipped=outputs_flipped, **kwargs)
    reference = torch_post_process(expected_std.astype(np.float32), None, **kwargs)
    plain = OURS.post_process_depth_estimation(ZoeDepthOutput(predicted_depth=depth), **kwargs)
    for result, expected, without in zip(ours, reference, plain, strict=True):
        assert expected.std() / expected.mean() > 0.05 and (result["depth_std"] >= 0).all()
        assert relative_error(result["depth_std"], np.maximum(expected, 0)) <= POST_PROCESS_RELATIVE
        if not flip:  # the depth itself is post-processed as without depth_std
            np.testing.assert_array_equal(result["predicted_depth"], without["predicted_depth"])
    assert "depth_std" not in plain[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "source_sizes is needed"),
        ({"target_sizes": TARGETS}, "source_sizes is needed"),
        ({"source_sizes": SOURCES[:1]}, "source_sizes has 1 entries for a batch of 2"),
        ({"source_sizes": SOURCES, "target_sizes": TARGETS * 2}, "target_sizes has 4 entries for a batch of 2"),
        ({"source_sizes": SOURCES, "outputs_flipped": "narrow"}, "same shape"),
    ],
)
def test_post_processing_argument_errors_match_transformers(monkeypatch, kwargs, match):
    """Where transformers' own post-processing raises ValueError, so does ours (and vice versa: the valid calls
    above agree with it too)."""
    monkeypatch.setattr(hf_module, "tvF", reference.TorchvisionResizeStandIn, raising=False)
    depth = random_depth(15)
    if kwargs.get("outputs_flipped") == "narrow":
        kwargs = {**kwargs, "outputs_flipped": depth[:, :, :-1]}
    hf_kwargs = {**kwargs}
    if "outputs_flipped" in kwargs:
        hf_kwargs["outputs_flipped"] = types.SimpleNamespace(
            predicted_depth=torch.from_numpy(kwargs["outputs_flipped"])
        )
        kwargs["outputs_flipped"] = ZoeDepthOutput(predicted_depth=kwargs["outputs_flipped"])
    with pytest.raises(ValueError):
        HF.post_process_depth_estimation(types.SimpleNamespace(predicted_depth=torch.from_numpy(depth)), **hf_kwargs)
    with pytest.raises(ValueError, match=match):
        OURS.post_process_depth_estimation(ZoeDepthOutput(predicted_depth=depth), **kwargs)


def test_post_processing_agrees_with_transformers_own(monkeypatch):
    monkeypatch.setattr(hf_module, "tvF", reference.TorchvisionResizeStandIn, raising=False)
    depth, flipped = random_depth(16), random_depth(17)
    hf_outputs = [types.SimpleNamespace(predicted_depth=torch.from_numpy(d)) for d in (depth, flipped)]
    expected = HF.post_process_depth_estimation(
        hf_outputs[0], source_sizes=SOURCES, target_sizes=TARGETS, outputs_flipped=hf_outputs[1]
    )
    ours = OURS.post_process_depth_estimation(
        ZoeDepthOutput(predicted_depth=depth),
        source_sizes=SOURCES,
        target_sizes=TARGETS,
        outputs_flipped=ZoeDepthOutput(predicted_depth=flipped),
    )
    for result, theirs in zip(ours, expected, strict=True):
        assert (
            depth_relative_error(result["predicted_depth"], theirs["predicted_depth"].numpy()) <= POST_PROCESS_RELATIVE
        )


def test_post_processing_rejects_malformed_outputs():
    with pytest.raises(ValueError, match=r"\[batch, height, width\]"):
        OURS.post_process_depth_estimation(
            ZoeDepthOutput(predicted_depth=np.ones((1, 1, 8, 8))), do_remove_padding=False
        )
    with pytest.raises(TypeError, match="predicted_depth"):
        OURS.post_process_depth_estimation(np.ones((1, 8, 8)), do_remove_padding=False)
    with pytest.raises(ValueError, match="whole numbers"):
        OURS.post_process_depth_estimation(ZoeDepthOutput(predicted_depth=np.ones((1, 8, 8))), source_sizes=[(8.5, 8)])
