"""The `zoedepth-jax` command line and the image helpers, on a tiny random checkpoint (no torch, no download)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from zoedepth_jax import ZoeDepthConfig, ZoeDepthForDepthEstimation, imaging
from zoedepth_jax.cli import _depth_summary, main
from zoedepth_jax.config import BeitConfig
from zoedepth_jax.errors import ImageError
from zoedepth_jax.weights import save_pretrained

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "example.png"


def _png_bit_depth(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return data[24]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    config = ZoeDepthConfig(
        backbone_config=BeitConfig(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=64,
            out_indices=(1, 2, 3, 4),
        ),
        neck_hidden_sizes=(16, 32, 64, 64),
        fusion_hidden_size=32,
        bottleneck_features=32,
        num_relative_features=8,
        bin_embedding_dim=16,
    )
    model = ZoeDepthForDepthEstimation(config)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    return save_pretrained(tmp_path_factory.mktemp("tiny_src"), model, {"params": variables["params"]})


@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_flax") / "converted"
    assert main(["convert", str(tiny_checkpoint), str(out)]) == 0
    return out


def test_convert_writes_a_loadable_folder(converted, tiny_checkpoint, capsys):
    assert (converted / "config.json").is_file()
    assert (converted / "flax_model.safetensors").is_file()
    # A second conversion into the same folder is refused without --overwrite, accepted with it.
    assert main(["convert", str(tiny_checkpoint), str(converted)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", str(tiny_checkpoint), str(converted), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "bytes written" in out and "seconds" in out


def test_predict_writes_three_files(converted, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(EXAMPLE), "--model", str(converted), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "example.png" in printed and "640x480" in printed and "depth" in printed

    png = out / "example_depth.png"
    npy = out / "example_depth.npy"
    color = out / "example_depth_color.png"
    assert sorted(p.name for p in out.iterdir()) == sorted([png.name, npy.name, color.name])  # no temp files left

    depth = np.load(npy)
    assert depth.dtype == np.float32 and depth.shape == (480, 640)

    assert _png_bit_depth(png) == 16
    with Image.open(png) as image:
        assert image.mode in ("I;16", "I")
        assert image.size == (640, 480)
        mm = np.asarray(image)
    expected = np.nan_to_num(np.rint(depth.astype(np.float64) * 1000), nan=0.0, posinf=65535.0, neginf=0.0)
    np.testing.assert_array_equal(mm, np.clip(expected, 0, 65535))  # millimetres; NaN is stored as 0

    with Image.open(color) as image:
        assert image.mode == "RGB" and image.size == (640, 480)


def test_predict_depth_is_finite(converted, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(EXAMPLE), "--model", str(converted), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "not finite" not in captured.err
    assert "min" in captured.out and "median" in captured.out and "max" in captured.out
    depth = np.load(out / "example_depth.npy")
    assert np.isfinite(depth).all() and (depth > 0).all()


def test_predict_skips_unreadable_image(converted, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg \x00\x01\x02" * 10)
    out = tmp_path / "out"
    status = main(["predict", str(bad), str(EXAMPLE), "--model", str(converted), "--out", str(out)])
    assert status == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err
    assert (out / "example_depth.png").is_file()
    assert (out / "example_depth.npy").is_file()
    assert (out / "example_depth_color.png").is_file()
    assert not (out / "broken_depth.png").exists()


def test_predict_bad_model_is_an_error_not_a_traceback(tmp_path, capsys):
    status = main(["predict", "x.png", "--model", "/nonexistent/dir/that/is/not/a/hub/id!", "--out", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_depth_summary():
    assert _depth_summary(np.array([1.0, 2.0, 4.0, np.nan], np.float32)) == (
        "depth min 1.000 m  median 2.000 m  max 4.000 m"
    )
    assert _depth_summary(np.full((2, 2), np.nan, np.float32)) == "depth: no finite values"


def test_help_mentions_millimetres(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0
    assert "MILLIMETRES" in capsys.readouterr().out


def test_depth_to_png16_rounds_to_millimetres_and_clips():
    depth = np.array([[1.2345, 0.0, -1.0], [70.0, 65.535, np.nan]], dtype=np.float32)
    image = imaging.depth_to_png16(depth)
    assert image.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(image), [[1235, 0, 0], [65535, 65535, 0]])


def test_simple_preprocess_shapes():
    pixels, size = imaging.simple_preprocess(np.zeros((480, 640, 3), np.uint8))
    assert pixels.shape == (1, 384, 512, 3) and pixels.dtype == np.float32 and size == (480, 640)
    np.testing.assert_allclose(pixels, -1.0)  # black -> (0 - 0.5) / 0.5

    # scale 512/1000 is closer to 1 than 384/100: 100x1000 -> 51.2x512 -> rounded to multiples of 32
    pixels, size = imaging.simple_preprocess(np.full((100, 1000, 3), 255, np.uint8))
    assert pixels.shape == (1, 64, 512, 3) and size == (100, 1000)
    np.testing.assert_allclose(pixels, 1.0)


def test_resize_depth_and_colorize():
    depth = np.linspace(1, 5, 12, dtype=np.float32).reshape(3, 4)
    resized = imaging.resize_depth(depth, (6, 8))
    assert resized.shape == (6, 8) and resized.dtype == np.float32
    assert resized.min() >= 1 - 1e-6 and resized.max() <= 5 + 1e-6

    color = np.asarray(imaging.colorize(depth))
    assert color.shape == (3, 4, 3) and color.dtype == np.uint8
    assert color[0, 0].sum() > color[-1, -1].sum()  # nearest is brightest


def test_load_rgb_converts_modes_and_reports_bad_files(tmp_path):
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (5, 4), (10, 20, 30, 0)).save(rgba)
    array = imaging.load_rgb(rgba)
    assert array.shape == (4, 5, 3) and array.dtype == np.uint8
    assert tuple(array[0, 0]) == (10, 20, 30)

    grey = tmp_path / "grey.png"
    Image.new("L", (3, 2), 7).save(grey)
    assert tuple(imaging.load_rgb(grey)[1, 2]) == (7, 7, 7)

    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(rgba.read_bytes()[:40])
    for path in (truncated, tmp_path / "missing.png"):
        with pytest.raises(ImageError, match=path.name):
            imaging.load_rgb(path)
