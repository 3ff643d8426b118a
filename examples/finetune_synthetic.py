"""Fine-tunes ZoeDepth on generated scenes and prints the loss going down.

    python examples/finetune_synthetic.py                      # a tiny random model: about a minute on a CPU
    python examples/finetune_synthetic.py --model ./zoedepth-nyu --height 384 --width 512 --batch-size 2

With --write-data DIR it writes the scenes as files instead, in the layout `zoedepth-jax finetune` and `eval`
read (DIR/train and DIR/val: `<k>.png` with `<k>_depth.png`, millimetres), and the tiny model as a checkpoint
folder (DIR/tiny-model, its processor making HEIGHTxWIDTH inputs), then stops:

    python examples/finetune_synthetic.py --write-data scenes
    zoedepth-jax finetune scenes/train --val scenes/val --model scenes/tiny-model --out runs/tiny \\
        --steps 200 --batch-size 4 --lr 1e-3
    zoedepth-jax predict scenes/val/0.png --model runs/tiny/final

Each scene is a floor receding to a horizon with a few upright boxes in front of it; the picture's brightness
falls with distance and each surface has its own tint and texture, so depth can be learned from the pixels.
The script shows the pieces of `zoedepth_jax.training`: a `TrainConfig` (the original recipe, here with a
higher learning rate for a model that starts from random weights), the jitted `train_step`, `jax.vmap` for a
per-image loss on held-out scenes, the evaluation metrics, and an Orbax train-state checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from zoedepth_jax import (
    BinConfiguration,
    ZoeDepthForDepthEstimation,
    ZoeDepthImageProcessor,
    from_pretrained,
    save_pretrained,
)
from zoedepth_jax.config import tiny_config
from zoedepth_jax.domains import DEPTH_RANGES
from zoedepth_jax.evaluation.metrics import average_metrics, compute_metrics
from zoedepth_jax.training.checkpoint import TrainCheckpoints
from zoedepth_jax.training.config import TrainConfig
from zoedepth_jax.training.losses import silog_loss
from zoedepth_jax.training.step import create_train_state, make_train_step

MAX_DEPTH = DEPTH_RANGES["nyu"][1]  # meters


def scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scene: an image `[H, W, 3]` in [-1, 1] (as the processor normalises) and its depth `[H, W]`."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    columns = np.arange(width, dtype=np.float32)[None, :]
    horizon = rng.uniform(0.2, 0.45) * height
    below = np.maximum(rows - horizon, 1.0)
    depth = np.broadcast_to(np.minimum(0.5 * height / below, MAX_DEPTH - 0.5), (height, width)).copy()
    tint = np.broadcast_to(rng.uniform(0.8, 1.0, 3), (height, width, 3)).copy()
    for _ in range(rng.integers(1, 4)):  # boxes standing on the floor: nearer ones are lower and larger
        distance = rng.uniform(1.0, 6.0)
        bottom = int(min(horizon + 0.5 * height / distance, height))
        size = int(0.6 * height / distance)
        left = int(rng.uniform(0, width - size / 2))
        top, right = max(bottom - size, 0), min(left + size // 2 + 1, width)
        depth[top:bottom, left:right] = distance
        tint[top:bottom, left:right] = rng.uniform(0.8, 1.0, 3)
    stripes = 0.1 * np.sin(columns / rng.uniform(2, 6) + rows / depth)[..., None]
    brightness = (1.5 / depth)[..., None] ** 0.5
    image = np.clip(tint * brightness + stripes + 0.05 * rng.standard_normal((height, width, 3)), 0, 1)
    return (2 * image - 1).astype(np.float32), depth.astype(np.float32)


def batch_of_scenes(rng: np.random.Generator, size: int, height: int, width: int) -> dict[str, jnp.ndarray]:
    images, depths = zip(*(scene(rng, height, width) for _ in range(size)), strict=True)
    depth = np.stack(depths)
    return {
        "pixel_values": jnp.asarray(np.stack(images)),
        "depth": jnp.asarray(depth),
        "mask": jnp.asarray((depth > 1e-3) & (depth < MAX_DEPTH)),
    }


def tiny_model() -> tuple[ZoeDepthForDepthEstimation, dict]:
    """A 4-layer, 48-wide ZoeDepth with the NYU head, randomly initialised."""
    config = tiny_config(bin_configurations=(BinConfiguration("nyu", 64, 1e-3, MAX_DEPTH),))
    # drop_path_rate 0, as the original trains (timm's BEiT default); transformers' configs say 0.1.
    config = config.replace(backbone_config=dataclasses.replace(config.backbone_config, drop_path_rate=0.0))
    model = ZoeDepthForDepthEstimation(config)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    return model, {"params": variables["params"]}


def write_data(folder: Path, height: int, width: int, train: int = 64, val: int = 8) -> None:
    """Scenes as image and 16-bit millimetre depth PNGs (`train` in folder/train, `val` in folder/val) and the
    tiny model with a processor for height x width images in folder/tiny-model."""
    for split, count, seed in (("train", train, 0), ("val", val, 1)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        for k in range(count):
            image, depth = scene(rng, height, width)
            Image.fromarray(np.rint((image + 1) * 127.5).astype(np.uint8)).save(folder / split / f"{k}.png")
            Image.fromarray(np.rint(depth * 1000).astype(np.uint16)).save(folder / split / f"{k}_depth.png")
    model, variables = tiny_model()
    save_pretrained(folder / "tiny-model", model, variables, overwrite=True)
    processor = ZoeDepthImageProcessor(size=(height, width))
    (folder / "tiny-model" / "preprocessor_config.json").write_text(json.dumps(processor.to_dict(), indent=2))
    print(f"{train} training and {val} validation scenes, and a tiny model, written to {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint to fine-tune (default: a tiny random model)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: 1e-3 from scratch, else 1.61e-4")
    parser.add_argument("--bfloat16", action="store_true", help="compute in bfloat16 (parameters stay fp32)")
    parser.add_argument("--out", help="write the final train state here (an Orbax checkpoint folder)")
    parser.add_argument("--write-data", type=Path, metavar="DIR", help="write scenes and the tiny model, then stop")
    args = parser.parse_args()
    if args.write_data:
        write_data(args.write_data, args.height, args.width)
        return

    model, variables = from_pretrained(args.model) if args.model else tiny_model()
    learning_rate = args.learning_rate or (1.61e-4 if args.model else 1e-3)
    config = TrainConfig.for_model(
        model.config,
        total_steps=args.steps,
        learning_rate=learning_rate,
        same_lr=not args.model,  # from scratch there is no pretrained encoder to protect
        compute_dtype="bfloat16" if args.bfloat16 else "float32",
    )
    state = create_train_state(model, variables, config)
    train_step = make_train_step(model, config)  # jitted: compiles on the first call

    # Held-out scenes, scored without dropout. jax.vmap maps the batch loss over images (each a batch of one).
    held_out = batch_of_scenes(np.random.default_rng(1), 8, args.height, args.width)

    @jax.jit
    def evaluate(params):
        depth = model.apply({"params": params}, held_out["pixel_values"]).predicted_depth
        per_image = jax.vmap(lambda p, t, m: silog_loss(p[None], t[None], m[None]))(
            depth, held_out["depth"], held_out["mask"]
        )
        return depth, per_image

    def report(step: int, seconds: float, train_loss: float | None) -> None:
        depth, per_image = evaluate(state.params)
        scores = [compute_metrics(t, p, 1e-3, MAX_DEPTH) for t, p in zip(held_out["depth"], depth, strict=True)]
        mean = average_metrics([s for s in scores if s is not None])
        train = "          " if train_loss is None else f"{train_loss:10.3f}"
        print(
            f"{step:5d}  {train}  {float(per_image.mean()):13.3f}  {mean['abs_rel']:8.3f}  {mean['delta1']:7.3f}"
            f"  {seconds:6.1f}"
        )

    print(f"{'step':>5}  {'train SILog':>10}  {'held-out SILog':>13}  {'abs_rel':>8}  {'delta1':>7}  {'time s':>6}")
    report(0, 0.0, None)
    data = np.random.default_rng(0)
    key = jax.random.key(0)  # dropout: train_step folds in the step number
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        state, metrics = train_step(state, batch_of_scenes(data, args.batch_size, args.height, args.width), key)
        if step % max(args.steps // 10, 1) == 0 or step == args.steps:
            report(step, time.perf_counter() - start, float(metrics["loss"]))
    if args.out:
        with TrainCheckpoints(args.out) as checkpoints:  # an Orbax checkpoint; the save finishes on close
            checkpoints.save(args.steps, state, meta={"model_config": model.config.to_dict()})
        print(f"train state written to {args.out}")


if __name__ == "__main__":
    main()
