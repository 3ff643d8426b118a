"""benchmarks/cpu_peers.py on the tiny model: every runtime runs in its worker, is timed, and agrees with PyTorch
eager fp32; the memory budget splits configurations into groups that each carry their own reference. The same for
the DINOv2 models (Depth Anything V2 relative and metric, Depth Anything V1 metric), at their own input size.

Run with `python -m pytest -m bench` after `pip install -e '.[bench,test]'`; a test that needs a peer runtime the
environment lacks is skipped and says so."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tolerances import BF16_DEPTH_MEDIAN_RELATIVE, FP32_RELATIVE, OPENVINO_F32_DEPTH_RELATIVE

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cpu_peers.py"
sys.path.insert(0, str(SCRIPT.parent))
import cpu_peers  # noqa: E402

pytestmark = pytest.mark.bench
BENCH_EXTRA = "needs the bench extra: pip install -e '.[bench]'"
# The peer runtimes of the quick run: OpenVINO, ONNX Runtime, and the ONNX exporters' packages (torch's and ours).
PEER_MODULES = ("openvino", "onnxruntime", "onnx", "onnxscript", "jax2onnx")

# Written out rather than imported from the script: a configuration it silently dropped must fail here.
QUICK_CONFIGS = [
    "jax_fp32",
    "jax_bf16",
    "torch_eager_fp32",
    "torch_eager_bf16",
    "openvino_default",
    "openvino_f32",
    "onnxruntime",
    "onnxruntime_jax2onnx",
]
FP32_MAX_ERROR = {
    "jax_fp32": FP32_RELATIVE,
    "onnxruntime": FP32_RELATIVE,
    "onnxruntime_jax2onnx": FP32_RELATIVE,
    "openvino_f32": OPENVINO_F32_DEPTH_RELATIVE,
}
BF16_CONFIGS = ["jax_bf16", "torch_eager_bf16", "openvino_default"]
DINOV2_VARIANTS = ["da-v2-relative", "da-v2-metric", "da-v1-metric"]


def run_benchmark(out: Path, *arguments: str) -> dict:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out), *arguments],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=True,
        timeout=600,
    )
    return json.loads(out.read_text())


def require_peers(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module, reason=BENCH_EXTRA)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    require_peers(*PEER_MODULES)
    return run_benchmark(tmp_path_factory.mktemp("cpu_peers") / "quick.json")


def by_config(result: dict) -> dict[str, dict]:
    rows = {row["config"]: row for row in result["results"]}
    assert len(rows) == len(result["results"]), "a configuration appears twice"
    return rows


def test_every_configuration_is_timed(quick):
    assert quick["settings"]["runs"] == 2 and quick["settings"]["batch_sizes"] == [2]
    rows = by_config(quick)
    assert sorted(rows) == sorted(QUICK_CONFIGS)
    for config, row in rows.items():
        assert row["status"] == "ok", (config, row.get("error"))
        assert row["batch"] == 2 and row["group"] == 1, (config, row["batch"], row["group"])
        times = row["times_s"]
        assert len(times) == 2 and all(math.isfinite(t) and t > 0 for t in times), (config, times)
        assert row["min_s"] <= row["median_s"] <= row["max_s"], (config, row)
        assert row["median_s"] == statistics.median(times)
        assert row["images_per_s"] == pytest.approx(2 / row["median_s"])
        assert row["peak_rss_mib"] >= row["rss_after_warmup_mib"] > 0, config
    anchor_median = rows["torch_eager_fp32"]["median_s"]
    for config, row in rows.items():
        assert row["speedup_vs_torch_eager_fp32"] == pytest.approx(anchor_median / row["median_s"]), config


def test_compile_times_cover_their_step(quick):
    rows = by_config(quick)
    for config, row in rows.items():
        if config.startswith("torch_eager"):
            assert row["compile_s"] is None, config
        else:
            assert math.isfinite(row["compile_s"]) and row["compile_s"] > 0, config
    openvino = rows["openvino_f32"]["details"]
    assert openvino["compile_covers"] == "convert + compile" and "float32" in openvino["inference_precision"]
    assert rows["openvino_f32"]["compile_s"] == pytest.approx(openvino["convert_s"] + openvino["compile_model_s"])
    onnx = rows["onnxruntime"]["details"]
    assert onnx["exporter"] in ("dynamo", "torchscript (dynamo=False)")
    assert (onnx["exporter"] == "dynamo") == ("dynamo_export_error" not in onnx), onnx
    assert rows["onnxruntime"]["compile_s"] == pytest.approx(onnx["export_s"] + onnx["session_s"])


def test_depth_agrees_with_torch_eager_fp32(quick):
    rows = by_config(quick)
    assert "depth_error_vs_torch_eager_fp32" not in rows["torch_eager_fp32"]  # the reference itself
    for config, bound in FP32_MAX_ERROR.items():
        error = rows[config]["depth_error_vs_torch_eager_fp32"]
        assert isinstance(error, dict), (config, error)  # not "non-finite output"
        assert 0 <= error["median"] <= error["max"] < bound, (config, error)
    for config in BF16_CONFIGS:
        error = rows[config]["depth_error_vs_torch_eager_fp32"]
        assert isinstance(error, dict), (config, error)  # not "non-finite output"
        assert math.isfinite(error["max"]) and error["median"] < BF16_DEPTH_MEDIAN_RELATIVE, (config, error)


def test_machine_facts(quick):
    machine = quick["machine"]
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1 and machine["memory_total_gib"] > 0
    assert set(machine["cpu_flags"]) >= {"amx_tile", "amx_bf16"}
    assert len(quick["load_average_start"]) == 3 and len(quick["load_average_end"]) == 3
    for package in ("jax", "torch", "transformers", "openvino", "onnxruntime"):
        assert quick["versions"][package], package


@pytest.fixture(scope="module", params=DINOV2_VARIANTS)
def quick_dinov2(request, tmp_path_factory) -> tuple[str, dict]:
    require_peers(*PEER_MODULES)
    out = tmp_path_factory.mktemp("cpu_peers") / f"{request.param}.json"
    return request.param, run_benchmark(out, "--variant", request.param)


def test_dinov2_models_run_every_configuration_against_the_anchor(quick_dinov2):
    """Each DINOv2 model at its quick input size (98x126, 7x9 patches): every configuration is timed and its depth
    is finite and close to PyTorch eager fp32's."""
    variant, result = quick_dinov2
    settings = result["settings"]
    assert settings["variant"] == variant and settings["input_hw"] == [98, 126] and settings["batch_sizes"] == [2]
    relative = variant == "da-v2-relative"
    assert ("max over the same image" in settings["depth_error"]) == relative, settings["depth_error"]
    rows = by_config(result)
    assert sorted(rows) == sorted(QUICK_CONFIGS)
    for config, row in rows.items():
        assert row["status"] == "ok", (config, row.get("error"))
        assert len(row["times_s"]) == 2 and all(math.isfinite(t) and t > 0 for t in row["times_s"]), config
        assert row["peak_rss_mib"] >= row["rss_after_warmup_mib"] > 0, config
        if config == "torch_eager_fp32":
            continue
        error = row["depth_error_vs_torch_eager_fp32"]
        assert isinstance(error, dict), (config, error)  # not "non-finite output"
        assert 0 <= error["median"] <= error["max"] and math.isfinite(error["max"]), (config, error)
        if config in FP32_MAX_ERROR:
            assert error["max"] < FP32_MAX_ERROR[config], (config, error)
        else:
            assert error["median"] < BF16_DEPTH_MEDIAN_RELATIVE, (config, error)


def test_errors_of_relative_depth_are_taken_against_each_image_max():
    reference_depth = np.array([[[0.0, 1.0], [2.0, 4.0]], [[0.0, 0.0], [0.5, 0.25]]])
    depth = reference_depth + np.array([[[0.4, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.05]]])
    errors = cpu_peers.errors_to_image_max(depth, reference_depth)  # a zero pixel is no division by zero
    assert errors["max"] == pytest.approx(0.1) and errors["median"] == 0.0
    assert isinstance(cpu_peers.errors_to_image_max(depth, np.zeros_like(depth)), str)
    assert cpu_peers.memory_estimates("nyu-kitti") is cpu_peers.MEMORY_ESTIMATES
    assert cpu_peers.memory_estimates("da-v1-metric") is cpu_peers.DINOV2_MEMORY_ESTIMATES


def test_groups_are_packed_in_order_within_the_budget():
    estimates = {"torch_eager_fp32": 3, "jax_fp32": 4, "jax_bf16": 5, "openvino_f32": 8, "onnxruntime": 19}
    configs = ["jax_fp32", "torch_eager_fp32", "jax_bf16", "openvino_f32", "onnxruntime"]
    groups, skipped = cpu_peers.plan_groups(configs, estimates, budget_mib=16)
    assert groups == [["jax_fp32", "jax_bf16"], ["openvino_f32"]]  # 3 + 4 + 5 fits, + 8 would not
    assert skipped == ["onnxruntime"]  # 3 + 19 exceeds the budget on its own
    assert cpu_peers.plan_groups(["torch_eager_fp32"], estimates, budget_mib=16) == ([[]], [])  # the anchor alone


def test_memory_budget_gives_each_group_its_own_anchor(tmp_path):
    """A budget that fits the anchor beside either configuration but not beside both (the tiny model's estimates
    are ~1.1 GiB each, LIBRARIES_MIB dominating): two groups, each with its own torch_eager_fp32, which its
    configuration's speedup refers to."""
    arguments = ["--configs", "jax_fp32,torch_eager_bf16", "--batch-sizes", "1", "--runs", "1"]
    result = run_benchmark(tmp_path / "groups.json", *arguments, "--memory-budget-gib", "2.5")
    groups = {}
    for row in result["results"]:
        assert row["status"] == "ok", row
        groups.setdefault(row["group"], {})[row["config"]] = row
    assert {g: sorted(rows) for g, rows in groups.items()} == {
        1: ["jax_fp32", "torch_eager_fp32"],
        2: ["torch_eager_bf16", "torch_eager_fp32"],
    }
    for rows in groups.values():
        anchor = rows["torch_eager_fp32"]
        assert anchor["anchor"]
        for row in rows.values():
            assert row["speedup_vs_torch_eager_fp32"] == pytest.approx(anchor["median_s"] / row["median_s"])


def test_openvino_stages_attributes_the_dense_work_of_each_stage(tmp_path):
    """benchmarks/openvino_stages.py on the tiny model: its node counters land in the model's stages, and the
    multiply-adds it counts from the compiled graph cover the backbone's q/k/v/MLP matmuls and attention."""
    require_peers("openvino")
    import openvino_stages
    import reference

    folder = tmp_path / "tiny"
    model = reference.build("nyu-kitti", folder, seed=0)
    batch, height, width = 1, 64, 96
    result = openvino_stages.profile(folder, reference.test_images(batch, height, width, seed=1), True, runs=2)
    stages = result["by_stage"]
    for stage in ("attention", "mlp", "neck", "relative_head", "metric_head"):
        assert stages[stage]["s"] > 0 and stages[stage]["dense_gflop"] > 0, stage
    backbone = model.config.backbone_config
    tokens = (height // backbone.patch_size) * (width // backbone.patch_size) + 1
    layers, hidden = backbone.num_hidden_layers, backbone.hidden_size
    mlp = layers * batch * 2 * 2 * tokens * hidden * backbone.intermediate_size / 1e9
    attention = layers * batch * 2 * (4 * tokens * hidden * hidden + 2 * tokens * tokens * hidden) / 1e9
    assert math.isclose(stages["mlp"]["dense_gflop"], mlp, rel_tol=1e-6)
    assert math.isclose(stages["attention"]["dense_gflop"], attention, rel_tol=1e-6)
