"""`finetune` end to end on the tiny model and generated scenes: a run, the same run stopped after step 1 and
resumed (bit-identical weights and metrics), `predict` on the result, bad data refused before any compute, and
(slow) a run over two local processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference
from PIL import Image
from safetensors.numpy import load_file
from test_nnx import random_variables

from zoedepth_jax import BinConfiguration, ZoeDepthForDepthEstimation, ZoeDepthImageProcessor, save_pretrained
from zoedepth_jax.cli import main
from zoedepth_jax.config import tiny_config
from zoedepth_jax.errors import ArgumentError, CheckpointError, ImageError
from zoedepth_jax.selfcheck import EXIT_INCOMPLETE
from zoedepth_jax.training.data import Augmentation
from zoedepth_jax.training.finetune import finetune


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny one-head model (random weights) whose processor makes 64x96 inputs."""
    folder = tmp_path_factory.mktemp("tiny")
    model = ZoeDepthForDepthEstimation(tiny_config(bin_configurations=(BinConfiguration("nyu", 64, 1e-3, 10.0),)))
    save_pretrained(folder, model, random_variables(model, (1, 64, 96, 3)))
    processor = ZoeDepthImageProcessor(size=(64, 96))
    (folder / "preprocessor_config.json").write_text(json.dumps(processor.to_dict()))
    return folder


def write_scenes(folder, count, seed=0, height=64, width=96):
    """Pictures with a floor receding upwards (1..5 m, plus texture) and their depth PNGs in millimetres."""
    folder.mkdir()
    rows = np.linspace(1, 0, height)[:, None]
    for k in range(count):
        image = reference.photo_like(height, width, seed=seed + k)
        depth = 1.0 + 4.0 * rows + image.mean(axis=-1) / 255
        Image.fromarray(image).save(folder / f"{k}.png")
        Image.fromarray(np.rint(depth * 1000).astype(np.uint16)).save(folder / f"{k}_depth.png")
    return folder


def _lines(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_finetune_resume_and_predict(tiny_checkpoint, tmp_path, capsys):
    train, val = write_scenes(tmp_path / "train", 6), write_scenes(tmp_path / "val", 2, seed=50)
    settings = dict(
        val=val,
        steps=4,
        batch_size=2,
        learning_rate=1e-3,
        eval_every=2,
        save_every=2,
        augmentation=Augmentation(rotate_degrees=2.0),
        progress=False,
    )
    whole = finetune(tiny_checkpoint, train, tmp_path / "whole", **settings)
    assert whole.step == 4 and not whole.stopped and whole.final == tmp_path / "whole" / "final"
    lines = _lines(tmp_path / "whole")
    assert [line["step"] for line in lines if "split" not in line] == [1, 2, 3, 4]
    assert [line["step"] for line in lines if line.get("split") == "val"] == [2, 4]
    assert lines[-1]["images"] == 2 and 0 <= lines[-1]["delta1"] <= 1
    assert whole.best_validation["abs_rel"] == min(line["abs_rel"] for line in lines if "split" in line)
    assert (tmp_path / "whole" / "best" / "flax_model.safetensors").is_file()

    # Stopped after step 1 (as a preemption; here through the command line, with the same settings), then run
    # again: it resumes and ends where the whole run ended.
    command = ["finetune", str(train), "--out", str(tmp_path / "resumed"), "--model", str(tiny_checkpoint)]
    command += ["--val", str(val), "--steps", "4", "--batch-size", "2", "--lr", "1e-3", "--rotate", "2"]
    command += ["--eval-every", "2", "--save-every", "2", "--no-progress"]
    capsys.readouterr()
    assert main([*command, "--stop-after", "1"]) == EXIT_INCOMPLETE  # not 0: a scheduler must see it unfinished
    assert "stopped after step 1" in capsys.readouterr().out
    assert not (tmp_path / "resumed" / "final").exists()
    resumed = finetune(tiny_checkpoint, train, tmp_path / "resumed", **settings)
    assert resumed.step == 4 and resumed.final is not None
    weights = load_file(whole.final / "flax_model.safetensors")
    resumed_weights = load_file(resumed.final / "flax_model.safetensors")
    assert weights.keys() == resumed_weights.keys()
    assert all(np.array_equal(weights[name], resumed_weights[name]) for name in weights)
    assert _lines(tmp_path / "resumed") == lines  # every loss, learning rate and validation metric
    assert not all(
        np.array_equal(weights[name], w) for name, w in load_file(tiny_checkpoint / "flax_model.safetensors").items()
    )

    # Other settings on a run's folder are refused before anything runs.
    with pytest.raises(CheckpointError, match="other settings \\(seed\\)"):
        finetune(tiny_checkpoint, train, tmp_path / "resumed", **{**settings, "seed": 1})

    # The result is a model folder predict loads, with the processor the training used.
    status = main(["predict", str(val / "0.png"), "--model", str(whole.final), "--out", str(tmp_path / "out")])
    assert status == 0, capsys.readouterr().err
    assert np.asarray(Image.open(tmp_path / "out" / "0_depth.png")).shape == (64, 96)


def test_bad_data_is_refused_before_the_model_loads(tmp_path, capsys):
    missing_model = tmp_path / "no_model_here"  # never read: the data fails first
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArgumentError, match="no \\(image, depth\\) pairs"):
        finetune(missing_model, tmp_path / "empty", tmp_path / "run")
    train = write_scenes(tmp_path / "train", 2)
    Image.fromarray(np.ones((32, 96), np.uint16)).save(train / "1_depth.png")
    with pytest.raises(ImageError, match="1_depth.png: the ground truth is 32x96"):
        finetune(missing_model, train, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert main(["finetune", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "no (image, depth) pairs" in capsys.readouterr().err


@pytest.mark.slow  # two processes compile the step side by side: minutes on a small CPU
def test_two_processes_train_validate_and_checkpoint(tiny_checkpoint, tmp_path):
    """`finetune --distributed` in two local processes (coordinator on localhost): each reads half of every
    batch and of the validation images, the step spans both, and the checkpoint holds both data positions."""
    train, val = write_scenes(tmp_path / "train", 4), write_scenes(tmp_path / "val", 2, seed=50)
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    run = tmp_path / "run"
    command = ["finetune", str(train), "--out", str(run), "--model", str(tiny_checkpoint), "--val", str(val)]
    command += ["--steps", "3", "--batch-size", "2", "--lr", "1e-3", "--eval-every", "2", "--save-every", "2"]
    command += ["--no-progress", "--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    repo = Path(__file__).resolve().parents[1]
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "PYTHONPATH": str(repo)}
    script = "import sys; from zoedepth_jax.cli import main; sys.exit(main(sys.argv[1:]))"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, *command, "--process-id", str(index)],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [process.communicate(timeout=1200)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    lines = _lines(run)
    assert [line["step"] for line in lines if "split" not in line] == [1, 2, 3]
    assert [(line["step"], line["images"]) for line in lines if "split" in line] == [(2, 2), (3, 2)]
    assert sorted(p.name for p in (run / "checkpoints" / "3" / "data").iterdir()) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
    assert (run / "final" / "flax_model.safetensors").is_file()
