"""`zoedepth-jax selfcheck`: one command that says whether this package computes what transformers computes on the
released checkpoints, on this machine (`checks.py`), and which precision to run here.

    from zoedepth_jax.selfcheck import selfcheck, verdict_table, exit_status
    rows = selfcheck()                        # the three released checkpoints, from the hub or its cache
    print(verdict_table(rows)); exit_status(rows)

With `write_example`, it also writes the README's example pictures from Intel/zoedepth-nyu-kitti, once that
model's checks have passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from zoedepth_jax.files import write_atomically
from zoedepth_jax.inference.depth_images import colorize, depth_and_uncertainty_picture
from zoedepth_jax.inference.estimator import DepthEstimator
from zoedepth_jax.selfcheck.checks import (
    DEFAULT_MODELS,
    EXIT_FAILED,
    EXIT_INCOMPLETE,
    EXIT_PASSED,
    FAIL,
    NOT_CHECKED,
    PASS,
    LoadedModel,
    Row,
    exit_status,
    run_checks,
    verdict_table,
)
from zoedepth_jax.selfcheck.images import EXAMPLE_PHOTO, fixture_photos

EXAMPLE_MODEL = "Intel/zoedepth-nyu-kitti"  # the README's model
EXAMPLE_PICTURES = ("example_depth_color.png", "example_depth_std.png")  # written by write_example, in this order

__all__ = [
    "DEFAULT_MODELS",
    "EXAMPLE_MODEL",
    "EXAMPLE_PICTURES",
    "EXIT_FAILED",
    "EXIT_INCOMPLETE",
    "EXIT_PASSED",
    "Row",
    "exit_status",
    "selfcheck",
    "verdict_table",
]


def selfcheck(
    models: Sequence[str] = DEFAULT_MODELS,
    fixtures: Path | None = None,
    example_photo: Path = EXAMPLE_PHOTO,
    cache_dir: str | None = None,
    write_example: Path | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> list[Row]:
    """The verdict rows for `models` (hub ids or folders) on the example photo and transformers' test photos
    (`fixtures`: a folder holding them; default: the cache, or a download). `write_example`: a folder to write
    `EXAMPLE_PICTURES` into, from `EXAMPLE_MODEL` (replacing them)."""
    photos, missing = fixture_photos(fixtures)
    if example_photo.is_file():
        photos = {example_photo.name: example_photo, **photos}
    else:
        missing = {example_photo.name: f"{example_photo} does not exist (a source checkout has it)", **missing}
    kept = {}

    def keep_example_model(loaded: LoadedModel):
        if loaded.model_id == EXAMPLE_MODEL:
            kept["estimator"] = DepthEstimator(
                loaded.model, loaded.variables, processor=loaded.processor, uncertainty=True
            )

    rows = run_checks(models, photos, missing, cache_dir, progress, loaded=keep_example_model)
    if write_example is not None:
        rows.append(_write_example(rows, kept.get("estimator"), example_photo, write_example))
    return rows


def _write_example(rows: list[Row], estimator: DepthEstimator | None, photo: Path, folder: Path) -> Row:
    check = "example pictures"
    if estimator is None:
        return Row(
            check, EXAMPLE_MODEL, NOT_CHECKED, f"not written: {EXAMPLE_MODEL} did not load (or was not asked for)"
        )
    if any(row.verdict == FAIL and row.subject.startswith(EXAMPLE_MODEL) for row in rows):
        return Row(check, EXAMPLE_MODEL, NOT_CHECKED, "not written: the model's checks failed")
    if not photo.is_file():
        return Row(check, EXAMPLE_MODEL, NOT_CHECKED, f"not written: {photo} does not exist")
    result = estimator(str(photo))
    pictures = (
        colorize(result["predicted_depth"]),
        depth_and_uncertainty_picture(result["predicted_depth"], result["depth_std"], f"model: {EXAMPLE_MODEL}"),
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in EXAMPLE_PICTURES]
    for path, picture in zip(paths, pictures, strict=True):
        write_atomically(path, lambda temp, picture=picture: picture.save(temp, format="PNG"))
    return Row(check, EXAMPLE_MODEL, PASS, "wrote " + ", ".join(str(path) for path in paths))
