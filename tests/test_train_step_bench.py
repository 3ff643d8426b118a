"""benchmarks/train_step.py on the tiny model: every configuration is timed in one run, and the first training
step's loss of zoedepth-jax fp32 agrees with PyTorch eager fp32's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_step.py"
# Written out rather than imported from the script: a configuration it silently dropped must fail here.
CONFIGS = ["jax_fp32", "jax_bf16", "torch_eager_fp32", "torch_eager_bf16"]


def test_quick_run_times_every_configuration_and_checks_the_loss(tmp_path):
    out = tmp_path / "out.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(out.read_text())

    assert [r["config"] for r in result["results"]] == CONFIGS
    for r in result["results"]:
        assert len(r["times_s"]) == 2 and min(r["times_s"]) > 0, r["config"]
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert len(r["minor_faults"]) == len(r["system_s"]) == 2, r["config"]
        assert all(faults >= 0 for faults in r["minor_faults"]) and all(s >= 0 for s in r["system_s"])
        assert len(r["losses"]) == 3 and all(loss > 0 for loss in r["losses"]), r["config"]  # warm-up + 2 runs
        assert (r["compile_s"] is not None) == r["config"].startswith("jax"), r["config"]
        dense = r["details"]["dense_layer"]
        assert dense["shape"] == [2 * (4 * 6 + 1), 48, 96], r["config"]  # 64x96 in 16-pixel patches + CLS, tiny BEiT
        assert r["dense_layer_gflop_per_s"] == dense["gflop_per_s"] > 0
        assert r["matmul_floor_s"] == pytest.approx(result["step_matmul_gflop"] / dense["gflop_per_s"])
    anchor = next(r for r in result["results"] if r["config"] == "torch_eager_fp32")
    assert anchor["speedup_vs_torch_eager_fp32"] == 1.0

    check = result["loss_check"]
    assert check["passed"] and check["relative_difference"] <= check["tolerance"] == 1e-3
    assert check["jax_fp32"] == result["results"][0]["first_step_loss"]

    machine = result["machine"]
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1
    assert set(machine["cpu_flags"]) >= {"amx_bf16", "avx512_bf16"}
    assert "commit" in result and result["settings"]["input"] == [2, 64, 96]
    assert "| jax_bf16 |" in completed.stdout and "passed" in completed.stdout
