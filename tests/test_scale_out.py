"""Data-parallel inference over several (virtual CPU) devices and a two-process `jax.distributed` run.

Each scenario runs in fresh Python processes, since the device count is fixed when jax starts:
`XLA_FLAGS=--xla_force_host_platform_device_count=N` gives a process N CPU devices.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import reference
from PIL import Image
from tolerances import FP32_RELATIVE, depth_relative_error

from zoedepth_jax import DepthEstimator

ROOT = Path(__file__).resolve().parents[1]
# Five photos (an odd count: batches that do not divide the device count) of two processed shapes.
SIZES = [(120, 160), (120, 160), (160, 120), (120, 160), (180, 240)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nk_scale")
    reference.build("nyu-kitti", folder, seed=11)
    return folder


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for k, (height, width) in enumerate(SIZES):
        Image.fromarray(reference.photo_like(height, width, seed=k)).save(folder / f"photo{k}.png")
    return folder


def run_python(code: str, devices: int, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_four_devices_give_the_single_device_results(checkpoint, photo_folder, tmp_path):
    paths = sorted(str(p) for p in photo_folder.iterdir())
    alone = [d["predicted_depth"] for d in DepthEstimator(checkpoint, flip=True, batch_size=1)(paths)]
    child = run_python(
        """
        import sys, jax, numpy as np
        from zoedepth_jax import DepthEstimator
        checkpoint, out, *paths = sys.argv[1:]
        assert len(jax.devices()) == 4, jax.devices()
        estimator = DepthEstimator(checkpoint, flip=True)  # default: every device, one image per device
        assert estimator.batch_size == 4
        leaf = jax.tree_util.tree_leaves(estimator.variables)[0]
        assert len(leaf.sharding.device_set) == 4  # parameters replicated on every device
        depths = [d["predicted_depth"] for d in estimator(paths)]
        np.savez(out, *depths, compiles=estimator.compile_count)
        # Every device computes its own images only: no loop of the model may gather the sharded batch.
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        split = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
        x = jax.device_put(np.zeros((8, 64, 96, 3), np.float32), split)
        hlo = jax.jit(estimator.model.apply).lower(estimator.variables, x).compile().as_text()
        for collective in ("all-gather", "all-to-all", "collective-permute", "all-reduce"):
            assert collective + "(" not in hlo, collective
        """,
        4,
        str(checkpoint),
        str(tmp_path / "sharded.npz"),
        *paths,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    saved = np.load(tmp_path / "sharded.npz")
    sharded = [saved[f"arr_{k}"] for k in range(len(paths))]
    # 3 photos of 120x160 and 1 of 180x240 share 384x480 (batch 4), the portrait is alone (padded to 4)
    assert int(saved["compiles"]) == 2
    for path, ours, expected in zip(paths, sharded, alone, strict=True):
        assert ours.shape == expected.shape
        assert depth_relative_error(ours, expected) <= FP32_RELATIVE, path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_every_image_exactly_once(checkpoint, photo_folder, tmp_path):
    out = tmp_path / "out"
    port = _free_port()
    code = """
        import sys
        from zoedepth_jax.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(ROOT))
    common = ["predict", str(photo_folder), "--model", str(checkpoint), "--out", str(out), "--no-flip"]
    common += ["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--no-progress"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *common, "--process-id", str(rank)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err[-3000:]
    written = [line.split(":")[0] for stdout, _ in results for line in stdout.splitlines() if "depth min" in line]
    expected = sorted(str(p) for p in photo_folder.iterdir())
    assert sorted(written) == expected  # each image by exactly one process
    assert all(any("depth min" in line for line in stdout.splitlines()) for stdout, _ in results)  # both worked
    assert "5 done, 0 skipped, 0 failed by 2 processes" in results[0][1]
    assert "by 2 processes" not in results[1][1]  # only the first process prints the totals
    for k, (height, width) in enumerate(SIZES):
        with Image.open(out / f"photo{k}_depth.png") as image:
            assert image.size == (width, height)
    assert not list(out.glob("*.tmp"))
