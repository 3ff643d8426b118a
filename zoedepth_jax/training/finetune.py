"""Fine-tuning on your own data, from a folder of photos with depth to a model folder `predict` loads.

    from zoedepth_jax.training.finetune import finetune
    result = finetune("Intel/zoedepth-nyu", train="my_photos/", val="my_val/", out="runs/kitchen", steps=2000)
    # runs/kitchen/final: the fine-tuned model (zoedepth-jax predict --model runs/kitchen/final)

What a run does, and leaves in its folder (RUN_DIR):
  checks   every (image, depth) pair of the train and validation data is opened and checked first (`training.data`):
           bad data is an error before the model is loaded.
  trains   `steps` optimizer steps (the length of the one-cycle schedule) of the original recipe (`TrainConfig`),
           on batches of the Grain pipeline with the original augmentations, data-parallel over the local devices
           (and over processes, after `jax.distributed.initialize`). A tqdm bar shows the loss and learning rate.
  logs     RUN_DIR/metrics.jsonl: one JSON line per step ({"step", "loss", "silog", "grad_norm",
           "learning_rate"}) and per validation ({"step", "split": "val", delta1 ... silog, "images"}); the same
           to TensorBoard under RUN_DIR/tensorboard when tensorboardX (or torch's writer with tensorboard) imports.
  validates every `eval_every` steps and at the end, with `zoedepth-jax eval`'s metrics and code (the estimator with
           flip averaging, `metrics.compute_metrics`, the dataset preset's range and crop), means over images.
  keeps    RUN_DIR/checkpoints: Orbax checkpoints (train state + data position) every `save_every` steps and at
           the end, the last `keep` of them; RUN_DIR/best: the weights of the best validation abs_rel so far
           (`save_pretrained`, with preprocessor_config.json and metrics.json); RUN_DIR/final: the weights at the end.
  resumes  run again on a RUN_DIR holding a checkpoint to continue from its last one: the result is bit-identical
           to an uninterrupted run with the same settings (the same batches, dropout and updates). Settings that
           would change it (steps, batch size, seed, learning rate, data) are checked against the checkpoint.
  stops    after step `stop_after` with a checkpoint, as a preemption would; SIGTERM does the same at the next step.

The image processor is the checkpoint's (its preprocessor_config.json) or the released one; it is copied beside
the saved weights, so `predict` prepares images as the training did.

On Linux, `zoedepth-jax finetune` first calls `host_memory.retain_freed_memory()`, so that the steps reuse their
host buffers instead of faulting them in afresh each step; a script that calls `finetune` calls it at its top.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import sys
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoedepth_jax.domains import DOMAIN_LABELS
from zoedepth_jax.errors import ArgumentError, CheckpointError
from zoedepth_jax.evaluation.folders import DATASETS, evaluate_pairs
from zoedepth_jax.evaluation.metrics import METRIC_NAMES
from zoedepth_jax.inference.estimator import DepthEstimator, released_processor
from zoedepth_jax.inference.processor import ZoeDepthImageProcessor
from zoedepth_jax.modeling.zoedepth import ZoeDepthForDepthEstimation
from zoedepth_jax.training.checkpoint import StopSignal, TrainCheckpoints
from zoedepth_jax.training.config import TrainConfig
from zoedepth_jax.training.data import Augmentation, DepthDataset, make_loader
from zoedepth_jax.training.step import create_train_state, data_mesh, make_train_step
from zoedepth_jax.weights import trees
from zoedepth_jax.weights.dtypes import cast_to_compute_dtype
from zoedepth_jax.weights.loading import from_pretrained, save_pretrained
from zoedepth_jax.weights.resolve import PREPROCESSOR_CONFIG_NAME, resolve

BEST_METRIC = "abs_rel"  # lower is better; the original trainer keeps its best checkpoint by it too
# Settings a resumed run must share with the checkpoint, or it would not continue the same run.
RUN_SETTINGS = ("steps", "batch_size", "seed", "learning_rate", "dtype", "train_data", "augmentation")


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """Where a run ended: its last step, whether it stopped early (`stop_after`, SIGTERM), the final model
    folder (None when stopped early), and the last and best validation metrics (None without validation)."""

    run_dir: Path
    step: int
    stopped: bool
    final: Path | None
    last_validation: dict | None
    best_validation: dict | None


def finetune(
    model: str | os.PathLike,
    train: str | os.PathLike,
    out: str | os.PathLike,
    *,
    val: str | os.PathLike | None = None,
    steps: int = 1000,
    batch_size: int = 16,
    learning_rate: float | None = None,
    dtype: str = "float32",
    seed: int = 0,
    dataset: str = "nyu",
    depth_scale: float | None = None,
    domain: str | None = None,
    augmentation: Augmentation | None = None,
    eval_every: int | None = None,
    save_every: int | None = None,
    stop_after: int | None = None,
    keep: int = 3,
    val_flip: bool = True,
    worker_count: int = 0,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tunes `model` (a hub id, a checkpoint folder or an original `.pt`, anything `from_pretrained` reads, of
    a ZoeDepth-head model: on BEiT or DINOv2, Depth Anything V1 metric included; a Depth Anything V2 model is a
    ConfigError before anything is compiled) on `train` (a folder of `<name>` + `<name>_depth.png`, or a list
    file; see `evaluation.pairs`), writing into `out` (see the module docstring). Re-running on an `out` with a
    checkpoint resumes it.

    steps: the schedule's length in optimizer steps. batch_size: images per step over all devices and
    processes (the original's 16). learning_rate: the head's peak rate (default: the original recipe's for the
    model, `TrainConfig.for_model`). dtype: "float32" or "bfloat16" compute (parameters stay fp32).
    dataset: "nyu" or "kitti", the presets of `zoedepth-jax eval`: ground-truth PNG scale (`depth_scale`
    overrides it), valid depth range, validation crop, and the augmentation's brightness range.
    domain: for a two-domain model (nyu-kitti), the domain the training data belongs to ("nyu" or "kitti"; the
    router trains on it); default: `dataset`. augmentation: default `Augmentation.for_dataset(dataset)`.
    eval_every / save_every: in steps (default: a quarter of the run, the original's validation interval, and
    the same for checkpoints). stop_after: end after this step with a checkpoint (a later run resumes).
    val_flip: validation averages with the mirrored image's prediction, as `zoedepth-jax eval` does by default.
    worker_count: Grain worker processes for the training data (0: in this process); fixed for a run.
    """
    run_dir = Path(out)
    if dataset not in DATASETS:
        raise ArgumentError(f"dataset = {dataset!r}: expected one of {sorted(DATASETS)}")
    settings = DATASETS[dataset]
    if depth_scale is not None:
        settings = dataclasses.replace(settings, depth_scale=depth_scale)
    augmentation = augmentation if augmentation is not None else Augmentation.for_dataset(dataset)
    eval_every = eval_every or max(steps // 4, 1)
    save_every = save_every or max(steps // 4, 1)
    if stop_after is not None and not 1 <= stop_after <= steps:
        raise ArgumentError(f"stop_after must be a step in 1..{steps}, got {stop_after}")

    # Data first: every file is checked before the model is loaded or anything compiled.
    train_data = DepthDataset.from_source(train, settings)
    val_data = DepthDataset.from_source(val, settings) if val is not None else None
    for data in (train_data, val_data):
        if data is not None:
            data.check_files()

    loaded, variables = from_pretrained(model)
    processor = _processor_of(model, loaded)
    config = TrainConfig.for_model(
        loaded.config,
        total_steps=steps,
        compute_dtype=dtype,
        **({} if learning_rate is None else {"learning_rate": learning_rate}),
    )
    if loaded.config.is_multi_domain:
        domain = domain or dataset
        if domain not in DOMAIN_LABELS:
            raise ArgumentError(f"domain = {domain!r}: expected one of {sorted(DOMAIN_LABELS)}")
        train_data = dataclasses.replace(train_data, domain=DOMAIN_LABELS[domain])
    size = train_data.check(processor, augmentation)
    local_batch = _local_batch_size(batch_size)

    run = {
        "model": str(model),
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "learning_rate": config.learning_rate,
        "dtype": dtype,
        "train_data": repr(train_data),
        "augmentation": repr(augmentation),
        "image_size": list(size),
    }
    devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    mesh = data_mesh(devices)
    state = create_train_state(loaded, variables, config)
    train_step = make_train_step(loaded, config, mesh=mesh)
    loader = make_loader(train_data, processor, local_batch, seed, augmentation, worker_count=worker_count)
    iterator = iter(loader)
    rng = jax.random.key(seed)

    first_process = jax.process_index() == 0
    if first_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = TrainCheckpoints(run_dir / "checkpoints", keep=keep)
    best = last_validation = None
    start = checkpoints.latest_step()
    if start is not None:
        try:
            saved = checkpoints.meta(start).get("run", {})
            changed = [name for name in RUN_SETTINGS if saved.get(name) != run[name]]
            if changed:
                raise CheckpointError(
                    f"{run_dir} holds a run with other settings ({', '.join(changed)}): resuming would not "
                    f"continue it; use another output folder, or the same settings (saved: {saved})"
                )
            state, meta = checkpoints.restore(start, state, iterator)
        except BaseException:
            checkpoints.close()
            raise
        best, last_validation = meta.get("best"), meta.get("last_validation")
    start = start or 0
    log = _Log(run_dir, start, enabled=first_process)

    validator = None
    if val_data is not None:
        estimator = _validation_estimator(loaded, json.dumps(processor.to_dict()), val_flip)
        validator = _Validator(estimator, val_data)

    def checkpoint(step: int) -> None:
        checkpoints.save(step, state, iterator, meta={"run": run, "best": best, "last_validation": last_validation})

    step = start
    stopped = False
    metrics = {}
    bar = _progress_bar(steps, start, progress and first_process)
    try:
        with StopSignal() as stop_signal:
            while step < steps:
                state, metrics = train_step(state, next(iterator), rng)
                step += 1
                record = {name: float(value) for name, value in metrics.items()}
                log.write({"step": step, **record})
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['learning_rate']:.3g}")
                if validator is not None and (step % eval_every == 0 or step == steps):
                    last_validation = validator(state.params)
                    log.write({"step": step, "split": "val", **last_validation})
                    if best is None or last_validation[BEST_METRIC] < best[BEST_METRIC]:
                        best = {"step": step, **last_validation}
                        _export(run_dir / "best", loaded, state.params, processor, best, first_process)
                if step == steps:
                    break
                stop = (stop_after is not None and step >= stop_after) or stop_signal.requested()
                if stop or step % save_every == 0:
                    checkpoint(step)
                if stop:
                    stopped = True
                    break
            if not stopped:
                if step != start:  # a finished run, run again, has its last checkpoint already
                    checkpoint(step)
                _export(run_dir / "final", loaded, state.params, processor, last_validation, first_process)
    finally:
        bar.close()
        checkpoints.close()
        log.close()
    final = None if stopped else run_dir / "final"
    return FinetuneResult(run_dir, step, stopped, final, last_validation, best)


def _processor_of(model: str | os.PathLike, loaded: ZoeDepthForDepthEstimation) -> ZoeDepthImageProcessor:
    """The checkpoint's image processor (its preprocessor_config.json), else the released settings."""
    source = resolve(model)
    if source.is_dir() and (source / PREPROCESSOR_CONFIG_NAME).is_file():
        return ZoeDepthImageProcessor.from_json_file(source / PREPROCESSOR_CONFIG_NAME)
    return released_processor(loaded)


def _local_batch_size(batch_size: int) -> int:
    """This process's share of the global batch, a multiple of its device count."""
    processes, devices = jax.process_count(), len(jax.local_devices())
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size % (processes * devices):
        raise ArgumentError(
            f"batch_size {batch_size!r} must be a multiple of the {processes * devices} devices "
            f"({processes} process(es) x {devices} device(s)): each device takes an equal share"
        )
    return batch_size // processes


def _export(folder: Path, model, params, processor, metrics: dict | None, first_process: bool) -> None:
    """`save_pretrained` of `params` (the weights `from_pretrained` and `predict` read), with the processor's
    preprocessor_config.json and the validation metrics (metrics.json), replacing what the folder held."""
    params = _host_local(params)
    if not first_process:
        return
    save_pretrained(folder, model, {"params": params}, overwrite=True)
    (folder / PREPROCESSOR_CONFIG_NAME).write_text(json.dumps(processor.to_dict(), indent=2) + "\n")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


@functools.lru_cache(maxsize=2)
def _validation_estimator(model, processor_json: str, flip: bool) -> DepthEstimator:
    """The estimator validation runs (its parameters are set at each validation). Cached, so that runs of the
    same model in one process (a run and its resumption, say) share its compiled forward pass."""
    shapes = trees.param_shapes(model.config)
    placeholder = jax.tree_util.tree_map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), shapes)
    processor = ZoeDepthImageProcessor.from_dict(json.loads(processor_json))
    estimator = DepthEstimator(model, {"params": placeholder}, processor=processor, flip=flip)
    estimator.variables = None  # set by each validation
    return estimator


def _host_local(params):
    """Replicated parameters as arrays of this process (in a multi-process run they span every process)."""
    return jax.tree_util.tree_map(lambda x: x if x.is_fully_addressable else x.addressable_data(0), params)


class _Validator:
    """The validation metrics of parameters: `zoedepth-jax eval`'s, over this process's share of the pairs,
    averaged over every image of every process."""

    def __init__(self, estimator: DepthEstimator, data: DepthDataset):
        self.estimator = estimator
        self.settings = data.settings
        self.pairs = list(data.pairs)[jax.process_index() :: jax.process_count()]
        self.replicated = NamedSharding(Mesh(np.asarray(estimator.devices), ("data",)), PartitionSpec())

    def __call__(self, params) -> dict:
        variables = cast_to_compute_dtype(self.estimator.model, {"params": _host_local(params)})
        self.estimator.variables = jax.device_put(variables, self.replicated)
        results = evaluate_pairs(self.estimator, self.pairs, self.settings)
        scored = [r.metrics for r in results if r.metrics is not None]
        sums = np.array([[sum(m[name] for m in scored) for name in METRIC_NAMES] + [len(scored)]], np.float64)
        if jax.process_count() > 1:
            sums = multihost_utils.process_allgather(sums, tiled=True)
        total = sums.sum(axis=0)
        if total[-1] == 0:
            raise ArgumentError("no validation image could be scored (no valid ground truth in range and crop)")
        errors = [r.error for r in results if r.error]
        if errors:
            raise ArgumentError(f"validation data could not be read: {errors[0]}")
        return {**{name: float(total[k] / total[-1]) for k, name in enumerate(METRIC_NAMES)}, "images": int(total[-1])}


class _Log:
    """metrics.jsonl (and TensorBoard when it imports), written by the first process. On resume, lines past
    the checkpoint's step (written after it, before the run stopped) are dropped, so the file reads as one run."""

    def __init__(self, run_dir: Path, start: int, enabled: bool):
        self.enabled = enabled
        self.file = self.tensorboard = None
        if not enabled:
            return
        path = run_dir / "metrics.jsonl"
        kept = []
        if path.is_file():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= start]
        path.write_text("".join(line + "\n" for line in kept))
        self.file = path.open("a")
        self.tensorboard = _tensorboard_writer(run_dir / "tensorboard")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            prefix = "val/" if record.get("split") == "val" else "train/"
            for name, value in record.items():
                if name not in ("step", "split"):
                    self.tensorboard.add_scalar(prefix + name, value, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard_writer(folder: Path):
    """A SummaryWriter from tensorboardX, or torch's when tensorboard is installed; None when neither is."""
    if importlib.util.find_spec("tensorboardX") is not None:
        from tensorboardX import SummaryWriter

        return SummaryWriter(str(folder))
    if importlib.util.find_spec("tensorboard") is not None and importlib.util.find_spec("torch") is not None:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(folder))
    return None


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
