"""`jax.export` artifacts: written, read back and run, agreeing with `model.apply`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from tolerances import FP32_RELATIVE, depth_relative_error, relative_error

from zoedepth_jax import ConfigError, ZoeDepthError, from_pretrained
from zoedepth_jax.cli import main
from zoedepth_jax.inference.export import export_model, load_exported, save_exported

HEIGHT, WIDTH = 64, 96


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folders = {}
    for seed, variant in enumerate(("nyu", "nyu-kitti")):
        folders[variant] = tmp_path_factory.mktemp(variant)
        reference.build(variant, folders[variant], seed=seed)
    return folders


def test_symbolic_batch_round_trip_matches_apply(checkpoints, tmp_path):
    model, variables = from_pretrained(checkpoints["nyu-kitti"])
    path = save_exported(tmp_path / "nk.jaxexport", export_model(model, variables, HEIGHT, WIDTH))
    run = load_exported(path)
    apply = jax.jit(model.apply)
    for batch in (1, 3):  # one artifact, several batch sizes
        pixels = jnp.asarray(reference.test_images(batch, HEIGHT, WIDTH, seed=batch).transpose(0, 2, 3, 1))
        depth, logits = run(variables, pixels)
        expected = apply(variables, pixels)
        assert np.asarray(expected.predicted_depth).std() > 1e-2  # not a degenerate reference
        # the same computation compiled twice: XLA may fuse it differently
        assert depth_relative_error(depth, expected.predicted_depth) <= FP32_RELATIVE
        assert relative_error(logits, expected.domain_logits) <= FP32_RELATIVE
    with pytest.raises(FileExistsError):
        save_exported(path, export_model(model, variables, HEIGHT, WIDTH))


def test_fixed_batch_and_single_head(checkpoints, tmp_path):
    model, variables = from_pretrained(checkpoints["nyu"])
    run = load_exported(save_exported(tmp_path / "nyu.jaxexport", export_model(model, variables, HEIGHT, WIDTH, 2)))
    pixels = jnp.asarray(reference.test_images(2, HEIGHT, WIDTH).transpose(0, 2, 3, 1))
    depth, logits = run(variables, pixels)
    assert depth.shape == (2, HEIGHT, WIDTH) and logits.shape == (2, 0)
    assert depth_relative_error(depth, jax.jit(model.apply)(variables, pixels).predicted_depth) <= FP32_RELATIVE
    with pytest.raises(ValueError):  # the artifact was exported for batch 2
        run(variables, pixels[:1])


def test_bad_requests_and_files(checkpoints, tmp_path):
    model, variables = from_pretrained(checkpoints["nyu"])
    with pytest.raises(ConfigError, match="multiples of the patch size 16"):
        export_model(model, variables, 60, 96)
    junk = tmp_path / "junk.jaxexport"
    junk.write_bytes(b"not an artifact" * 10)
    with pytest.raises(ZoeDepthError, match="junk.jaxexport"):
        load_exported(junk)


def test_cli_export(checkpoints, tmp_path, capsys):
    out = tmp_path / "model.jaxexport"
    argv = ["export", str(out), "--model", str(checkpoints["nyu"]), "--height", "32", "--width", "48"]
    assert main(argv) == 0
    assert "any batch size" in capsys.readouterr().out and out.stat().st_size > 0
    assert main(argv) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err


def test_export_for_another_platform_carries_its_forms(checkpoints):
    """Exported on this CPU for a GPU, the artifact holds the plain forms (no loops), not the CPU-tuned ones."""
    model, variables = from_pretrained(checkpoints["nyu"])
    for platforms, has_loops in ((("cpu",), True), (("cuda",), False), (("cpu", "cuda"), False)):
        module = export_model(model, variables, HEIGHT, WIDTH, 1, platforms=platforms).mlir_module()
        assert ("stablehlo.while" in module) == has_loops, platforms
