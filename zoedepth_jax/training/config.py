"""Fine-tuning hyper-parameters: one frozen dataclass, defaulting to the original ZoeDepth recipe.

The defaults are the `train` section of isl-org ZoeDepth's `models/zoedepth/config_zoedepth.json` with the
common training settings of `utils/config.py`; `TrainConfig.for_model` switches to the ZoeD-NK recipe
(`config_zoedepth_nk.json`) for a two-domain model, and to Depth Anything's (its `metric_depth/zoedepth/models/
zoedepth/config_zoedepth.json`: every group but the head at a fiftieth of the learning rate) for a ZoeDepth head on
a DINOv2 backbone (transformers' ZoeDepth on DINOv2, Depth Anything V1 metric). Models without a ZoeDepth head
(Depth Anything V2) have no recipe here and are refused. Where the original counts epochs, this counts optimizer steps:
`total_steps` = epochs x batches per epoch.

Not carried over: the gradient loss (`w_grad`, 0 in every released recipe), freezing a group by a learning-rate
factor <= 0 or `train_midas=False` (factors must be positive here), the three-phase schedule, and the
original's fp16 autocast with loss scaling (`use_amp`, off by default); `compute_dtype="bfloat16"` is the
reduced-precision option here and needs no loss scaling. Dropout and drop-path come from the model's config:
transformers' BEiT configs carry `drop_path_rate=0.1`, while the original trained timm's BEiT with drop-path 0,
so set the backbone's `drop_path_rate` to 0 to reproduce the original exactly.
"""

from __future__ import annotations

import dataclasses

from zoedepth_jax.config import DepthAnythingConfig, Dinov2Config, ZoeDepthConfig
from zoedepth_jax.errors import ConfigError
from zoedepth_jax.modeling.zoedepth import COMPUTE_DTYPES


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune. Learning rates are per parameter group (see `optimization.parameter_group`): the
    metric head trains at `learning_rate`, the BEiT encoder (with the reassemble stage) at
    `learning_rate / encoder_lr_factor`, its relative-position tables at `learning_rate / pos_enc_lr_factor`,
    the rest of the DPT decoder at `learning_rate / midas_lr_factor`; `same_lr` puts everything at
    `learning_rate`.
    """

    total_steps: int
    learning_rate: float = 1.61e-4
    weight_decay: float = 0.01  # AdamW's decoupled decay, on every parameter (as torch's AdamW in the original)
    encoder_lr_factor: float = 10.0
    pos_enc_lr_factor: float = 10.0
    midas_lr_factor: float = 1.0  # 10 for ZoeD-NK
    same_lr: bool = False
    # torch's OneCycleLR as the original configures it (two phases, cosine annealing).
    div_factor: float = 1.0  # initial learning rate = peak / div_factor (1: the first phase is flat)
    final_div_factor: float = 1e4  # final learning rate = initial / final_div_factor
    pct_start: float = 0.7  # share of the steps spent reaching the peak
    cycle_momentum: bool = True  # AdamW's beta1 goes max_momentum -> base_momentum -> max_momentum
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    beta1: float = 0.9  # used only without cycle_momentum (torch's AdamW default)
    beta2: float = 0.999
    epsilon: float = 1e-8
    clip_grad: float = 0.1  # global gradient norm limit; 0 turns clipping off
    silog_weight: float = 1.0  # w_si
    silog_beta: float = 0.15
    domain_weight: float = 100.0  # w_domain: the router's cross-entropy, two-domain models only
    compute_dtype: str = "float32"  # or "bfloat16": backbone, neck and relative head; params and losses stay fp32

    def __post_init__(self):
        def fail(field: str, message: str):
            raise ConfigError(f"TrainConfig.{field} = {getattr(self, field)!r}: {message}")

        if not isinstance(self.total_steps, int) or self.total_steps < 2:
            fail("total_steps", "must be an integer of at least 2")
        warmup_end = self.pct_start * self.total_steps - 1
        if not 0 < warmup_end < self.total_steps - 1:
            fail("pct_start", f"pct_start * total_steps - 1 must lie in (0, {self.total_steps - 1}) (torch's phases)")
        for field in ("learning_rate", "encoder_lr_factor", "pos_enc_lr_factor", "midas_lr_factor", "div_factor"):
            if not getattr(self, field) > 0:
                fail(field, "must be positive")
        if self.compute_dtype not in COMPUTE_DTYPES:
            fail("compute_dtype", f"expected one of {tuple(COMPUTE_DTYPES)}")

    @classmethod
    def for_model(cls, config: ZoeDepthConfig, total_steps: int, **overrides) -> TrainConfig:
        """The original recipe for this model: ZoeD-N's for one domain, ZoeD-NK's (learning rate 2.512e-4, the
        decoder at a tenth of it) for two, Depth Anything's (encoder, position embeddings and decoder at a fiftieth
        of the head's 1.61e-4) on a DINOv2 backbone; `overrides` replace any field. A ConfigError for a model
        without a ZoeDepth head (`check_trainable`)."""
        check_trainable(config)
        if isinstance(config.backbone_config, Dinov2Config):
            recipe = dict(encoder_lr_factor=50.0, pos_enc_lr_factor=50.0, midas_lr_factor=50.0)
        elif config.is_multi_domain:
            recipe = dict(learning_rate=2.512e-4, midas_lr_factor=10.0)
        else:
            recipe = {}
        return cls(total_steps=total_steps, **{**recipe, **overrides})


def check_trainable(config: ZoeDepthConfig | DepthAnythingConfig) -> None:
    """A ConfigError unless `config` is a ZoeDepth model's (on BEiT or DINOv2, Depth Anything V1 metric included):
    fine-tuning trains the ZoeDepth recipe, its metric head and losses; a Depth Anything V2 model has no metric
    bins to train and no recipe here."""
    if isinstance(config, ZoeDepthConfig):
        return
    if isinstance(config, DepthAnythingConfig):
        raise ConfigError(
            f"fine-tuning a Depth Anything V2 model (DepthAnythingForDepthEstimation, {config.depth_estimation_type}) "
            "is not supported: fine-tuning trains ZoeDepth-head models (ZoeDepth on BEiT or DINOv2, Depth Anything V1 "
            "metric)"
        )
    raise ConfigError(f"fine-tuning trains ZoeDepth-head models, not a model of {type(config).__name__}")
