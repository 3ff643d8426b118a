"""Original isl-org checkpoints (ZoeD_M12_N / K / NK `.pt`): layout, parity with transformers, safety, errors.

The released files are not downloaded here. (a) checks the converter against tests/data/original_layouts.json,
every key and shape of the three released layouts as established from the original module trees; (b) writes
original-format files from re-drawn tiny transformers models with the HF -> original map of `reference`, and
compares depth with transformers run on the same weights.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import reference
import torch
from tolerances import FP32_RELATIVE, relative_error

from zoedepth_jax import (
    BinConfiguration,
    CheckpointError,
    ConfigError,
    ZoeDepthConfig,
    ZoeDepthForDepthEstimation,
    from_pretrained,
)
from zoedepth_jax.cli import main as cli_main
from zoedepth_jax.weights import original_config as oc_config
from zoedepth_jax.weights import original_names as oc_names
from zoedepth_jax.weights.hf_names import convert_hf_state_dict
from zoedepth_jax.weights.trees import param_shapes

LAYOUTS = json.loads((Path(__file__).parent / "data" / "original_layouts.json").read_text())
VARIANTS = ("N", "K", "NK")
SIZE = (96, 128)  # one input shape for the whole file: one compile per config (see `compiled`)


def stand_in(layout: dict[str, list[int]]) -> dict[str, np.ndarray]:
    return reference.stand_in(layout, LAYOUTS["_int64_buffers"])


@pytest.fixture(scope="module")
def full_size_targets():
    """The Flax parameter shapes of each released model, from the config read off the fixture's tensors."""
    targets = {}
    for variant in VARIANTS:
        config = oc_config.original_config(stand_in(LAYOUTS[f"ZoeD_M12_{variant}"]))
        targets[variant] = (config, param_shapes(config))
    return targets


def released_config(variant: str) -> ZoeDepthConfig:
    """What the released files run with: transformers' conversion config (the Intel hub configs), with timm's
    LayerNorm eps and ZoeD_M12_K's 10 m range."""
    hf = reference.hf_config(reference.ORIGINAL_VARIANTS[variant], full=True).to_dict()
    hf["backbone_config"]["layer_norm_eps"] = 1e-6
    config = ZoeDepthConfig.from_dict(hf)
    if variant != "NK":  # one head, named after its dataset, over ZoeDepth's default 1e-3..10 m
        config = config.replace(
            bin_configurations=(BinConfiguration({"N": "nyu", "K": "kitti"}[variant], 64, 1e-3, 10.0),)
        )
    return config


@pytest.mark.parametrize("variant", VARIANTS)
def test_released_layout_is_consumed_exactly(variant, full_size_targets):
    """(a) Every key of the released layout is renamed or listed as dropped, every parameter of the full-size
    model is filled with the right shape, and the config read from the tensors is the released one."""
    state = stand_in(LAYOUTS[f"ZoeD_M12_{variant}"])
    config, targets = full_size_targets[variant]
    assert oc_config.detect_variant(state) == variant
    assert config == released_config(variant)
    assert config.backbone_config.out_indices == (6, 12, 18, 24) and config.backbone_config.layer_norm_eps == 1e-6

    hf_state = oc_names.to_hf_state_dict(state)
    convert_hf_state_dict(hf_state, config, targets, source=variant)  # raises on any leftover or gap
    dropped = [k for k in state if not any(p.fullmatch(k) for p, _, _ in oc_names._ROWS)]
    assert all(any(re.fullmatch(p, k) for p, _ in oc_names.DROPPED) for k in dropped)
    assert len(dropped) == 24 + 4 + 2 * len(config.bin_configurations)  # rel. index per block, fc_norm+head, buffers

    # One key missing, one unknown: both named.
    del state["core.core.scratch.refinenet2.out_conv.weight"]
    state["core.core.pretrained.model.blocks.3.attn.qkv_extra"] = np.zeros(1, np.float32)
    with pytest.raises(CheckpointError, match=r"blocks\.3\.attn\.qkv_extra"):
        oc_names.to_hf_state_dict(state, source="edited")
    del state["core.core.pretrained.model.blocks.3.attn.qkv_extra"]
    with pytest.raises(CheckpointError, match="neck/fusion_stage/layers_2/projection/kernel"):
        convert_hf_state_dict(oc_names.to_hf_state_dict(state), config, targets, source="edited")


def test_test_files_have_the_released_layout(tmp_path):
    """The files of the parity tests below hold the released key structure (block indices aside)."""

    def structure(keys):
        return {re.sub(r"(blocks|layers)\.\d+\.", r"\1.*.", k) for k in keys}

    for variant in VARIANTS:
        reference.build_original(variant, tmp_path / "model.pt", seed=0)
        written = torch.load(tmp_path / "model.pt", weights_only=True)
        assert set(written) == {"model", "optimizer", "epoch"}
        assert structure(written["model"]) == structure(LAYOUTS[f"ZoeD_M12_{variant}"]), variant


def run_hf(model, images: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(images))
    result = {"predicted_depth": out.predicted_depth.numpy()}
    if out.domain_logits is not None:
        result["domain_logits"] = out.domain_logits.numpy()
    return result


@functools.cache
def compiled(config: ZoeDepthConfig):
    """One compiled forward per config: the files of this module share a handful of configs."""
    return jax.jit(ZoeDepthForDepthEstimation(config).apply)


def run_ours(model, variables, images: np.ndarray) -> dict[str, np.ndarray]:
    out = compiled(model.config)(variables, images.transpose(0, 2, 3, 1))
    result = {"predicted_depth": np.asarray(out.predicted_depth)}
    if out.domain_logits is not None:
        result["domain_logits"] = np.asarray(out.domain_logits)
    return result


def assert_parity(ours: dict, expected: dict) -> dict[str, float]:
    depth = expected["predicted_depth"]
    assert depth.std() / depth.mean() > 0.1, "degenerate reference depth"
    errors = {name: relative_error(ours[name], value) for name, value in expected.items()}
    assert max(errors.values()) <= FP32_RELATIVE, errors
    return errors


# (variant, router offset): NK is steered to each head in turn.
PARITY = [("N", 0.0), ("K", 0.0), ("NK", -50.0), ("NK", 50.0)]


@pytest.mark.parametrize("variant, offset", PARITY, ids=["N", "K", "NK-to-nyu", "NK-to-kitti"])
def test_original_file_matches_transformers(variant, offset, tmp_path):
    """(b) A `.pt` in the original layout, written from a re-drawn transformers model (LayerNorm eps 1e-6, as
    timm), loads with its variant and config detected and gives transformers' depth."""
    path = tmp_path / f"ZoeD_M12_{variant}.pt"
    hf_model = reference.build_original(variant, path, seed=0, logit_offset=offset)
    images = reference.test_images(1, *SIZE, seed=2)
    expected = run_hf(hf_model, images)
    model, variables = from_pretrained(path)
    assert model.config.backbone_config.layer_norm_eps == 1e-6
    assert oc_config.detect_variant(torch_state(path)) == variant
    ours = run_ours(model, variables, images)
    assert_parity(ours, expected)
    if variant == "NK":
        assert int(ours["domain_logits"].argmax()) == (1 if offset > 0 else 0)

    if variant != "N":
        return
    # Mutation: query and key swapped in one block's fused qkv, as a converter that split it wrongly would.
    state = torch.load(path, weights_only=True)
    qkv = state["model"]["core.core.pretrained.model.blocks.1.attn.qkv.weight"]
    q, k, v = qkv.chunk(3)
    state["model"]["core.core.pretrained.model.blocks.1.attn.qkv.weight"] = torch.cat([k, q, v])
    torch.save(state, tmp_path / "mutated.pt")
    mutated = run_ours(*from_pretrained(tmp_path / "mutated.pt"), images)
    assert relative_error(mutated["predicted_depth"], expected["predicted_depth"]) > 100 * FP32_RELATIVE


def torch_state(path: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True)["model"].items()}


def test_kitti_max_depth_80_option(tmp_path):
    """ZoeD_M12_K runs over 1e-3..10 m by default (the released quirk, what transformers does);
    kitti_max_depth_80=True gives transformers built with the KITTI evaluation's 80 m, on the same weights."""
    released = reference.build_original("K", tmp_path / "K.pt", seed=1)
    evaluated = reference.build_original("K", tmp_path / "K80.pt", seed=1, kitti_max_depth=80.0)
    images = reference.test_images(1, *SIZE, seed=3)
    model, variables = from_pretrained(tmp_path / "K.pt", variant="K")
    assert model.config.bin_configurations[0].max_depth == 10.0
    expected = run_hf(released, images)
    assert_parity(run_ours(model, variables, images), expected)
    model80, variables80 = from_pretrained(tmp_path / "K.pt", kitti_max_depth_80=True)
    assert model80.config.bin_configurations[0].max_depth == 80.0
    expected80 = run_hf(evaluated, images)
    assert_parity(run_ours(model80, variables80, images), expected80)
    assert relative_error(expected["predicted_depth"], expected80["predicted_depth"]) > 0.1  # the option matters
    explicit, explicit_variables = from_pretrained(tmp_path / "K.pt", config=model80.config)  # config= wins
    assert explicit.config == model80.config
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: bool((a == b).all()), explicit_variables, variables)
    )

    nyu = oc_config.original_config(stand_in(LAYOUTS["ZoeD_M12_N"]))
    with pytest.raises(ConfigError, match="only to the KITTI model"):
        oc_config.with_kitti_max_depth_80(nyu)
    with pytest.raises(CheckpointError, match=r"holds the ZoeD_M12_K layout, but variant='NK'"):
        from_pretrained(tmp_path / "K.pt", variant="NK")


def test_cli_converts_an_original_file(tmp_path):
    """`zoedepth-jax convert ZoeD_M12_NK.pt OUT` writes a folder that loads without torch and gives the same depth."""
    hf_model = reference.build_original("NK", tmp_path / "ZoeD_M12_NK.pt", seed=2)
    out = tmp_path / "nk-flax"
    assert cli_main(["convert", str(tmp_path / "ZoeD_M12_NK.pt"), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "flax_model.safetensors"]
    model, variables = from_pretrained(out)
    assert model.config.backbone_config.layer_norm_eps == 1e-6 and model.config.is_multi_domain
    images = reference.test_images(1, *SIZE, seed=2)
    assert_parity(run_ours(model, variables, images), run_hf(hf_model, images))


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    """(c) Neither the zip format nor a bare pickle gets to run its payload; plain unpickling would have."""
    marker = tmp_path / "payload-ran"
    torch.save({"model": {"core.core.pretrained.model.cls_token": Exploit(marker)}}, tmp_path / "zip.pt")
    with open(tmp_path / "legacy.pt", "wb") as f:
        pickle.dump({"model": Exploit(marker)}, f, protocol=2)  # torch's legacy format is protocol 2
    for name in ("zip.pt", "legacy.pt"):
        with pytest.raises(CheckpointError, match=rf"{name} could not be read safely and was refused as unsafe") as e:
            from_pretrained(tmp_path / name)
        assert "GLOBAL posix.system" in str(e.value) or "GLOBAL nt.system" in str(e.value)
        assert not marker.exists()
    with open(tmp_path / "legacy.pt", "rb") as f:
        pickle.load(f)  # the control: full unpickling runs the payload
    assert marker.exists()


def test_damaged_and_foreign_files_are_clear_errors(tmp_path):
    """(d) Truncated, empty, garbage and non-checkpoint files, each with a message that says what it is."""
    reference.build_original("N", tmp_path / "good.pt", seed=0)
    data = (tmp_path / "good.pt").read_bytes()
    cases = {
        "truncated.pt": (data[: len(data) // 2], "truncated or damaged"),
        "empty.pt": (b"", "not a PyTorch checkpoint: it is empty"),
        "text.pt": (b"<html>404 Not Found</html>", "not a PyTorch checkpoint"),
        "junk.pt": (b"\x80\x02junk that is no pickle", "truncated or damaged"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            from_pretrained(tmp_path / name)

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="one file of a checkpoint folder: pass the folder"):
        from_pretrained(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="apply to original .pt files"):
        from_pretrained(tmp_path, variant="N")

    state = torch_state(tmp_path / "good.pt")
    hf_layout = {"backbone.embeddings.cls_token": torch.zeros(1, 1, 48)}
    foreign = {
        "list.pt": ([torch.zeros(1)], "holds a list"),
        "no_model.pt": ({"epoch": 3, "optimizer": None}, "not tensors"),
        "hf.pt": (hf_layout, "transformers' layout"),
        "unknown_key.pt": (
            {
                "model": {
                    **{k: torch.from_numpy(v) for k, v in state.items()},
                    "core.core.mystery.weight": torch.ones(1),
                }
            },
            r"unexpected keys \(1\):\n    core\.core\.mystery\.weight",
        ),
    }
    for name, (content, message) in foreign.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(CheckpointError, match=message):
            from_pretrained(tmp_path / name)


def test_reading_a_pt_without_torch_says_what_to_install(tmp_path, monkeypatch):
    reference.build_original("N", tmp_path / "ZoeD_M12_N.pt", seed=0)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(CheckpointError, match=r"needs torch: pip install 'zoedepth-jax\[convert\]'"):
        from_pretrained(tmp_path / "ZoeD_M12_N.pt")
