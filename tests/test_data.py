"""Training data: pairs from a folder or a list file, the augmentations, masks, determinism, resumable iterator
state, sharding by process, and the errors bad data gives before any compute."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from grain.python import ShardOptions
from PIL import Image

from zoedepth_jax import ZoeDepthImageProcessor
from zoedepth_jax.errors import ArgumentError, ImageError
from zoedepth_jax.evaluation.folders import DATASETS
from zoedepth_jax.evaluation.pairs import find_pairs, read_pair_list
from zoedepth_jax.training.data import Augmentation, DepthDataset, augment, make_loader, prepare

NYU = DATASETS["nyu"]
PROCESSOR = ZoeDepthImageProcessor(size=(64, 96))


def _png16(path, meters, scale=1000.0):
    Image.fromarray(np.rint(np.asarray(meters) * scale).astype(np.uint16)).save(path)


def write_scenes(folder, count, height=48, width=64):
    """Images with a constant depth of k + 1 meters each (so a batch says which samples it holds)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        Image.fromarray(reference.photo_like(height, width, seed=k)).save(folder / f"scene {k}.png")
        _png16(folder / f"scene {k}_depth.png", np.full((height, width), k + 1.0))
    return folder


def test_pairs_from_a_folder_and_from_a_list_file(tmp_path):
    folder = write_scenes(tmp_path / "data", 3)
    Image.fromarray(reference.photo_like(48, 64)).save(folder / "lonely.png")
    pairs, unpaired = find_pairs(folder)
    assert [image.name for image, _ in pairs] == ["scene 0.png", "scene 1.png", "scene 2.png"]
    assert unpaired == [folder / "lonely.png"]
    listing = tmp_path / "train.txt"
    # Relative to the list's folder, quoted where a path has spaces, extra fields (a focal length) ignored.
    listing.write_text(
        "# image depth focal\n"
        + "".join(f"'data/scene {k}.png' \"data/scene {k}_depth.png\" 518.8\n" for k in range(3))
        + "\n"
    )
    assert read_pair_list(listing) == pairs
    dataset = DepthDataset.from_source(listing, NYU)
    assert dataset.pairs == tuple(pairs) and len(dataset) == 3
    sample = dataset[2]
    assert sample["image"].shape == (48, 64, 3) and np.all(sample["depth"] == 3.0)
    (tmp_path / "bad.txt").write_text("a.png b.png\nlonely.png\n")
    with pytest.raises(ArgumentError, match="line 2"):
        read_pair_list(tmp_path / "bad.txt")


def _batches(loader, count):
    iterator = iter(loader)
    return [next(iterator) for _ in range(count)]


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_stream_is_deterministic_and_resumes_from_its_state(tmp_path):
    dataset = DepthDataset.from_source(write_scenes(tmp_path, 5), NYU)
    augmentation = Augmentation(crop=(40, 56))
    assert dataset.check(PROCESSOR, augmentation) == (40, 56)

    def loader(seed):
        return make_loader(dataset, PROCESSOR, batch_size=2, seed=seed, augmentation=augmentation)

    first = _batches(loader(0), 4)  # 8 samples: the stream runs on into the second epoch
    assert first[0]["pixel_values"].shape == (2, 64, 96, 3) and first[0]["depth"].shape == (2, 40, 56)
    assert all(_same(a, b) for a, b in zip(first, _batches(loader(0), 4), strict=True))
    assert not all(_same(a, b) for a, b in zip(first, _batches(loader(1), 4), strict=True))
    # Each epoch visits every sample once: the first five samples are the five scenes.
    depths = np.concatenate([batch["depth"][:, 20, 28] for batch in first])
    assert sorted(depths[:5]) == [1, 2, 3, 4, 5]

    iterator = iter(loader(0))
    next(iterator)
    state = iterator.get_state()
    resumed = iter(loader(0))
    resumed.set_state(state)
    assert all(_same(next(resumed), batch) for batch in first[1:])


def test_processes_read_disjoint_shares(tmp_path):
    dataset = DepthDataset.from_source(write_scenes(tmp_path, 5), NYU)
    seen = []
    for index in range(2):
        loader = make_loader(
            dataset,
            PROCESSOR,
            batch_size=1,
            seed=3,
            augmentation=Augmentation.none(),
            num_epochs=1,
            shard_options=ShardOptions(index, 2, drop_remainder=True),
        )
        seen.append([float(batch["depth"][0, 0, 0]) for batch in loader])
    assert len(seen[0]) == len(seen[1]) == 2  # five samples, two processes: the fifth is dropped
    assert not set(seen[0]) & set(seen[1])


def _position_image(height, width):
    """uint8 RGB whose red channel is the column and green the row, with depth = 1 + column / 10 meters."""
    rows, columns = np.mgrid[:height, :width]
    image = np.stack([columns, rows, np.full_like(rows, 128)], axis=-1).astype(np.uint8)
    return image, (1 + columns / 10).astype(np.float32)


def test_augmentations_keep_image_and_depth_aligned():
    image, depth = _position_image(40, 60)

    def seeded(augmentation, seed=0):
        return augment(image, depth, augmentation, np.random.default_rng(seed))

    assert _same(seeded(Augmentation.none()), {"image": image, "depth": depth})
    # Crop: the same window of both.
    cropped = seeded(Augmentation.none(crop=(20, 30)), seed=4)
    assert cropped["image"].shape == (20, 30, 3) and cropped["depth"].shape == (20, 30)
    np.testing.assert_allclose(cropped["depth"], 1 + cropped["image"][..., 0] / 10, rtol=1e-6)
    # Flip: half of the seeds flip, and both arrays together.
    flips = [seeded(Augmentation(rotate_degrees=0, color=False), seed) for seed in range(8)]
    flipped = [f for f in flips if f["depth"][0, 0] > f["depth"][0, -1]]
    assert 0 < len(flipped) < 8
    assert all(
        np.array_equal(f["depth"], depth[:, ::-1]) and np.array_equal(f["image"], image[:, ::-1]) for f in flipped
    )
    # Colour: only the image changes, within gamma, brightness and channel factors.
    colors = [seeded(Augmentation(flip=False, rotate_degrees=0), seed) for seed in range(8)]
    changed = [c for c in colors if c["image"].dtype == np.float32]
    assert 0 < len(changed) < 8 and all(np.array_equal(c["depth"], depth) for c in colors)
    assert all(0 <= c["image"].min() and c["image"].max() <= 255 for c in changed)
    # Rotation: by a small angle (up to 10 degrees here); the corners have no depth and become masked.
    seed = max(range(10), key=lambda s: abs(np.random.default_rng(s).random() - 0.5))  # the largest angle
    rotated = seeded(Augmentation(flip=False, rotate_degrees=10, color=False), seed=seed)
    assert rotated["image"].dtype == np.uint8 and not np.array_equal(rotated["depth"], depth)
    sample = prepare(rotated["image"], rotated["depth"], PROCESSOR, NYU, domain=1)
    assert not sample["mask"][0, 0] and not sample["mask"][-1, -1] and sample["mask"][20, 30]
    assert sample["domain"] == 1 and sample["pixel_values"].shape == (64, 96, 3)


def test_missing_depth_is_masked_never_zero_meters():
    depth = np.array([[0.0, 0.5, np.nan, 10.0, 12.0, 0.001]], np.float32)  # NYU's range is (0.001, 10) exclusive
    sample = prepare(np.zeros((1, 6, 3), np.uint8), depth, ZoeDepthImageProcessor(do_pad=False), NYU, domain=None)
    assert sample["mask"].tolist() == [[False, True, False, False, False, False]]
    assert np.all(np.isfinite(sample["depth"])) and "domain" not in sample


def test_bad_data_is_refused_before_any_compute(tmp_path):
    folder = write_scenes(tmp_path / "ok", 2)

    def check(path=folder, augmentation=None):
        DepthDataset.from_source(path, NYU).check(PROCESSOR, augmentation or Augmentation())

    check()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArgumentError, match="no \\(image, depth\\) pairs"):
        check(tmp_path / "empty")
    with pytest.raises(ArgumentError, match="no such folder"):
        check(tmp_path / "missing")
    # A ground truth of another size than its image.
    _png16(folder / "scene 1_depth.png", np.ones((48, 60)))
    with pytest.raises(ImageError, match="scene 1_depth.png: the ground truth is 48x60.*48x64"):
        check()
    # An 8-bit ground truth.
    Image.fromarray(np.ones((48, 64), np.uint8)).save(folder / "scene 1_depth.png")
    with pytest.raises(ImageError, match="16-bit"):
        check()
    _png16(folder / "scene 1_depth.png", np.ones((48, 64)))
    # An unreadable image.
    (folder / "scene 0.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="scene 0.png: cannot read the image"):
        check()
    # Images of several sizes need a crop no larger than the smallest.
    write_scenes(folder, 1)
    write_scenes(folder / "big", 1, height=56, width=72)
    with pytest.raises(ArgumentError, match="2 sizes"):
        check()
    check(augmentation=Augmentation(crop=(40, 60)))
    with pytest.raises(ImageError, match="smaller than the crop 50x60"):
        check(augmentation=Augmentation(crop=(50, 60)))
    # A list file that names a file that is not there.
    (tmp_path / "list.txt").write_text("ok/gone.png ok/gone_depth.png\n")
    with pytest.raises(ImageError, match="gone.png: no such file"):
        check(tmp_path / "list.txt")
