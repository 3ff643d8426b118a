"""The `zoedepth-jax` command line and the depth-image writers, on a tiny random checkpoint (no torch, no download)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh
from PIL import Image
from tolerances import GEOMETRY_FP32_RELATIVE, relative_error

from zoedepth_jax import ZoeDepthForDepthEstimation, ZoeDepthImageProcessor, save_pretrained
from zoedepth_jax.cli import main
from zoedepth_jax.config import tiny_config
from zoedepth_jax.geometry.points import depth_edges_mask, depth_to_points
from zoedepth_jax.inference import depth_images
from zoedepth_jax.inference.folders import depth_summary
from zoedepth_jax.inference.images import load_image

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "example.jpg"
EXAMPLE_SIZE = (400, 600)  # height, width


def _png_bit_depth(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return data[24]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    config = tiny_config()
    model = ZoeDepthForDepthEstimation(config)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    folder = save_pretrained(tmp_path_factory.mktemp("tiny_src"), model, {"params": variables["params"]})
    processor = ZoeDepthImageProcessor(size=(256, 320))  # not the default: convert must carry it over
    (folder / "preprocessor_config.json").write_text(json.dumps(processor.to_dict()))
    return folder


@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_flax") / "converted"
    assert main(["convert", str(tiny_checkpoint), str(out)]) == 0
    return out


def test_convert_writes_a_loadable_folder(converted, tiny_checkpoint, capsys):
    assert (converted / "config.json").is_file()
    assert (converted / "flax_model.safetensors").is_file()
    carried = ZoeDepthImageProcessor.from_json_file(converted / "preprocessor_config.json")
    assert carried.size == {"height": 256, "width": 320}
    # A second conversion into the same folder is refused without --overwrite, accepted with it.
    assert main(["convert", str(tiny_checkpoint), str(converted)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", str(tiny_checkpoint), str(converted), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "bytes written" in out and "seconds" in out


def _outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_predict_writes_png16_color_and_npy(converted, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(EXAMPLE), "--model", str(converted), "--out", str(out), "--npy"]) == 0
    printed = capsys.readouterr()
    assert "example.jpg: 400x600 " in printed.out and "median" in printed.out  # height x width, as everywhere
    assert "1 done, 0 skipped, 0 failed" in printed.err
    assert _outputs(out) == ["example_depth.npy", "example_depth.png", "example_depth_color.png"]  # no temp files

    depth = np.load(out / "example_depth.npy")
    assert depth.dtype == np.float32 and depth.shape == EXAMPLE_SIZE
    assert np.isfinite(depth).all() and (depth > 0).all()

    png = out / "example_depth.png"
    assert _png_bit_depth(png) == 16
    with Image.open(png) as image:
        assert image.mode in ("I;16", "I") and image.size == EXAMPLE_SIZE[::-1]
        mm = np.asarray(image)
    np.testing.assert_array_equal(mm, np.clip(np.rint(depth.astype(np.float64) * 1000), 0, 65535))
    with Image.open(out / "example_depth_color.png") as image:
        assert image.mode == "RGB" and image.size == EXAMPLE_SIZE[::-1]


def _mixed_folder(root: Path) -> dict[str, tuple[int, int]]:
    """A folder of awkward images, all 120x160 (one processed shape, one compile); returns name -> size."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    (root / "nested").mkdir(parents=True)
    Image.fromarray(rgb[..., 0]).save(root / "grey.png")  # mode L
    Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (120, 160), dtype=np.uint8)])).save(root / "rgba.png")
    deep = (rgb[..., 1].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(root / "deep16.png")  # a 16-bit greyscale PNG
    Image.fromarray(rgb).save(root / "nested" / "photo.jpg")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "notes.txt").write_text("not an image, and not picked up from a folder")
    return {"grey": (120, 160), "rgba": (120, 160), "deep16": (120, 160), "nested/photo": (120, 160)}


def test_predict_folder_reports_bad_files_and_resumes(converted, tmp_path, capsys):
    images = tmp_path / "images"
    expected = _mixed_folder(images)
    with Image.open(images / "deep16.png") as image:
        assert image.mode in ("I;16", "I")  # the test really feeds a 16-bit image
    out = tmp_path / "out"
    command = ["predict", str(images), "--model", str(converted), "--out", str(out), "--batch-size", "2"]

    assert main(command) == 1
    err = capsys.readouterr().err
    assert "corrupt.png" in err and "4 done, 0 skipped, 1 failed" in err and "notes.txt" not in err
    for name, size in expected.items():
        with Image.open(out / f"{name}_depth.png") as image:
            assert image.size == size[::-1] and _png_bit_depth(out / f"{name}_depth.png") == 16
        with Image.open(out / f"{name}_depth_color.png") as image:
            assert image.size == size[::-1] and image.mode == "RGB"
    assert not list(out.rglob("corrupt*")) and not list(out.rglob("*.tmp"))

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert main(command) == 1  # the corrupt file still fails; the rest is skipped, not redone
    err = capsys.readouterr().err
    assert "4 image(s) already done" in err and "0 done, 4 skipped, 1 failed" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps

    assert main([*command, "--overwrite", "--no-color"]) == 1
    assert "4 done, 0 skipped, 1 failed" in capsys.readouterr().err


def test_predict_refuses_inputs_that_would_share_outputs(converted, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (64, 48), "white").save(tmp_path / folder / "same.png")
    paths = [str(tmp_path / "a" / "same.png"), str(tmp_path / "b" / "same.png")]
    assert main(["predict", *paths, "--model", str(converted), "--out", str(tmp_path / "out")]) == 2
    assert "overwrite each other" in capsys.readouterr().err


def test_predict_missing_input_is_reported(converted, tmp_path, capsys):
    status = main(["predict", str(tmp_path / "nope.jpg"), "--model", str(converted), "--out", str(tmp_path / "o")])
    assert status == 1
    assert "nope.jpg: no such file or folder" in capsys.readouterr().err


def test_predict_bad_model_is_an_error_not_a_traceback(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 48)).save(image)
    status = main(["predict", str(image), "--model", "/nonexistent/dir/that/is/not/a/hub/id!", "--out", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert "error: " in err and "Traceback" not in err


def testdepth_summary():
    assert depth_summary(np.array([1.0, 2.0, 4.0, np.nan], np.float32)) == (
        "depth min 1.000 m  median 2.000 m  max 4.000 m"
    )
    assert depth_summary(np.full((2, 2), np.nan, np.float32)) == "depth: no finite values"


def test_help_explains_outputs_and_commands(capsys):
    for argv, words in ((["--help"], ["predict", "convert"]), (["predict", "--help"], ["MILLIMETRES", "--overwrite"])):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        printed = capsys.readouterr().out
        assert all(word in printed for word in words)


def test_depth_to_png16_rounds_to_millimetres_and_clips():
    depth = np.array([[1.2345, 0.0, -1.0], [70.0, 65.535, np.nan]], dtype=np.float32)
    image = depth_images.depth_to_png16(depth)
    assert image.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(image), [[1235, 0, 0], [65535, 65535, 0]])


def test_colorize_draws_near_bright():
    depth = np.linspace(1, 5, 12, dtype=np.float32).reshape(3, 4)
    color = np.asarray(depth_images.colorize(depth))
    assert color.shape == (3, 4, 3) and color.dtype == np.uint8
    assert color[0, 0].sum() > color[-1, -1].sum()  # nearest is brightest


def test_predict_writes_uncertainty_and_3d_files(converted, tmp_path, capsys):
    out = tmp_path / "out"
    camera = (500.0, 480.0, 300.0, 200.0)
    command = ["predict", str(EXAMPLE), "--model", str(converted), "--out", str(out), "--npy", "--uncertainty"]
    command += ["--ply", "--glb", "--intrinsics", ",".join(map(str, camera))]
    assert main(command) == 0, capsys.readouterr().err
    assert _outputs(out) == [
        "example.glb",
        "example.ply",
        "example_depth.npy",
        "example_depth.png",
        "example_depth_color.png",
        "example_depth_std.npy",
        "example_depth_std.png",
    ]
    depth, std = np.load(out / "example_depth.npy"), np.load(out / "example_depth_std.npy")
    assert std.shape == depth.shape == EXAMPLE_SIZE and (std >= 0).all() and std.std() > 0
    with Image.open(out / "example_depth_std.png") as image:
        assert image.mode == "RGB" and image.size == EXAMPLE_SIZE[::-1]

    # The point cloud: the depth map's points with the photo's colours, in the camera frame, edges dropped.
    keep = ~np.asarray(depth_edges_mask(depth))
    cloud = trimesh.load(out / "example.ply")
    expected = np.asarray(depth_to_points(depth, camera))[keep]
    assert len(cloud.vertices) == int(keep.sum()) > 0
    assert relative_error(cloud.vertices, expected) <= GEOMETRY_FP32_RELATIVE
    np.testing.assert_array_equal(cloud.colors[:, :3], load_image(EXAMPLE)[keep])
    # The mesh, in glTF's frame: the scene lies in front of the camera, down -z.
    mesh = trimesh.load(out / "example.glb", force="mesh")
    assert len(mesh.faces) > 0 and (mesh.vertices[:, 2] < 0).all()

    (out / "example.glb").unlink()  # a missing output: the image is redone, nothing else is
    assert main(command) == 0
    assert "1 done, 0 skipped" in capsys.readouterr().err and (out / "example.glb").is_file()
    assert main(command) == 0
    assert "0 done, 1 skipped" in capsys.readouterr().err


def test_predict_3d_options_are_checked(converted, tmp_path, capsys):
    base = ["predict", str(EXAMPLE), "--model", str(converted), "--out", str(tmp_path), "--ply"]
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--intrinsics", "500,480,300"])
    assert exit_info.value.code == 2 and "FX,FY,CX,CY" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--intrinsics", "500,480,300,200", "--fov", "60"])  # one camera or the other
    assert "not allowed with" in capsys.readouterr().err
