"""The original ZoeDepth trainer's loss and optimizer in PyTorch, as the parity tests and the training benchmark
run them beside zoedepth-jax's: the SILog loss, and AdamW over the four parameter groups with the one-cycle
schedule.

Reference: isl-org ZoeDepth `trainers/loss.py` (`SILogLoss`) and `trainers/base_trainer.py` (`init_optimizer`,
`init_scheduler`); the groups are those of `zoedepth_jax.training.optimizer.parameter_group`, which names them
after the original's `get_lr_params`.
"""

from __future__ import annotations

import torch

from zoedepth_jax.training.config import TrainConfig
from zoedepth_jax.training.optimizer import GROUPS, group_learning_rates, parameter_group


def silog(prediction, target, mask, beta=0.15):
    """The original SILogLoss, written from its formula: resize the prediction to the target (bilinear, corners
    aligned), keep the valid pixels, g = log(p + 1e-7) - log(t + 1e-7), loss = 10 * sqrt(var(g) + beta * mean(g)^2)
    with torch's unbiased variance."""
    prediction = torch.nn.functional.interpolate(
        prediction[:, None], target.shape[-2:], mode="bilinear", align_corners=True
    )[:, 0]
    g = torch.log(prediction[mask] + 1e-7) - torch.log(target[mask] + 1e-7)
    return 10 * torch.sqrt(torch.var(g) + beta * torch.mean(g) ** 2)


def optimizer_and_scheduler(tensors: dict, config: TrainConfig):
    """The original trainer's AdamW and OneCycleLR over named tensors, keyed by parameter path: a tuple of names,
    as zoedepth-jax's tree paths or a transformers parameter name split at its dots. Groups without a tensor are
    left out."""
    rates = group_learning_rates(config)
    groups = [
        {"params": [t for name, t in tensors.items() if parameter_group(name) == g], "lr": rates[g]} for g in GROUPS
    ]
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        [g["lr"] for g in groups],
        total_steps=config.total_steps,
        cycle_momentum=config.cycle_momentum,
        base_momentum=config.base_momentum,
        max_momentum=config.max_momentum,
        div_factor=config.div_factor,
        final_div_factor=config.final_div_factor,
        pct_start=config.pct_start,
        three_phase=False,
    )
    return optimizer, scheduler
