"""benchmarks/accelerator_check.py --dry-run on the CPU: every section of its JSON is filled with sane values (fp32
parity within the project's bound, bf16 really computed in bf16, positive throughput, the attention comparison and
its control), the markdown tables are written, and the budget, the plan and the FLOP count behave as the GPU run
needs them to."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import reference
from tolerances import BF16_DEPTH_MEDIAN_RELATIVE, FP32_RELATIVE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import accelerator_check  # noqa: E402

# Written out rather than imported from the script: a section or header it silently dropped must fail here.
SECTIONS = ("settings", "environment", "parity", "bf16_error", "attention", "throughput", "backbone", "verdict")
SECTIONS += ("skipped", "timing")
HEADERS = (
    "| check | value | target | status | note |",
    "| batch | runtime | fp32 images/s | bf16 images/s |",
    "| attention form | bias | error vs fp32 | ms per call | vs plain | status |",
)
MODEL_CONFIGS = [("jax", "fp32"), ("jax", "bf16"), ("torch_eager", "fp32"), ("torch_eager", "bf16")]


def backbone_flops(config, batch: int, height: int, width: int) -> float:
    """The BEiT matmuls of one forward, from transformers' config: per layer q, k, v, output, MLP fc1 and fc2,
    scores and context; the patch embedding once."""
    patches = (height // config.patch_size) * (width // config.patch_size)
    tokens, hidden = patches + 1, config.hidden_size
    per_layer = 4 * tokens * hidden * hidden + 2 * tokens * hidden * config.intermediate_size
    per_layer += 2 * tokens * tokens * hidden
    embedding = patches * 3 * config.patch_size**2 * hidden
    return 2.0 * batch * (per_layer * config.num_hidden_layers + embedding)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("accelerator_check")
    accelerator_check.main(["--dry-run", "--json", str(folder / "check.json"), "--markdown", str(folder / "check.md")])
    return json.loads((folder / "check.json").read_text()), (folder / "check.md").read_text()


def test_dry_run_fills_every_section(dry_run):
    result, _ = dry_run
    assert all(section in result for section in SECTIONS), [s for s in SECTIONS if s not in result]
    assert result["complete"] and "errors" not in result
    assert result["settings"]["dry_run"] and result["settings"]["forms"] == "plain"
    assert result["environment"]["jax_device_kind"] and result["environment"]["versions"]["jax"]
    assert result["timing"]["total_s"] > 0 and result["skipped"] == []


def test_parity_and_bf16_errors(dry_run):
    result, _ = dry_run
    parity = result["parity"]
    assert parity["finite"] and parity["met"]
    assert 0 <= parity["error"]["median"] <= parity["error"]["max"] <= FP32_RELATIVE
    assert parity["reference_depth"]["std_over_mean"] > 0.05, "a near-constant reference agrees for wrong reasons"
    for runtime in ("zoedepth_jax", "torch_autocast"):
        error = result["bf16_error"][runtime]
        # above the fp32 bound: the bf16 run really computed in bf16; below the bf16 bound: the same depth
        assert 10 * FP32_RELATIVE < error["median"] <= BF16_DEPTH_MEDIAN_RELATIVE, (runtime, error)


def test_throughput_rows(dry_run):
    result, _ = dry_run
    rows = {(r["runtime"], r["dtype"], r["batch"]): r for r in result["throughput"]["results"]}
    for batch in result["settings"]["batch_sizes"]:
        for runtime, dtype in MODEL_CONFIGS:
            row = rows[runtime, dtype, batch]
            assert row["status"] == "ok" and row["images_per_s"] > 0 and row["vs_fastest_torch"] > 0, row
            assert len(row["times_s"]) == result["settings"]["runs"]
        assert rows["torch_eager", "fp32", batch]["vs_torch_eager_fp32"] == 1.0
        assert rows["jax", "fp32", batch]["compile_s"] > 0
    compiled = [r for r in rows.values() if r["runtime"] == "torch_compile"]
    assert [r["status"] for r in compiled].count("ok") == 1, compiled  # the dry run's one torch.compile case
    assert all(r["reason"].startswith("dry run") for r in compiled if r["status"] != "ok")


def test_backbone_flops_and_rate(dry_run):
    result, _ = dry_run
    backbone = result["backbone"]
    height, width = result["settings"]["input_hw"]
    config = reference.hf_config("nyu-kitti").backbone_config
    expected = backbone_flops(config, backbone["batch"], height, width)
    assert backbone["flops"]["total"] == pytest.approx(expected, rel=1e-12)
    assert backbone["status"] == "ok" and backbone["matmul_tflops"] > 0 and backbone["peak"] == "unknown"
    assert 0 < backbone["share_of_whole_model_time"] < 1


def test_attention_comparison(dry_run):
    result, _ = dry_run
    attention = result["attention"]
    plain = attention["plain"]
    assert plain["status"] == "ok" and plain["finite"] and 0 < plain["error"] < 2.0**-6 and plain["median_ms"] > 0
    assert attention["match_bound"] == pytest.approx(accelerator_check.ATTENTION_ERROR_FACTOR * plain["error"])
    assert attention["control"]["exceeds_bound"], "a transposed bias must fail the match"
    cudnn = [v for v in attention["variants"] if v["implementation"] == "cudnn"]
    xla = [v for v in attention["variants"] if v["implementation"] is None]
    assert cudnn and all(v["status"] == "skipped" and v["reason"].startswith("not a GPU") for v in cudnn)
    assert xla and all(v["status"] == "ok" and v["matches_plain"] and v["speedup_vs_plain"] > 0 for v in xla)


def test_verdict_and_markdown(dry_run):
    result, text = dry_run
    verdict = {row["check"].split(" (")[0].split(",")[0]: row for row in result["verdict"]}
    assert verdict["fp32 parity vs transformers"]["status"] == "met"
    assert verdict["zoedepth-jax bf16 depth vs the fp32 reference"]["status"] == "met"
    assert verdict["zoedepth-jax bf16 at batch 2 vs the fastest PyTorch configuration"]["status"] in ("met", "not met")
    assert verdict["backbone bf16 matmul FLOP rate as a share of the dense bf16 peak"]["status"] == "skipped"
    assert verdict["cuDNN fused attention with the relative-position bias"]["status"] == "skipped"
    assert verdict["time of the whole check"]["status"] == "met"
    for header in HEADERS:
        assert header in text, header
    assert text.count("| **met** |") >= 3


def test_budget_skips_what_does_not_fit():
    budget = accelerator_check.Budget(100.0)
    assert budget.refuses("small", 10.0) is None
    assert budget.refuses("large", 99.0, reserve_s=10.0).startswith("skipped")
    assert [entry["part"] for entry in budget.skipped] == ["large"]


def test_plan_measures_the_target_first_and_everything_once():
    plan = accelerator_check.throughput_plan(accelerator_check.FULL)
    assert plan[0] == ("jax", "bf16", 16) and len(plan) == len(set(plan))
    runtimes = ("jax", "torch_eager", "torch_compile")
    expected = {(r, d, b) for r in runtimes for d in ("fp32", "bf16") for b in (16, 8, 1)} | {("backbone", "bf16", 16)}
    assert set(plan) == expected
    first_batch_16_compile = plan.index(("torch_compile", "bf16", 16))
    assert first_batch_16_compile < plan.index(("jax", "bf16", 8))
    assert plan[-4:] == [(r, d, b) for b in (8, 1) for r, d in [("torch_compile", "bf16"), ("torch_compile", "fp32")]]


@pytest.mark.parametrize(
    "device_kind, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("cpu", None),
    ],
)
def test_bf16_peaks(device_kind, tflops):
    peak = accelerator_check.peak_tflops(device_kind)
    assert (peak and peak[1]) == tflops


def test_full_size_flop_count():
    """The released backbone at 384x512 (769 tokens), counted by the script as by hand."""
    config = reference.hf_config("nyu-kitti", full=True).backbone_config
    flops = accelerator_check.backbone_matmul_flops(config, 16, 384, 512)
    assert flops["total"] == pytest.approx(backbone_flops(config, 16, 384, 512), rel=1e-12)
    assert flops["mlp"] == 2.0 * 16 * 769 * 1024 * 4096 * 2 * 24
