"""Training data with Grain: (image, ground-truth depth) pairs, the original ZoeDepth augmentations, the image
processor, batches; deterministic for a seed, sharded by JAX process, and resumable from the iterator's state.

    dataset = DepthDataset.from_source("my_photos/", DATASETS["nyu"])   # or a list file of "IMAGE DEPTH" lines
    dataset.check(processor, Augmentation(crop=(480, 640)))           # every file, before any compute
    loader = make_loader(dataset, processor, batch_size=16, seed=0, augmentation=Augmentation(crop=(480, 640)))
    iterator = iter(loader)
    batch = next(iterator)  # {"pixel_values" [B,H,W,3], "depth" [B,h,w] meters, "mask" [B,h,w] bool(, "domain")}
    state = iterator.get_state()  # saved with the train state (`training.checkpoint`); set_state resumes

Pairs are found as `zoedepth-jax eval` finds them (`evaluation.pairs`: a folder of `<name>` + `<name>_depth.png`,
or a list file) and decoded with the same depth scale presets (`evaluation.folders.DATASETS`). A sample's depth
is valid where it lies strictly inside the dataset's depth range (missing depth, stored as 0, never is), and only
valid pixels count in the loss. The depth target keeps the (augmented) image's size; the loss resizes the
prediction to it, as the original trainer does.

Augmentations, each switchable (`Augmentation`), in the original's order (isl-org ZoeDepth
`zoedepth/data/data_mono.py`, `DataLoadPreprocess`): a random rotation by up to `rotate_degrees` (the image
bilinear, the depth nearest, the corners filled with black and no depth), a random crop to `crop`, a
horizontal flip with probability 1/2, and with probability 1/2 a colour change: gamma in [0.9, 1.1], brightness
in `brightness` ([0.75, 1.25] for NYU, [0.9, 1.1] otherwise), a factor in [0.9, 1.1] per channel, clipped to
the 0..1 range. Then the processor's padding, resize and normalisation (`ZoeDepthImageProcessor`). Not carried
over: the original's random translation and KITTI right-camera swap (both off in its recipes), and its KITTI
bottom crop and NYU border fill, which are preprocessing of those datasets' files.

Randomness: Grain derives each sample's generator from the seed and the sample's position in the stream, so a
stream is the same for any number of workers, and a restored iterator continues with the batches the
uninterrupted one would have given. Batches hold the same shape: either every image has the same size, or
`crop` is set and no image is smaller (`DepthDataset.check` says which image breaks the rule).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import grain.python as grain
import numpy as np
from PIL import Image, UnidentifiedImageError

from zoedepth_jax.errors import ArgumentError, ImageError
from zoedepth_jax.evaluation.folders import EvalSettings
from zoedepth_jax.evaluation.pairs import check_depth_mode, find_pairs, read_depth_png, read_pair_list
from zoedepth_jax.inference.images import load_image
from zoedepth_jax.inference.processor import ZoeDepthImageProcessor

EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap height and width


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Which augmentations run (the original's defaults: flip, rotation by up to 1 degree, colour; no crop)."""

    flip: bool = True
    rotate_degrees: float = 1.0  # 0: no rotation
    crop: tuple[int, int] | None = None  # (height, width) of a random crop; None: the whole image
    color: bool = True
    brightness: tuple[float, float] = (0.75, 1.25)  # NYU's range; the original uses (0.9, 1.1) for others

    def __post_init__(self):
        if self.rotate_degrees < 0:
            raise ArgumentError(f"rotate_degrees must be at least 0, got {self.rotate_degrees}")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 1):
            raise ArgumentError(f"crop must be (height, width) of at least one pixel, got {self.crop}")
        if not 0 < self.brightness[0] <= self.brightness[1]:
            raise ArgumentError(f"brightness must be a range (low, high) with 0 < low <= high, got {self.brightness}")

    @classmethod
    def none(cls, crop: tuple[int, int] | None = None) -> Augmentation:
        """No augmentation (validation, or a check of the data), optionally a random crop."""
        return cls(flip=False, rotate_degrees=0.0, crop=crop, color=False)

    @classmethod
    def for_dataset(cls, name: str, **overrides) -> Augmentation:
        """The original's settings for a dataset kind: NYU's brightness range for "nyu", (0.9, 1.1) otherwise."""
        brightness = (0.75, 1.25) if name == "nyu" else (0.9, 1.1)
        return cls(**{"brightness": brightness, **overrides})


@dataclasses.dataclass(frozen=True)
class DepthDataset:
    """(image, ground truth) pairs and how to read them: the depth scale and valid range of `settings`, and the
    domain label (`domains.DOMAIN_LABELS`) a two-domain model's router trains on, if any. A Grain data source:
    item k is the decoded pair k, `{"image": RGB [H, W, 3], "depth": float32 meters [H, W]}`."""

    pairs: tuple[tuple[Path, Path], ...]
    settings: EvalSettings
    domain: int | None = None
    unpaired: tuple[Path, ...] = ()  # images of a folder without ground truth (left out)

    @classmethod
    def from_source(cls, source: str | os.PathLike, settings: EvalSettings, domain: int | None = None) -> DepthDataset:
        """From a folder (searched as `zoedepth-jax eval` does) or a list file; no pairs is an ArgumentError."""
        source = Path(source)
        if source.is_dir():
            pairs, unpaired = find_pairs(source)
        elif source.is_file():
            pairs, unpaired = read_pair_list(source), []
        else:
            raise ArgumentError(f"{source}: no such folder or list file of (image, depth) pairs")
        if not pairs:
            raise ArgumentError(f"{source}: no (image, depth) pairs (an image <name>.jpg needs <name>_depth.png)")
        return cls(tuple(pairs), settings, domain, tuple(unpaired))

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        # Grain stores this in the iterator's state and refuses to restore a state into another dataset.
        listing = "\n".join(f"{image}\t{depth}" for image, depth in self.pairs).encode()
        digest = hashlib.sha256(listing).hexdigest()[:16]
        return f"DepthDataset({len(self.pairs)} pairs, sha256 {digest}, {self.settings}, domain={self.domain})"

    def __getitem__(self, index: int) -> dict:
        image_path, depth_path = self.pairs[index]
        image = load_image(image_path)
        depth = read_depth_png(depth_path, self.settings.depth_scale)
        if depth.shape != image.shape[:2]:
            raise ImageError(_size_mismatch(image_path, image.shape[:2], depth_path, depth.shape))
        return {"image": image, "depth": depth}

    def check_files(self) -> dict[Path, tuple[int, int]]:
        """Reads every file's header: each image and ground truth must open, and the ground truth be a 16-bit
        PNG of its image's size (else an ImageError naming the file). Returns each image's (height, width)."""
        if not self.pairs:
            raise ArgumentError("no (image, depth) pairs")
        sizes = {}
        for image_path, depth_path in self.pairs:
            image_size = _header_size(image_path, "image", exif=True)
            depth_size = _header_size(depth_path, "ground truth", exif=False)
            if image_size != depth_size:
                raise ImageError(_size_mismatch(image_path, image_size, depth_path, depth_size))
            sizes[image_path] = image_size
        return sizes

    def check(self, processor: ZoeDepthImageProcessor, augmentation: Augmentation) -> tuple[int, int]:
        """Reads every file's header: each image and ground truth must open, the ground truth be a 16-bit PNG of
        its image's size, and every image have one size or, with a crop, be at least the crop's size. Returns
        the size of the images the model sees (the crop, or the common size); ImageError or ArgumentError else.
        """
        sizes = self.check_files()
        if augmentation.crop is not None:
            crop = tuple(augmentation.crop)
            for path, (height, width) in sizes.items():
                if height < crop[0] or width < crop[1]:
                    raise ImageError(f"{path}: {height}x{width} is smaller than the crop {crop[0]}x{crop[1]}")
            size = crop
        else:
            distinct = sorted(set(sizes.values()))
            if len(distinct) > 1:
                examples = {size: path for path, size in sizes.items()}
                listing = "; ".join(f"{examples[s]}: {s[0]}x{s[1]}" for s in distinct[:4])
                raise ArgumentError(
                    f"the images have {len(distinct)} sizes ({listing}{'; ...' if len(distinct) > 4 else ''}): a "
                    "batch needs one size; give a random crop no larger than the smallest image"
                )
            size = distinct[0]
        processor.processed_size(*size)  # an ImageError if the processor cannot take it
        return size


def _size_mismatch(image_path, image_size, depth_path, depth_size) -> str:
    return (
        f"{depth_path}: the ground truth is {depth_size[0]}x{depth_size[1]}, its image {image_path} is "
        f"{image_size[0]}x{image_size[1]}: they must have the same size"
    )


def _header_size(path: Path, what: str, exif: bool) -> tuple[int, int]:
    """(height, width) from the file's header (after the EXIF orientation for images, as `load_image` turns
    them); an ImageError naming the file if it cannot be opened."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
            orientation = image.getexif().get(EXIF_ORIENTATION, 1) if exif else 1
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file ({what})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot read the {what}: {type(e).__name__}: {e}") from None
    if not exif:
        check_depth_mode(path, mode)
    return (width, height) if orientation in _TRANSPOSING_ORIENTATIONS else (height, width)


class Augment(grain.RandomMapTransform):
    """The augmentations of an `Augmentation`, on a decoded pair, with Grain's per-sample generator."""

    def __init__(self, augmentation: Augmentation):
        self.augmentation = augmentation

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        return augment(element["image"], element["depth"], self.augmentation, rng)


def augment(image: np.ndarray, depth: np.ndarray, augmentation: Augmentation, rng: np.random.Generator) -> dict:
    """`{"image", "depth"}` after the augmentations (see the module docstring). `image` is RGB uint8 or float32
    on the 0..255 scale (`load_image`), `depth` float32 meters of the same height and width. uint8 stays uint8
    through the flip, crop and a rotation; the colour change gives float32 on the 0..255 scale."""
    a = augmentation
    if a.rotate_degrees > 0:
        angle = float((rng.random() - 0.5) * 2 * a.rotate_degrees)
        image = _rotate_image(image, angle)
        depth = np.asarray(Image.fromarray(depth).rotate(angle, resample=Image.NEAREST))
    if a.crop is not None:
        (height, width), (crop_height, crop_width) = depth.shape, a.crop
        top = int(rng.integers(0, height - crop_height + 1))
        left = int(rng.integers(0, width - crop_width + 1))
        image = image[top : top + crop_height, left : left + crop_width]
        depth = depth[top : top + crop_height, left : left + crop_width]
    if a.flip and rng.random() > 0.5:
        image, depth = image[:, ::-1], depth[:, ::-1]
    if a.color and rng.random() > 0.5:
        gamma = rng.uniform(0.9, 1.1)
        brightness = rng.uniform(*a.brightness)
        colors = rng.uniform(0.9, 1.1, size=3)
        scaled = (np.asarray(image, np.float32) / 255) ** gamma * brightness * colors
        image = (np.clip(scaled, 0, 1) * 255).astype(np.float32)
    return {"image": np.ascontiguousarray(image), "depth": np.ascontiguousarray(depth, dtype=np.float32)}


def _rotate_image(image: np.ndarray, angle: float) -> np.ndarray:
    """Rotated by `angle` degrees counter-clockwise about the centre, bilinear, black outside (Pillow's rotate,
    as the original); uint8 as an RGB image, float32 one channel at a time."""
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).rotate(angle, resample=Image.BILINEAR))
    channels = [
        Image.fromarray(np.ascontiguousarray(image[..., c])).rotate(angle, resample=Image.BILINEAR) for c in range(3)
    ]
    return np.stack([np.asarray(c) for c in channels], axis=-1)


class Prepare(grain.MapTransform):
    """Processor and mask: `{"pixel_values" [H, W, 3], "depth" [h, w], "mask" [h, w]}` (+ `"domain"`)."""

    def __init__(self, processor: ZoeDepthImageProcessor, settings: EvalSettings, domain: int | None):
        self.processor, self.settings, self.domain = processor, settings, domain

    def map(self, element: dict) -> dict:
        return prepare(element["image"], element["depth"], self.processor, self.settings, self.domain)


def prepare(image, depth, processor: ZoeDepthImageProcessor, settings: EvalSettings, domain: int | None) -> dict:
    """One training sample from an (augmented) pair: the processor's pixel values, the depth in meters, and the
    mask of valid depth (finite, strictly inside the settings' range: missing depth, 0, is never a target)."""
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(depth) & (depth > settings.min_depth) & (depth < settings.max_depth)
    sample = {
        "pixel_values": processor(image)["pixel_values"][0],
        "depth": np.where(mask, depth, np.float32(0)).astype(np.float32),
        "mask": mask,
    }
    if domain is not None:
        sample["domain"] = np.int32(domain)
    return sample


def make_loader(
    dataset: DepthDataset,
    processor: ZoeDepthImageProcessor,
    batch_size: int,
    seed: int,
    augmentation: Augmentation,
    *,
    shuffle: bool = True,
    num_epochs: int | None = None,
    worker_count: int = 0,
    shard_options: grain.ShardOptions | None = None,
) -> grain.DataLoader:
    """A Grain DataLoader of this process's batches of `batch_size` samples (the global batch divided by the
    number of processes), endless by default (`num_epochs=None`), shuffled every epoch from `seed`.

    `shard_options` default to `ShardByJaxProcess`: process i of n reads samples i, i + n, ... of each epoch's
    order, the remainder dropped so that every process has as many; the dataset needs at least one sample per
    process. `worker_count` > 0 decodes and augments in that many child processes (the stream is the same).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"batch_size must be a whole number of samples, at least 1, got {batch_size!r}")
    shard_options = shard_options if shard_options is not None else grain.ShardByJaxProcess(drop_remainder=True)
    if len(dataset) < shard_options.shard_count:
        raise ArgumentError(f"{len(dataset)} pairs cannot be shared by {shard_options.shard_count} processes")
    sampler = grain.IndexSampler(
        num_records=len(dataset), shard_options=shard_options, shuffle=shuffle, num_epochs=num_epochs, seed=seed
    )
    operations = [
        Augment(augmentation),
        Prepare(processor, dataset.settings, dataset.domain),
        grain.Batch(batch_size, drop_remainder=True),
    ]
    return grain.DataLoader(data_source=dataset, sampler=sampler, operations=operations, worker_count=worker_count)
