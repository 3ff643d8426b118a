"""The checks of `zoedepth-jax selfcheck` and their verdict table.

For each model (by default the three released checkpoints) it loads the checkpoint and, when transformers is
installed, transformers' model from the same files, and checks:

  depth vs transformers   the same pixel values through both models, on each photo: the depth maps agree to
                          `DEPTH_RELATIVE_TOLERANCE` per pixel (fp32, the project's parity target)
  expected values         for the released hub ids, the values transformers' integration tests assert
                          (`expected.py`), computed by this package alone: processor, model and post-processing
  precision               which compute dtype is faster on this machine (`inference.precision`), for information

A check that cannot run (a model neither cached nor downloadable, transformers not installed, a photo missing)
is reported as not checked, with the reason. The exit status says which of three outcomes it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import numpy as np

from zoedepth_jax.errors import ZoeDepthError
from zoedepth_jax.inference.images import load_image
from zoedepth_jax.inference.precision import measure_precision
from zoedepth_jax.inference.processor import ZoeDepthImageProcessor
from zoedepth_jax.modeling.zoedepth import ZoeDepthForDepthEstimation
from zoedepth_jax.selfcheck.expected import Expected, expectations_for
from zoedepth_jax.weights.loading import from_pretrained
from zoedepth_jax.weights.resolve import FLAX_WEIGHTS_NAME, PREPROCESSOR_CONFIG_NAME, first_weight_file, resolve

DEFAULT_MODELS = ("Intel/zoedepth-nyu", "Intel/zoedepth-kitti", "Intel/zoedepth-nyu-kitti")
# fp32 against transformers, per pixel max(|ours - theirs| / theirs): the project's parity target. On the same
# machine the two differ only in the order of floating-point sums (~1e-6 measured on re-drawn checkpoints).
DEPTH_RELATIVE_TOLERANCE = 1e-4
# Beyond that limit, transformers in float64 decides (`_float64_arbiter`): the normed attractors of the KITTI head
# amplify fp32 rounding about threefold per stage, so both fp32 results can stray from the exact one by more than
# the limit. Ours passes when it is no farther from float64 than transformers' fp32 is, with this margin for
# rounding that falls differently (the same rule as the test suite's NORMED_BINS_VS_FLOAT64_FACTOR).
FLOAT64_ARBITER_FACTOR = 1.5

TABLE_WIDTH = 120  # the rule under the header; detail cells may run longer
PASS, FAIL, NOT_CHECKED, INFO = "pass", "FAIL", "not checked", "info"
# Exit statuses. 2 is taken by usage errors (argparse) and the command line's other errors.
EXIT_PASSED = 0  # every check ran and passed
EXIT_FAILED = 1  # at least one check ran and failed
EXIT_INCOMPLETE = 3  # nothing failed, but some checks could not run (offline, transformers missing, ...)


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the verdict table."""

    check: str
    subject: str  # the model, and the photo where it applies
    verdict: str  # PASS, FAIL, NOT_CHECKED or INFO
    detail: str


def exit_status(rows: Iterable[Row]) -> int:
    verdicts = {row.verdict for row in rows}
    if FAIL in verdicts:
        return EXIT_FAILED
    return EXIT_INCOMPLETE if NOT_CHECKED in verdicts else EXIT_PASSED


def verdict_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table, then one line with the outcome."""
    header = Row("check", "model / photo", "verdict", "detail")
    widths = [max(len(getattr(row, field)) for row in (header, *rows)) for field in ("check", "subject", "verdict")]
    lines = []
    for row in (header, *rows):
        cells = (row.check, row.subject, row.verdict)
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + "  " + row.detail
        )
    lines.insert(1, "-" * min(TABLE_WIDTH, max(len(line) for line in lines)))
    outcome = {
        EXIT_PASSED: "every check passed",
        EXIT_FAILED: "FAILED: see the FAIL rows",
        EXIT_INCOMPLETE: "nothing failed, but some checks could not run: see the 'not checked' rows",
    }
    lines.append(f"\n{outcome[exit_status(rows)]} (exit status {exit_status(rows)})")
    return "\n".join(lines)


def run_checks(
    models: Sequence[str],
    photos: dict[str, Path],
    missing_photos: dict[str, str],
    cache_dir: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
    loaded: Callable[[LoadedModel], None] = lambda model: None,
) -> list[Row]:
    """Every check for `models` on `photos` ({name: path}); `missing_photos` ({name: reason}) are reported as not
    checked. `loaded` is called with each model that loads (the example pictures use it)."""
    rows = [Row("photo", name, NOT_CHECKED, reason) for name, reason in missing_photos.items()]
    progress("timing float32 and bfloat16 matmuls")
    timing = measure_precision()
    rows.append(Row("precision", timing.device, INFO, f"--dtype auto picks {timing.describe()}"))
    transformers_model = _transformers_loader()
    for model_id in models:
        progress(f"loading {model_id}")
        try:
            folder = resolve(model_id, cache_dir=cache_dir)
        except ZoeDepthError as e:
            rows.append(Row("load", model_id, NOT_CHECKED, str(e)))
            continue
        try:
            model, variables = from_pretrained(folder)
        except ZoeDepthError as e:  # the files are there but do not load
            rows.append(Row("load", model_id, FAIL, str(e)))
            continue
        if not isinstance(model, ZoeDepthForDepthEstimation):
            reason = f"a {type(model).__name__} checkpoint: the checks cover ZoeDepth checkpoints"
            rows.append(Row("load", model_id, NOT_CHECKED, reason))
            continue
        rows.append(Row("load", model_id, PASS, str(folder)))
        subject = LoadedModel(model_id, folder, model, variables, checkpoint_processor(folder))
        progress(f"checking {model_id}")
        rows += _against_transformers(subject, photos, transformers_model)
        rows += _expected_values(subject, photos, missing_photos)
        loaded(subject)
    return rows


class LoadedModel:
    """A model under check: where it came from, the module and its variables, its image processor, and its
    forward pass compiled once per routing (the estimator's default, and transformers' one head per batch)."""

    def __init__(self, model_id: str, folder: Path, model: ZoeDepthForDepthEstimation, variables, processor):
        self.model_id, self.folder, self.model, self.variables, self.processor = (
            model_id,
            folder,
            model,
            variables,
            processor,
        )
        self._forwards = {}

    def __call__(self, pixel_values: np.ndarray, routing: str = "per_image"):
        if routing not in self._forwards:
            self._forwards[routing] = jax.jit(self.model.clone(routing=routing).apply)
        return self._forwards[routing](self.variables, pixel_values)


def checkpoint_processor(folder: Path) -> ZoeDepthImageProcessor:
    """The image processor of a checkpoint folder: its preprocessor_config.json, else the released settings."""
    config = folder / PREPROCESSOR_CONFIG_NAME
    return ZoeDepthImageProcessor.from_json_file(config) if config.is_file() else ZoeDepthImageProcessor()


def _transformers_loader():
    """transformers' `ZoeDepthForDepthEstimation.from_pretrained`, or a string saying why it is unavailable."""
    try:
        import torch  # noqa: F401  (transformers' model needs it)
        from transformers import ZoeDepthForDepthEstimation as TransformersZoeDepth
    except ImportError as e:
        return f"transformers (and torch) are needed for this check: {e}; pip install 'zoedepth-jax[bench]'"
    return TransformersZoeDepth.from_pretrained


def _relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Per pixel, max |ours - reference| / reference (depth is positive)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference) / reference))


def _against_transformers(subject: LoadedModel, photos: dict[str, Path], transformers_model) -> list[Row]:
    check = "depth vs transformers"
    if isinstance(transformers_model, str):
        return [Row(check, subject.model_id, NOT_CHECKED, transformers_model)]
    if first_weight_file(subject.folder).name == FLAX_WEIGHTS_NAME:
        reason = f"{subject.folder} holds Flax weights only, which transformers cannot read"
        return [Row(check, subject.model_id, NOT_CHECKED, reason)]
    import torch

    theirs_model = transformers_model(str(subject.folder)).eval()
    rows = []
    for name, path in photos.items():
        pixel_values = subject.processor.preprocess(str(path))["pixel_values"]  # [1, H, W, 3]
        ours = np.asarray(subject(pixel_values).predicted_depth)
        nchw = torch.from_numpy(pixel_values.transpose(0, 3, 1, 2))
        with torch.no_grad():
            theirs = theirs_model(pixel_values=nchw).predicted_depth.numpy()
        error = _relative_error(ours, theirs)
        size = "x".join(str(side) for side in pixel_values.shape[1:3])
        detail = f"max relative error {error:.1e} (limit {DEPTH_RELATIVE_TOLERANCE:.0e}) at {size}"
        verdict = PASS if error <= DEPTH_RELATIVE_TOLERANCE else FAIL
        if verdict == FAIL:
            verdict, detail = _float64_arbiter(theirs_model, nchw, ours, theirs, detail)
        rows.append(Row(check, f"{subject.model_id} / {name}", verdict, detail))
    return rows


def _float64_arbiter(theirs_model, nchw, ours: np.ndarray, theirs: np.ndarray, detail: str) -> tuple[str, str]:
    """Beyond the limit, transformers run in float64 decides: ours passes if it is no farther from that than
    transformers' own fp32 result is (`FLOAT64_ARBITER_FACTOR`), i.e. the two differ by fp32 rounding alone."""
    import torch

    with torch.no_grad():
        exact = theirs_model.double()(pixel_values=nchw.double()).predicted_depth.numpy()
    theirs_model.float()
    ours_off, theirs_off = _relative_error(ours, exact), _relative_error(theirs, exact)
    within = ours_off <= FLOAT64_ARBITER_FACTOR * theirs_off
    detail += (
        f"; against transformers in float64 ours is {ours_off:.1e} off and transformers' fp32 {theirs_off:.1e}: "
        + ("fp32 rounding on both sides" if within else "more than rounding")
    )
    return (PASS if within else FAIL), detail


def _expected_values(subject: LoadedModel, photos: dict[str, Path], missing_photos: dict[str, str]) -> list[Row]:
    rows = []
    for expected in expectations_for(subject.model_id):
        absent = [name for name in expected.images if name not in photos]
        if absent:
            reasons = "; ".join(f"{name}: {missing_photos.get(name, 'missing')}" for name in absent)
            rows.append(Row("expected values", f"{subject.model_id} / {expected.test}", NOT_CHECKED, reasons))
            continue
        rows.append(_compare_corners(expected, *_corners(expected, subject, photos)))
    return rows


def _corners(expected: Expected, subject: LoadedModel, photos) -> tuple[np.ndarray, str | None]:
    """The top-left 3x3 corners `[images, 3, 3]` this package computes for `expected`'s test, and a shape
    problem if the test asserts a shape that differs."""
    images = [load_image(photos[name], name=name) for name in expected.images]  # [h, w, 3] each
    processor = subject.processor
    if not expected.post_processed:
        depth = np.asarray(subject(processor.preprocess(images)["pixel_values"]).predicted_depth)
        problem = None
        if expected.raw_shape is not None and depth.shape[1:] != expected.raw_shape:
            problem = f"predicted_depth is {depth.shape[1:]}, expected {expected.raw_shape}"
        return depth[:, :3, :3], problem
    # transformers' post-processing test: fixed 384x512 resize, the photos as one batch routed as one
    pixel_values = processor.preprocess(images, keep_aspect_ratio=False, do_pad=expected.pad)["pixel_values"]
    outputs = subject(pixel_values, routing="batch")
    flipped = subject(pixel_values[:, :, ::-1], routing="batch") if expected.flip else None  # mirrored pixels
    results = processor.post_process_depth_estimation(
        outputs, [image.shape[:2] for image in images], outputs_flipped=flipped, do_remove_padding=expected.pad
    )
    return np.stack([result["predicted_depth"][:3, :3] for result in results]), None


def _compare_corners(expected: Expected, corners: np.ndarray, problem: str | None) -> Row:
    """torch.testing.assert_close's rule: |ours - expected| <= atol + rtol * |expected| everywhere."""
    subject = f"{expected.model} / {expected.test}"
    if problem is not None:
        return Row("expected values", subject, FAIL, problem)
    target = np.asarray(expected.corners, np.float64)
    difference = np.abs(corners - target)
    within = (difference <= expected.atol + expected.rtol * np.abs(target)).all()
    detail = f"max |difference| {difference.max():.1e} m (limit {expected.atol:g} m + {expected.rtol:g} x value)"
    return Row("expected values", subject, PASS if within else FAIL, detail)
