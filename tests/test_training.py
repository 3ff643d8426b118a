"""Training: gradients against PyTorch's autograd through transformers, training mode (dropout, drop-path), a
training step, data-parallel steps over a CPU mesh, and Orbax train-state checkpoints: a run resumed from one is
bit-identical to an uninterrupted run, and a kill mid-save keeps the previous checkpoint."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
import torch
import torch_recipe
from PIL import Image
from safetensors.numpy import load_file
from tolerances import GRADIENT_RELATIVE

from zoedepth_jax import ZoeDepthImageProcessor, from_pretrained
from zoedepth_jax.domains import DOMAIN_LABELS
from zoedepth_jax.errors import CheckpointError
from zoedepth_jax.evaluation.folders import DATASETS
from zoedepth_jax.modeling.layers import traced_forms
from zoedepth_jax.training.checkpoint import StopSignal, TrainCheckpoints
from zoedepth_jax.training.config import TrainConfig
from zoedepth_jax.training.data import Augmentation, DepthDataset, make_loader
from zoedepth_jax.training.losses import silog_loss
from zoedepth_jax.training.step import batch_loss, create_train_state, make_train_step
from zoedepth_jax.weights import hf_names, trees
from zoedepth_jax.weights.trees import param_shapes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{variant: (transformers model, folder)} for the tiny re-drawn nyu and kitti checkpoints."""
    built = {}
    for seed, variant in enumerate(["nyu", "kitti"], start=3):
        folder = tmp_path_factory.mktemp(variant)
        built[variant] = (reference.build(variant, folder, seed=seed), folder)
    return built


def loss_inputs(batch: int, height: int, width: int, seed: int):
    """Images (NCHW, for torch), a positive target at another size than the prediction, and a mask."""
    rng = np.random.default_rng(seed)
    images = reference.test_images(batch, height, width, seed=seed)
    target = rng.uniform(0.5, 8.0, (batch, height + 16, width + 24)).astype(np.float32)
    mask = rng.uniform(size=target.shape) < 0.7
    return images, target, mask


@pytest.mark.parametrize("variant", ["nyu", "kitti"])
def test_gradients_match_pytorch(checkpoints, variant, tmp_path):
    """d SILog / d parameter for every parameter, against torch autograd through transformers (fp32, eval mode).

    torch's gradients are saved with save_pretrained (so they carry the serialized names) and converted with the
    weight converter: every conversion is a re-indexing (transpose, permutation), which maps a gradient exactly
    as it maps the weight. Parameters without a gradient are compared as sets, not skipped.
    """
    hf_model, folder = checkpoints[variant]
    images, target, mask = loss_inputs(2, 64, 96, seed=1)
    hf_model.zero_grad()
    prediction = hf_model(torch.from_numpy(images)).predicted_depth
    torch_loss = torch_recipe.silog(prediction, torch.from_numpy(target), torch.from_numpy(mask))
    torch_loss.backward()
    parameters = dict(hf_model.named_parameters())
    no_grad = {name for name, p in parameters.items() if p.grad is None}
    grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach() for name, p in parameters.items()}
    hf_model.save_pretrained(tmp_path, state_dict=grads)
    torch_grads = load_file(tmp_path / "model.safetensors")

    # The only parameters torch leaves without a gradient are the unused first fusion layer's residual_layer1,
    # which the converter ignores and our model does not have.
    unused = {name for name in torch_grads if name.startswith("neck.fusion_stage.layers.0.residual_layer1.")}
    assert len(unused) == 4 and len(no_grad) == 4
    model, variables = from_pretrained(folder)
    expected = hf_names.convert_hf_state_dict(torch_grads, model.config, param_shapes(model.config))
    expected = trees.flatten_params(expected)

    def loss_fn(params):
        output = model.apply({"params": params}, jnp.asarray(images.transpose(0, 2, 3, 1)))
        return silog_loss(output.predicted_depth, jnp.asarray(target), jnp.asarray(mask))

    loss, ours = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
    ours = trees.flatten_params(ours)
    assert float(loss) == pytest.approx(torch_loss.item(), rel=1e-5)
    assert set(ours) == set(expected)

    zero_ours = {name for name, g in ours.items() if not np.any(np.asarray(g))}
    zero_torch = {name for name, g in expected.items() if not np.any(g)}
    assert zero_ours == zero_torch, "the same parameters receive no gradient"
    errors = {}
    for name, g in ours.items():
        if name in zero_torch:
            continue
        g, reference_grad = np.asarray(g, np.float64), np.asarray(expected[name], np.float64)
        norm = np.linalg.norm(reference_grad)
        errors[name] = max(
            abs(np.linalg.norm(g) - norm) / norm, np.abs(g - reference_grad).max() / np.abs(reference_grad).max()
        )
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRADIENT_RELATIVE, f"{worst}: {errors[worst]:.2e}"
    assert len(errors) > 100  # every layer of the tiny model

    if variant == "kitti":
        # The normed attractor keeps only the first channel of each pair (the kept quirk): the other channel of
        # its last conv gets no gradient, in torch as here, and the kept one does.
        for i in range(4):
            kernel = f"metric_head/attractors_{i}/conv2/kernel"
            for side in (ours, expected):
                assert not np.any(np.asarray(side[kernel])[..., 1::2])
                assert np.any(np.asarray(side[kernel])[..., 0::2])


def with_rates(model, **rates):
    """The model with other BEiT dropout / drop-path rates."""
    backbone = dataclasses.replace(model.config.backbone_config, **rates)
    return model.clone(config=model.config.replace(backbone_config=backbone))


def without_dropout(model):
    return with_rates(model, drop_path_rate=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def test_training_mode(checkpoints):
    """Rates of 0: training mode computes exactly the inference path. Non-zero rates: training mode draws from
    the "dropout" rng (required; the same key gives the same result, another key another)."""
    model, variables = from_pretrained(checkpoints["nyu"][1])
    assert model.config.backbone_config.drop_path_rate == 0.1  # transformers' BeitConfig default
    images = jnp.asarray(reference.test_images(2, 64, 64, seed=2).transpose(0, 2, 3, 1))

    def forward(m, deterministic):  # one compile per (model, mode); the key is an argument
        return jax.jit(
            lambda key: m.apply(variables, images, deterministic=deterministic, rngs={"dropout": key}).predicted_depth
        )

    plain = without_dropout(model)
    key = jax.random.key(1)
    np.testing.assert_array_equal(forward(plain, False)(key), forward(plain, True)(key))
    noisy = with_rates(model, drop_path_rate=0.1, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    with pytest.raises(Exception, match="dropout"):  # flax: training mode without a "dropout" rng
        jax.eval_shape(lambda: noisy.apply(variables, images, deterministic=False))
    training_mode = forward(noisy, False)
    first = np.asarray(training_mode(key))
    np.testing.assert_array_equal(first, training_mode(jax.random.key(1)))
    assert np.abs(first - training_mode(jax.random.key(2))).max() > 1e-3


def copied(state):
    """A copy of `state` to step from: the train step donates the state it is given (its buffers are reused)."""
    return jax.tree_util.tree_map(jnp.copy, state)


@pytest.fixture(scope="module")
def training(checkpoints):
    """A model without dropout (so that a step's gradient is the loss's), a batch of 4 at 64x64, a config, the
    compiled step, and the state before and after one step."""
    model, variables = from_pretrained(checkpoints["nyu"][1])
    model = without_dropout(model)
    rng = np.random.default_rng(5)
    images = reference.test_images(4, 64, 64, seed=5).transpose(0, 2, 3, 1)
    rows = np.linspace(0, 1, 64, dtype=np.float32)[None, :, None]
    depth = 1.0 + 4.0 * rows + 0.5 * images.mean(axis=-1)  # meters: a floor receding upwards, plus texture
    batch = {
        "pixel_values": jnp.asarray(images),
        "depth": jnp.asarray(depth),
        "mask": jnp.asarray(rng.uniform(size=depth.shape) < 0.8),
    }
    config = TrainConfig(total_steps=10)
    step = make_train_step(model, config)
    state = create_train_state(model, variables, config)
    given = copied(state)
    after, metrics = step(given, batch, jax.random.key(0))
    second, second_metrics = step(copied(after), batch, jax.random.key(0))  # its loss is that of `after`'s params
    return dict(
        model=model,
        batch=batch,
        config=config,
        step=step,
        before=state,
        given=given,
        after=after,
        metrics=metrics,
        second=second,
        loss_after=second_metrics["loss"],
    )


def test_one_step_changes_every_parameter_and_lowers_the_loss(training):
    before, after, config = training["before"], training["after"], training["config"]
    assert int(after.step) == 1
    moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), before.params, after.params)
    assert all(jax.tree_util.tree_leaves(moved)), "a parameter did not move"
    # Without dropout, the loss a step reports is the deterministic loss of the parameters it starts from.
    metrics = training["metrics"]
    assert float(training["loss_after"]) < float(metrics["loss"])
    assert float(metrics["grad_norm"]) > config.clip_grad  # clipped: the step used a tenth of a unit norm
    assert float(metrics["learning_rate"]) == pytest.approx(config.learning_rate, rel=1e-6)  # div_factor 1


def test_the_step_reuses_the_buffers_of_the_state_it_is_given(training):
    """One copy of the state in memory, not two: the parameters and AdamW's moments passed in are donated to the
    new state (XLA may keep the scalar hyperparameters)."""
    arrays = [leaf for leaf in jax.tree_util.tree_leaves(training["given"]) if leaf.ndim]
    assert len(arrays) > 2 * len(jax.tree_util.tree_leaves(training["given"].params))
    assert all(leaf.is_deleted() for leaf in arrays)


def test_bfloat16_compute_keeps_fp32_parameters_and_losses(training):
    """Traced, not run (a second compile of the step would double this file's time): the model computes in
    bfloat16, while parameters, optimizer state and losses stay fp32."""
    config = dataclasses.replace(training["config"], compute_dtype="bfloat16")
    step = make_train_step(training["model"], config)
    arguments = (training["before"], training["batch"], jax.random.key(0))
    assert "bf16" in str(jax.make_jaxpr(step)(*arguments))
    state, metrics = jax.eval_shape(step, *arguments)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert all(metrics[name].dtype == jnp.float32 for name in ("loss", "silog", "grad_norm"))


def test_a_step_takes_the_forms_in_effect_where_it_is_built(training):
    """Steps are cached per model and config, and the forms are part of the key: a step built under the plain
    forms after the CPU one (the same model and config) is traced without the CPU forms' loops."""
    arguments = (training["before"], training["batch"], jax.random.key(0))
    loops = {}
    for forms in ("cpu", "plain"):
        with traced_forms(forms):
            step = make_train_step(training["model"], training["config"])
        loops[forms] = step.lower(*arguments).as_text().count("stablehlo.while")  # traced outside the block
    assert loops["plain"] < loops["cpu"] // 4, loops


def test_two_domain_loss_adds_the_weighted_cross_entropy(tmp_path):
    hf_model = reference.build("nyu-kitti", tmp_path, seed=6, logit_offset=50.0)  # routed to kitti
    model, variables = from_pretrained(tmp_path)
    images, target, mask = loss_inputs(2, 64, 64, seed=6)
    batch = {
        "pixel_values": jnp.asarray(images.transpose(0, 2, 3, 1)),
        "depth": jnp.asarray(target),
        "mask": jnp.asarray(mask),
        "domain": jnp.array([DOMAIN_LABELS["kitti"]] * 2),
    }
    config = TrainConfig.for_model(model.config, total_steps=10)
    assert config.domain_weight == 100 and config.midas_lr_factor == 10  # the NK recipe
    loss, parts = jax.jit(lambda params: batch_loss(model, params, batch, config, None))(variables["params"])
    assert float(loss) == pytest.approx(float(parts["silog"] + 100 * parts["domain_ce"]), rel=1e-6)
    with torch.no_grad():  # on transformers' forward: the original's SILog and nn.CrossEntropyLoss
        output = hf_model(torch.from_numpy(images))
        torch_silog_value = torch_recipe.silog(output.predicted_depth, torch.tensor(target), torch.tensor(mask)).item()
        torch_ce = torch.nn.functional.cross_entropy(output.domain_logits, torch.tensor([1, 1])).item()
    assert float(parts["silog"]) == pytest.approx(torch_silog_value, rel=1e-4)
    assert float(parts["domain_ce"]) == pytest.approx(torch_ce, rel=1e-4, abs=1e-6)
    without_labels = {name: value for name, value in batch.items() if name != "domain"}
    with pytest.raises(ValueError, match="domain"):
        jax.eval_shape(lambda params: batch_loss(model, params, without_labels, config, None), variables["params"])


def _states_equal(a, b) -> bool:
    return all(
        jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(x, y)), a, b))
    ) and jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)


def test_checkpoint_round_trip_and_resume(training, tmp_path):
    with TrainCheckpoints(tmp_path / "checkpoints") as checkpoints:
        checkpoints.save(1, training["after"], meta={"note": "one step"})
    checkpoints = TrainCheckpoints(tmp_path / "checkpoints")
    assert checkpoints.latest_step() == 1
    restored, meta = checkpoints.restore(1, training["before"])
    assert _states_equal(restored, training["after"]) and meta == {"note": "one step", "step": 1}
    # Training resumes exactly where it stopped.
    resumed, _ = training["step"](restored, training["batch"], jax.random.key(0))
    assert _states_equal(resumed, training["second"])
    # A state of another structure is refused, naming what differs.
    other = create_train_state(
        training["model"], {"params": training["before"].params}, TrainConfig(total_steps=10, clip_grad=0)
    )
    with pytest.raises(CheckpointError, match="does not fit"):
        checkpoints.restore(1, other)
    with pytest.raises(CheckpointError, match="no checkpoint of step 7"):
        checkpoints.restore(7, training["before"])
    checkpoints.close()


def _scenes(folder, count: int) -> Path:
    """64x64 pictures of a floor receding upwards, with their depth PNGs (millimetres)."""
    folder.mkdir()
    rows = np.linspace(0, 1, 64, dtype=np.float32)[:, None]
    for k in range(count):
        image = reference.photo_like(64, 64, seed=k)
        depth = np.broadcast_to(1.0 + 4.0 * rows, (64, 64)) + image.mean(axis=-1) / 255
        Image.fromarray(image).save(folder / f"{k}.png")
        Image.fromarray(np.rint(depth * 1000).astype(np.uint16)).save(folder / f"{k}_depth.png")
    return folder


@pytest.mark.slow  # the default suite checks the same through the finetune loop (test_finetune.py)
def test_a_resumed_run_is_bit_identical(training, tmp_path):
    """Steps 1..3 from batches of a Grain pipeline with augmentations, uninterrupted, and stopped after step 1
    (state and data position checkpointed), restored into fresh objects and continued: the same parameters,
    optimizer state and metrics at step 3, bit for bit."""
    dataset = DepthDataset.from_source(_scenes(tmp_path / "scenes", 6), DATASETS["nyu"])
    processor = ZoeDepthImageProcessor(do_pad=False, size=(64, 64), keep_aspect_ratio=False)
    augmentation = Augmentation(rotate_degrees=2.0)
    assert dataset.check(processor, augmentation) == (64, 64)  # the shapes the fixture's step is compiled for

    def loader():
        return make_loader(dataset, processor, batch_size=4, seed=7, augmentation=augmentation)

    def steps(state, iterator, count):
        state = copied(state)
        for _ in range(count):
            state, metrics = training["step"](state, next(iterator), jax.random.key(0))
        return state, metrics

    uninterrupted, metrics = steps(training["before"], iter(loader()), 3)
    iterator = iter(loader())
    stopped, _ = steps(training["before"], iterator, 1)
    with TrainCheckpoints(tmp_path / "run") as checkpoints:
        checkpoints.save(1, stopped, iterator)
    fresh_iterator = iter(loader())
    with TrainCheckpoints(tmp_path / "run") as checkpoints:
        restored, _ = checkpoints.restore(checkpoints.latest_step(), training["before"], fresh_iterator)
    resumed, resumed_metrics = steps(restored, fresh_iterator, 2)
    assert int(resumed.step) == 3
    assert _states_equal(resumed, uninterrupted)
    assert {k: float(v) for k, v in resumed_metrics.items()} == {k: float(v) for k, v in metrics.items()}


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from zoedepth_jax.training.checkpoint import TrainCheckpoints

    checkpoints = TrainCheckpoints(sys.argv[1])
    checkpoints.save(1, {"w": np.full((64, 64), 1.0, np.float32)})
    checkpoints.wait()
    checkpoints.save(2, {"w": np.full((512, 512, 16), 2.0, np.float32)})  # in the background
    os._exit(9)  # as SIGKILL or a power cut mid-write: no exception handler, no clean-up
    """
)


def test_killed_writer_keeps_the_previous_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert result.returncode == 9, result.stderr
    with TrainCheckpoints(tmp_path) as checkpoints:
        assert checkpoints.latest_step() == 1
        restored, _ = checkpoints.restore(1, {"w": np.zeros((64, 64), np.float32)})
    assert float(restored["w"].min()) == 1.0


def test_stop_signal_turns_sigterm_into_a_request():
    previous = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGTERM)  # the process lives on
        assert stop.requested()
    assert signal.getsignal(signal.SIGTERM) is previous


DATA_PARALLEL = textwrap.dedent(
    """
    import dataclasses, sys
    import jax, numpy as np
    from zoedepth_jax.training.checkpoint import TrainCheckpoints
    from zoedepth_jax.training.config import TrainConfig
    from zoedepth_jax.training.step import create_train_state, data_mesh, make_train_step
    from zoedepth_jax import ZoeDepthImageProcessor, from_pretrained

    folder, work = sys.argv[1], sys.argv[2]
    assert len(jax.devices()) == 4
    model, variables = from_pretrained(folder)
    backbone = dataclasses.replace(model.config.backbone_config, drop_path_rate=0.0)
    model = model.clone(config=model.config.replace(backbone_config=backbone))
    config = TrainConfig(total_steps=10)
    with TrainCheckpoints(work + "/before") as checkpoints:
        state, _ = checkpoints.restore(0, create_train_state(model, variables, config))
    batch = dict(np.load(work + "/batch.npz"))
    after, metrics = make_train_step(model, config, mesh=data_mesh())(state, batch, jax.random.key(0))
    assert after.params["metric_head"]["conv2"]["kernel"].sharding.is_fully_replicated
    with TrainCheckpoints(work + "/after") as checkpoints:
        checkpoints.save(1, after, meta={k: float(v) for k, v in metrics.items()})
    """
)


def test_data_parallel_step_matches_one_device(training, checkpoints, tmp_path):
    """The batch of 4 split over a 4-device CPU mesh: the same loss, gradient norm and update as on one device."""
    with TrainCheckpoints(tmp_path / "before") as saved:
        saved.save(0, training["before"])
    np.savez(tmp_path / "batch.npz", **{k: np.asarray(v) for k, v in training["batch"].items()})
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    result = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL, str(checkpoints["nyu"][1]), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with TrainCheckpoints(tmp_path / "after") as saved:
        sharded, metadata = saved.restore(1, training["before"])
    for name in ("loss", "silog", "grad_norm"):
        assert metadata[name] == pytest.approx(float(training["metrics"][name]), rel=1e-5), name
    sharded, single = _by_path(sharded), _by_path(training["after"])
    # AdamW's first moment after one step is (1 - beta1) x the clipped gradient: the gradients agree to fp32
    # rounding, summed in another order (the bound of the gradient parity test, for the same reason).
    for name in (n for n in single if "/mu/" in n):
        a, b = np.asarray(sharded[name], np.float64), np.asarray(single[name], np.float64)
        assert np.abs(a - b).max() <= GRADIENT_RELATIVE * np.abs(b).max(), name
    # The update divides by the gradient's magnitude, so a gradient within rounding of zero can move its
    # parameter differently (measured: 0.02% of the elements by more than 1e-6, none by more than 0.1 lr).
    differences = np.concatenate(
        [np.abs(np.asarray(sharded[n]) - np.asarray(single[n])).ravel() for n in single if n.startswith("params/")]
    )
    assert np.mean(differences > 1e-6) < 1e-3
    assert differences.max() <= training["config"].learning_rate


def _by_path(state) -> dict:
    """`{"params/backbone/.../kernel": array, ...}`: every leaf of a state by its path."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path): leaf
        for path, leaf in leaves
    }


def _env(**extra) -> dict:
    env = {name: value for name, value in os.environ.items() if name != "XLA_FLAGS"}
    return {**env, "PYTHONPATH": str(REPO), **extra}
