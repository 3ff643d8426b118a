"""`zoedepth-jax eval` on a generated folder: ground truths made from the model's own predictions, so that the
metrics are known exactly (an exact copy, and 1.5x the prediction at another size)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import reference
from PIL import Image

from zoedepth_jax import ZoeDepthImageProcessor
from zoedepth_jax.cli import main
from zoedepth_jax.errors import ImageError
from zoedepth_jax.evaluation.folders import find_pairs, read_depth_png
from zoedepth_jax.evaluation.metrics import METRIC_NAMES
from zoedepth_jax.inference.estimator import DepthEstimator
from zoedepth_jax.ops import resize_bilinear


def _png16(path, meters, scale=1000.0):
    Image.fromarray(np.rint(meters * scale).astype(np.uint16)).save(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nyu_eval")
    reference.build("nyu", folder, seed=8)
    processor = ZoeDepthImageProcessor(size=(64, 96))  # small inputs for the tiny model
    (folder / "preprocessor_config.json").write_text(json.dumps(processor.to_dict()))
    return folder


def test_eval_command_on_known_ground_truth(checkpoint, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    paths = [data / "exact.png", data / "sub" / "scaled.jpg"]
    Image.fromarray(reference.photo_like(96, 128, seed=1)).save(paths[0])
    Image.fromarray(reference.photo_like(120, 160, seed=2)).save(paths[1], quality=95)
    exact, scaled = (r["predicted_depth"] for r in DepthEstimator(checkpoint, flip=True).predict(paths))
    # "exact": the prediction itself, with a band of missing depth (0). "scaled": 1.5x the prediction resized
    # to a smaller ground truth, as the evaluation resizes it (bilinear, corners aligned).
    exact_truth = exact.copy()
    exact_truth[:10] = 0
    _png16(data / "exact_depth.png", exact_truth)
    _png16(data / "sub" / "scaled_depth.png", 1.5 * resize_bilinear(scaled, (60, 80), True, axes=(0, 1)))
    Image.fromarray(reference.photo_like(96, 128, seed=3)).save(data / "no_truth.png")

    status = main(["eval", str(data), "--model", str(checkpoint), "--crop", "none", "--per-image", "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "no_truth.png: no no_truth_depth.png" in err
    rows = _table(out)
    assert set(rows) == {str(paths[0]), str(paths[1]), "mean of 2 images"}
    # Exact copy up to the millimetre rounding of the PNG: every pixel within 1.25, errors below 0.5 mm / depth.
    copy = rows[str(paths[0])]
    assert copy["delta1"] == 1.0 and copy["abs_rel"] < 1e-3 and copy["rmse"] < 1e-3
    # 1.5x: the ratio is 1.5 everywhere: delta1 (< 1.25) = 0, delta2 (< 1.5625) = 1; abs_rel = 0.5 / 1.5.
    ratio = rows[str(paths[1])]
    assert ratio["delta1"] == 0.0 and ratio["delta2"] == 1.0
    assert ratio["abs_rel"] == pytest.approx(1 / 3, abs=1e-3)
    assert ratio["rmse_log"] == pytest.approx(np.log(1.5), abs=1e-3)
    assert ratio["silog"] == pytest.approx(0.0, abs=0.1)  # a constant log ratio: scale-invariant error ~0
    mean = rows["mean of 2 images"]
    assert mean["abs_rel"] == pytest.approx((copy["abs_rel"] + ratio["abs_rel"]) / 2, abs=1e-4)


def _table(out: str) -> dict[str, dict[str, float]]:
    lines = out.strip().splitlines()
    header = lines.index(next(line for line in lines if line.split() == list(METRIC_NAMES)))
    rows = {}
    for line in lines[header + 1 :]:
        label, *values = line.rsplit(None, len(METRIC_NAMES))
        rows[label] = dict(zip(METRIC_NAMES, map(float, values), strict=True))
    return rows


def test_folder_pairs_and_ground_truth_files(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b.jpg")
    _png16(tmp_path / "a_depth.png", np.full((4, 4), 2.5))
    pairs, unpaired = find_pairs(tmp_path)
    assert pairs == [(tmp_path / "a.png", tmp_path / "a_depth.png")] and unpaired == [tmp_path / "b.jpg"]
    assert np.all(read_depth_png(tmp_path / "a_depth.png", 1000.0) == 2.5)
    assert np.all(read_depth_png(tmp_path / "a_depth.png", 256.0) == np.float32(2500 / 256))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b_depth.png")  # 8-bit: not a depth map
    with pytest.raises(ImageError, match="16-bit"):
        read_depth_png(tmp_path / "b_depth.png", 1000.0)


@pytest.mark.parametrize("keep", [True, False])
def test_eval_says_which_resize_it_used(checkpoint, tmp_path, capsys, keep):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(reference.photo_like(96, 320, seed=4)).save(data / "wide.png")
    estimator = DepthEstimator(checkpoint, flip=False, keep_aspect_ratio=keep)
    other = DepthEstimator(checkpoint, flip=False, keep_aspect_ratio=not keep)
    assert estimator.processor.processed_size(96, 320) != other.processor.processed_size(96, 320)
    assert keep or estimator.processor.processed_size(96, 320) == (64, 96)  # fixed: the processor's size
    _png16(data / "wide_depth.png", estimator(str(data / "wide.png"))["predicted_depth"])
    flag = "--keep-aspect-ratio" if keep else "--no-keep-aspect-ratio"
    status = main(["eval", str(data), "--model", str(checkpoint), "--crop", "none", "--no-flip", flag, "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert ("resize keeping the aspect ratio, near 64x96" if keep else "resize fixed 64x96") in out
    assert _table(out)["mean of 1 images"]["delta1"] == 1.0  # the same resize as the estimator above
