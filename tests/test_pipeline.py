"""The pipeline (`DepthEstimator`) against transformers' processor + model + post-processing, and its batching."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from PIL import Image
from tolerances import FP32_RELATIVE, depth_relative_error, relative_error

from zoedepth_jax import DepthEstimator, from_pretrained, pipeline
from zoedepth_jax.errors import ImageError

# Source sizes (height, width) of the test photos: 4:3 landscape, its portrait, an odd size that shares the
# landscape's processed shape, and a square.
SIZES = [(240, 320), (320, 240), (300, 400), (200, 200)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A re-drawn tiny nyu-kitti checkpoint saved with the released preprocessor_config.json beside it."""
    folder = tmp_path_factory.mktemp("nk_pipeline")
    hf_model = reference.build("nyu-kitti", folder, seed=7)
    reference.hf_processor().save_pretrained(folder)
    return hf_model, folder


@pytest.fixture(scope="module")
def photos():
    return [reference.photo_like(h, w, seed=k) for k, (h, w) in enumerate(SIZES)]


@pytest.mark.parametrize("flip", [True, False], ids=["flip", "no-flip"])
def test_matches_transformers_processor_model_and_post_processing(checkpoint, photos, flip):
    hf_model, folder = checkpoint
    estimator = DepthEstimator(folder, flip=flip)
    results = estimator(photos)
    for photo, result in zip(photos, results, strict=True):
        expected = reference.hf_depth_pipeline(hf_model, photo, flip=flip)
        depth = result["predicted_depth"]
        assert depth.shape == photo.shape[:2] and depth.dtype == np.float32
        assert expected.std() / expected.mean() > 0.05, "degenerate reference depth"
        error = depth_relative_error(depth, expected)
        assert error <= FP32_RELATIVE, f"{photo.shape}: depth differs by {error:.2e}"


def test_flip_changes_the_result(checkpoint, photos):
    """Guards the test above: with and without flip must differ, or the flip path is not exercised."""
    _, folder = checkpoint
    with_flip = DepthEstimator(folder, flip=True)(photos[0])["predicted_depth"]
    without = DepthEstimator(folder, flip=False)(photos[0])["predicted_depth"]
    assert depth_relative_error(with_flip, without) > 1e-3


def test_batches_group_by_processed_shape_and_compile_once_per_bucket(checkpoint, photos):
    _, folder = checkpoint
    one_at_a_time = DepthEstimator(folder, flip=False)
    singles = [one_at_a_time(p)["predicted_depth"] for p in photos]
    shapes = {one_at_a_time.processor.processed_size(*p.shape[:2]) for p in photos}
    assert len(shapes) == 3  # (240, 320) and (300, 400) share 384x512
    assert one_at_a_time.compile_count == len(shapes)

    batched = DepthEstimator(folder, flip=False, batch_size=4)
    mixed = photos * 2  # 8 images: 4 of the shared shape, 2 of each other shape
    results = batched(mixed)
    # Batches: 4 of the shared shape; 2 and 2 of the others (padded to a power of two: 2). Two compiles for
    # batch 2 (portrait, square) and one for batch 4.
    assert batched.compile_count == 3
    for k, result in enumerate(results):
        error = depth_relative_error(result["predicted_depth"], singles[k % len(photos)])
        assert error <= FP32_RELATIVE, f"image {k}: batched differs from alone by {error:.2e}"
    batched(mixed[::-1])  # the same shapes and padded batch sizes again: nothing new to compile
    assert batched.compile_count == 3


def test_preview_image_and_single_image_call(checkpoint, photos):
    _, folder = checkpoint
    result = pipeline(folder, flip=False)(Image.fromarray(photos[3]))
    preview = result["depth"]
    assert isinstance(preview, Image.Image) and preview.mode == "L" and preview.size == (200, 200)
    pixels = np.asarray(preview)
    assert pixels.min() == 0 and pixels.max() == 255
    order = np.argsort(result["predicted_depth"], axis=None)
    assert pixels.flat[order[0]] == 0 and pixels.flat[order[-1]] == 255  # far is bright, as transformers draws it


def test_module_and_variables_and_batch_routing(checkpoint, photos):
    _, folder = checkpoint
    model, variables = from_pretrained(folder)
    estimator = DepthEstimator(model, variables, flip=False, routing="batch", batch_size=4)
    assert estimator.model.routing == "batch"
    results = estimator(photos[:3])
    # routing="batch" runs batches unpadded: one compile per distinct (shape, batch size).
    assert estimator.compile_count == 2
    # the default processor is the released one, the same as the checkpoint's preprocessor_config.json
    reference_estimator = DepthEstimator(folder, flip=False)
    assert reference_estimator.processor.to_dict() == estimator.processor.to_dict()
    assert results[0]["predicted_depth"].shape == (240, 320)


def test_bad_image_is_named_before_any_model_call(checkpoint, photos, tmp_path):
    _, folder = checkpoint
    estimator = DepthEstimator(folder, flip=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageError, match="broken.png"):
        estimator([photos[0], str(broken)])
    assert estimator.compile_count == 0
    with pytest.raises(ValueError, match="variables"):
        DepthEstimator(estimator.model)
    with pytest.raises(ValueError, match="batch_size"):
        DepthEstimator(folder, batch_size=0)


def test_uncertainty_rides_along_without_changing_the_depth(checkpoint, photos):
    """uncertainty=True adds depth_std (and a picture of it) at each photo's size, with the flipped run taking part
    (tests/test_processing.py checks the mixture); the depth is the one the default estimator gives."""
    _, folder = checkpoint
    plain = DepthEstimator(folder, flip=True)(photos[:2])
    both = DepthEstimator(folder, flip=True, uncertainty=True)(photos[:2])
    one_run = DepthEstimator(folder, flip=False, uncertainty=True)(photos[:2])
    for photo, without, result, unflipped in zip(photos[:2], plain, both, one_run, strict=True):
        np.testing.assert_array_equal(result["predicted_depth"], without["predicted_depth"])
        std = result["depth_std"]
        assert std.shape == photo.shape[:2] and std.dtype == np.float32 and (std >= 0).all()
        assert std.std() / std.mean() > 0.05, "degenerate depth_std"
        assert result["depth_std_image"].size == photo.shape[1::-1] and "depth_std" not in without
        assert relative_error(std, unflipped["depth_std"]) > 1e-3  # the flipped run took part
