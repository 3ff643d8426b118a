"""Checkpoint reading, conversion accounting, save/load round trip and hub-id resolution from a cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
import reference
from hub_cache import lay_out_hub_cache
from safetensors.numpy import load_file, save_file

from zoedepth_jax import CheckpointError, ConfigError, ZoeDepthConfig, from_pretrained, save_pretrained
from zoedepth_jax.errors import ConfigWarning

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nk_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nk")
    reference.build("nyu-kitti", folder, seed=3)
    return folder


def small_input():
    return reference.test_images(1, 96, 128, seed=1).transpose(0, 2, 3, 1)


def copy_checkpoint(src: Path, dst: Path, edit=None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = load_file(src / "model.safetensors")
    if edit:
        edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    return dst


def test_every_source_key_and_target_is_accounted_for(nk_folder, tmp_path):
    def drop_and_add(tensors):
        del tensors["neck.convs.2.weight"]
        tensors["neck.convs.9.weight"] = np.zeros((1, 1, 1, 1), np.float32)
        tensors["relative_head.conv3.bias"] = np.zeros((7,), np.float32)

    folder = copy_checkpoint(nk_folder, tmp_path / "bad", drop_and_add)
    with pytest.raises(CheckpointError) as info:
        from_pretrained(folder)
    message = str(info.value)
    assert "neck.convs.9.weight" in message and "unexpected keys (1)" in message
    assert "relative_head.conv3.bias: (7,)" in message and "mis-shaped keys (1)" in message
    assert "neck/convs_2/kernel" in message and "missing parameters (2)" in message  # the mis-shaped one too


def test_truncated_and_garbage_files_are_clear_errors(nk_folder, tmp_path):
    folder = copy_checkpoint(nk_folder, tmp_path / "truncated")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        from_pretrained(folder)


def test_config_errors_name_the_field(nk_folder, tmp_path):
    raw = json.loads((nk_folder / "config.json").read_text())
    for edit, field in [
        ({"bin_centers_type": "hybrid2"}, "bin_centers_type"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"backbone_config": dict(raw["backbone_config"], model_type="swin")}, "model_type"),  # no such backbone here
        ({"backbone_config": dict(raw["backbone_config"], use_absolute_position_embeddings=True)}, "use_absolute"),
    ]:
        with pytest.raises(ConfigError, match=field):
            ZoeDepthConfig.from_dict(dict(raw, **edit))


def test_unknown_config_fields_load_with_one_warning_and_are_kept(nk_folder, tmp_path):
    """As transformers does: a field this implementation does not know (one transformers' own ZoeDepth tests write,
    one a newer version might add) does not stop loading; one warning lists them, and they are written back."""
    raw = json.loads((nk_folder / "config.json").read_text())
    raw["num_out_features"] = [64, 64]
    raw["backbone_config"] = dict(raw["backbone_config"], future_bookkeeping={"a": 1})
    folder = copy_checkpoint(nk_folder, tmp_path / "extra_keys")
    (folder / "config.json").write_text(json.dumps(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, variables = from_pretrained(folder)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    assert len(messages) == 1, messages
    assert "config.num_out_features" in messages[0] and "backbone_config.future_bookkeeping" in messages[0]
    saved = json.loads((save_pretrained(tmp_path / "saved", model, variables) / "config.json").read_text())
    assert saved["num_out_features"] == [64, 64] and saved["backbone_config"]["future_bookkeeping"] == {"a": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        ZoeDepthConfig.from_dict(json.loads((nk_folder / "config.json").read_text()))  # known fields: no warning


def test_config_round_trips(nk_folder):
    raw = json.loads((nk_folder / "config.json").read_text())
    config = ZoeDepthConfig.from_dict(raw)
    assert ZoeDepthConfig.from_dict(json.loads(config.to_json_string())) == config
    written = json.loads(config.to_json_string())
    assert written["backbone_config"]["out_features"] == raw["backbone_config"]["out_features"]
    assert written["bin_configurations"] == raw["bin_configurations"]


def test_save_pretrained_round_trip(nk_folder, tmp_path):
    model, variables = from_pretrained(nk_folder)
    out = save_pretrained(tmp_path / "flax", model, variables)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "flax_model.safetensors"]
    with pytest.raises(FileExistsError):
        save_pretrained(out, model, variables)
    reloaded, reloaded_variables = from_pretrained(out)
    assert reloaded.config == model.config
    x = small_input()
    np.testing.assert_array_equal(
        reloaded.apply(reloaded_variables, x).predicted_depth, model.apply(variables, x).predicted_depth
    )


def test_sharded_safetensors(nk_folder, tmp_path):
    tensors = load_file(nk_folder / "model.safetensors")
    names = sorted(tensors)
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(nk_folder / "config.json", folder / "config.json")
    weight_map = {}
    for i, part in enumerate([names[::2], names[1::2]]):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, folder / shard)
        weight_map.update({n: shard for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    model, variables = from_pretrained(folder)
    _, direct = from_pretrained(nk_folder)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool((a == b).all()), variables, direct))


def test_pytorch_bin_is_read_safely(nk_folder, tmp_path):
    torch = pytest.importorskip("torch")
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(nk_folder / "config.json", folder / "config.json")
    state = {k: torch.from_numpy(v.copy()) for k, v in load_file(nk_folder / "model.safetensors").items()}
    torch.save(state, folder / "pytorch_model.bin")
    _, variables = from_pretrained(folder)
    _, direct = from_pretrained(nk_folder)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool((a == b).all()), variables, direct))

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"neck.convs.0.weight": Exploit()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="could not be read safely"):
        from_pretrained(folder)
    assert not marker.exists()


def test_hub_id_resolves_offline_from_the_cache(nk_folder, tmp_path):
    cache = tmp_path / "hub"
    lay_out_hub_cache(cache, "Intel/zoedepth-nyu-kitti", nk_folder)
    script = (
        "import sys, numpy as np\n"
        "from zoedepth_jax import from_pretrained\n"
        "model, variables = from_pretrained('Intel/zoedepth-nyu-kitti')\n"
        "x = np.load(sys.argv[1])\n"
        "np.save(sys.argv[2], np.asarray(model.apply(variables, x).predicted_depth))\n"
        "try:\n"
        "    from_pretrained('Intel/zoedepth-kitti')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    np.save(tmp_path / "x.npy", small_input())
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    model, variables = from_pretrained(nk_folder)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model.apply(variables, small_input()).predicted_depth)
    assert "CheckpointError" in result.stdout and "Intel/zoedepth-kitti" in result.stdout


def test_library_imports_and_loads_without_torch(nk_folder, tmp_path):
    model, variables = from_pretrained(nk_folder)
    save_pretrained(tmp_path / "flax", model, variables)
    script = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # any import of torch now fails
        "sys.modules['transformers'] = None\n"
        "import numpy as np, zoedepth_jax\n"
        "from zoedepth_jax import from_pretrained\n"
        "model, variables = from_pretrained(sys.argv[1])\n"
        "print(model.apply(variables, np.zeros((1, 64, 64, 3), np.float32)).predicted_depth.shape)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "flax")], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "(1, 64, 64)" in result.stdout
