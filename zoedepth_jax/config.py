"""Model configuration: frozen dataclasses read from, and written back to, Hugging Face `config.json`.

The Intel checkpoints (`Intel/zoedepth-nyu`, `-kitti`, `-nyu-kitti`) store a ZoeDepth config with a nested
BEiT `backbone_config`. Every field is sorted into one of three kinds:

* fields this implementation reads (validated; an unsupported value is a `ConfigError` naming the field);
* bookkeeping fields that do not change the network (`architectures`, `id2label`, generation defaults that
  transformers v4 wrote into every config, ...): kept verbatim so that `to_dict` writes them back;
* anything else (a key a newer transformers writes, or one a test setup adds, such as `num_out_features`): kept
  and written back too, with one `ConfigWarning` that lists them, since transformers loads such configs.

A field this implementation reads with a value it does not implement is a `ConfigError`: nothing runs a
network other than the one the config describes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any

from zoedepth_jax.errors import ConfigError, ConfigWarning

# Fields that PreTrainedConfig (transformers v4 and v5) serialises for every model. None changes the network.
_GENERIC_FIELDS = frozenset(
    """
    _name_or_path _attn_implementation_autoset _commit_hash add_cross_attention architectures bad_words_ids
    begin_suppress_tokens bos_token_id chunk_size_feed_forward cross_attention_hidden_size decoder_start_token_id
    diversity_penalty do_sample dtype early_stopping encoder_no_repeat_ngram_size eos_token_id
    exponential_decay_length_penalty finetuning_task forced_bos_token_id forced_eos_token_id id2label
    initializer_range is_decoder is_encoder_decoder label2id length_penalty max_length min_length
    no_repeat_ngram_size num_beam_groups num_beams num_return_sequences output_attentions output_hidden_states
    output_scores pad_token_id prefix problem_type pruned_heads remove_invalid_values repetition_penalty
    return_dict return_dict_in_generate sep_token_id suppress_tokens task_specific_params temperature
    tf_legacy_loss tie_encoder_decoder tie_word_embeddings tokenizer_class top_k top_p torch_dtype torchscript
    transformers_version typical_p use_bfloat16 model_type
    """.split()
)

# BEiT fields that only configure heads ZoeDepth never builds (classification, segmentation, masked modelling).
_BEIT_UNUSED_FIELDS = frozenset(
    """
    auxiliary_channels auxiliary_concat_input auxiliary_loss_weight auxiliary_num_convs pool_scales
    semantic_loss_ignore_index use_auxiliary_head vocab_size use_mean_pooling stage_names out_features
    """.split()
)

# ZoeDepth fields that transformers writes but that carry no architecture of their own.
_ZOEDEPTH_UNUSED_FIELDS = frozenset("backbone_hidden_size use_pretrained_backbone use_timm_backbone".split())

# Fields that must hold exactly this value: the only one the released checkpoints use and this code implements.
_BEIT_REQUIRED = {
    "use_absolute_position_embeddings": False,
    "use_shared_relative_position_bias": False,
    "use_relative_position_bias": True,
    "use_mask_token": False,
    "add_fpn": False,
    "reshape_hidden_states": False,
    "hidden_act": "gelu",
    "num_channels": 3,
}
_ZOEDEPTH_REQUIRED = {
    "backbone": None,
    "backbone_kwargs": None,
    "hidden_act": "gelu",
    "use_batch_norm_in_fusion_residual": False,
    "add_projection": False,
}


def _check_required(raw: dict, required: dict, where: str) -> None:
    for name, expected in required.items():
        if name in raw and raw[name] != expected:
            raise ConfigError(
                f"{where}.{name} = {raw[name]!r} is not supported by zoedepth-jax (only {expected!r} is implemented)"
            )


def _split_fields(raw: dict, known: set, required: dict, where: str) -> dict:
    """The fields of `raw` this implementation does not read (bookkeeping, or unknown), kept to be written back;
    raises on a required field with another value."""
    _check_required(raw, required, where)
    return {name: raw[name] for name in raw if name not in known and name not in required}


def _unknown_fields(extra: dict, ignorable: frozenset, where: str) -> list[str]:
    return [f"{where}.{name}" for name in sorted(set(extra) - ignorable)]


def _read_json_object(path: str | os.PathLike) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return raw


def _from_json_file(from_dict, path: str | os.PathLike):
    raw = _read_json_object(path)
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _warn_unknown(unknown: list[str]) -> None:
    if unknown:
        warnings.warn(
            f"zoedepth-jax does not know the field(s) {', '.join(unknown)}: the model is built without them, "
            "and save_pretrained writes them back (transformers loads such fields too)",
            ConfigWarning,
            stacklevel=3,
        )


@dataclasses.dataclass(frozen=True)
class BeitConfig:
    """The BEiT backbone (MiDaS v3.1 BEiT-L/16 in the released checkpoints)."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    patch_size: int = 16
    image_size: int = 384  # pretraining size: sets the shape of the relative-position tables
    layer_norm_eps: float = 1e-12
    layer_scale_init_value: float = 0.1
    out_indices: tuple[int, ...] = (6, 12, 18, 24)  # 1-based layer outputs fed to the neck
    drop_path_rate: float = 0.1
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: dict) -> BeitConfig:
        if raw.get("model_type", "beit") != "beit":
            raise ConfigError(
                f"backbone_config.model_type = {raw.get('model_type')!r}: ZoeDepth's backbones here are BEiT and DINOv2"
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = _split_fields(raw, known, _BEIT_REQUIRED, "backbone_config")
        values = {name: raw[name] for name in known if name in raw}
        image_size = values.get("image_size", cls.image_size)
        if isinstance(image_size, (list, tuple)):
            if len(image_size) != 2 or image_size[0] != image_size[1]:
                raise ConfigError(
                    f"backbone_config.image_size = {image_size!r}: only square pretraining sizes are supported"
                )
            values["image_size"] = image_size[0]
        if "out_indices" not in values and "out_features" in raw:
            values["out_indices"] = [int(name.removeprefix("stage")) for name in raw["out_features"]]
        if "out_indices" in values:
            values["out_indices"] = tuple(values["out_indices"])
        config = cls(**values, extra=extra)
        config.validate()
        return config

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"backbone_config.hidden_size = {self.hidden_size} is not a multiple of "
                f"num_attention_heads = {self.num_attention_heads}"
            )
        if not all(1 <= i <= self.num_hidden_layers for i in self.out_indices):
            raise ConfigError(
                f"backbone_config.out_indices = {list(self.out_indices)} must lie in 1..{self.num_hidden_layers}"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"backbone_config.image_size = {self.image_size} is not a multiple of patch_size = {self.patch_size}"
            )

    @property
    def window_size(self) -> int:
        """Side of the patch grid the relative-position tables were trained for."""
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out["out_indices"] = list(self.out_indices)
        out["out_features"] = [f"stage{i}" for i in self.out_indices]
        out["stage_names"] = ["stem"] + [f"stage{i}" for i in range(1, self.num_hidden_layers + 1)]
        out.update(_BEIT_REQUIRED)
        out["model_type"] = "beit"
        return dict(sorted(out.items()))


# DINOv2 fields that change nothing this implementation computes: the mask token only serves masked pretraining
# (its parameter is not loaded), the stage names are derived from the layer count.
_DINOV2_UNUSED_FIELDS = frozenset("use_mask_token stage_names out_features".split())
_DINOV2_REQUIRED = {"use_swiglu_ffn": False, "hidden_act": "gelu", "num_channels": 3}


@dataclasses.dataclass(frozen=True)
class Dinov2Config:
    """The DINOv2 backbone (transformers `Dinov2Model` / `Dinov2Backbone`): ViT with patch 14, a CLS token,
    absolute position embeddings interpolated to the input's patch grid, and layer scale. Depth Anything uses
    ViT-S/14 (384 wide, 12 layers), ViT-B/14 (768, 12) and ViT-L/14 (1024, 24), all pretrained at 518.

    `interpolate_offset` chooses how the position embeddings are resized for an input whose patch grid is not the
    pretraining grid. 0 (the default) is transformers' rule: bicubic to the grid's size. A positive offset is the
    rule of DINOv2's own code (facebookresearch/dinov2, and the copy Depth Anything V1 runs, with 0.1): bicubic by
    the scale factors ((rows + offset) / s, (cols + offset) / s) of the s x s table, which samples the table at
    slightly different points (also along an axis whose size does not change). The Depth Anything V1 metric
    checkpoints load with 0.1; transformers does not read the field."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mlp_ratio: float = 4
    patch_size: int = 14
    image_size: int = 224  # pretraining size: sets the grid of the position embeddings
    layer_norm_eps: float = 1e-6
    layerscale_value: float = 1.0
    qkv_bias: bool = True
    out_indices: tuple[int, ...] = (12,)  # 1-based layer outputs a backbone returns; transformers' default: the last
    apply_layernorm: bool = True  # a backbone's outputs go through the final layernorm
    reshape_hidden_states: bool = True  # a backbone returns [B, D, h, w] maps without CLS (transformers' default)
    drop_path_rate: float = 0.0  # recorded only: the DINOv2 modules run the inference path
    hidden_dropout_prob: float = 0.0  # recorded only, as drop_path_rate
    attention_probs_dropout_prob: float = 0.0  # recorded only, as drop_path_rate
    interpolate_offset: float = 0.0  # position-embedding resize rule: 0 = transformers', > 0 = DINOv2's (above)
    extra: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "backbone_config") -> Dinov2Config:
        if raw.get("model_type", "dinov2") != "dinov2":
            raise ConfigError(f"{where}.model_type = {raw.get('model_type')!r}: expected 'dinov2'")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = _split_fields(raw, known, _DINOV2_REQUIRED, where)
        values = {name: raw[name] for name in known if name in raw}
        for name in ("image_size", "patch_size"):
            value = values.get(name)
            if isinstance(value, (list, tuple)):
                if len(value) != 2 or value[0] != value[1]:
                    raise ConfigError(f"{where}.{name} = {value!r}: only square sizes are supported")
                values[name] = value[0]
        if "out_indices" not in values and raw.get("out_features"):
            values["out_indices"] = [int(name.removeprefix("stage")) for name in raw["out_features"]]
        if values.get("out_indices") is None:
            values["out_indices"] = (values.get("num_hidden_layers", cls.num_hidden_layers),)
        values["out_indices"] = tuple(values["out_indices"])
        config = cls(**values, extra=extra)
        config.validate(where)
        return config

    def validate(self, where: str = "backbone_config") -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{where}.hidden_size = {self.hidden_size} is not a multiple of "
                f"num_attention_heads = {self.num_attention_heads}"
            )
        if not all(1 <= i <= self.num_hidden_layers for i in self.out_indices):
            raise ConfigError(f"{where}.out_indices = {list(self.out_indices)} must lie in 1..{self.num_hidden_layers}")
        if self.image_size < self.patch_size:
            raise ConfigError(f"{where}.image_size = {self.image_size} is smaller than patch_size = {self.patch_size}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"{where}.mlp_ratio = {self.mlp_ratio!r} must be positive")
        offset = self.interpolate_offset
        if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not 0 <= offset < 1:
            raise ConfigError(
                f"{where}.interpolate_offset = {offset!r}: expected a number in [0, 1) (0: transformers' resize of "
                "the position embeddings; DINOv2's own code uses 0.1)"
            )

    @property
    def position_grid(self) -> int:
        """Side of the patch grid the position embeddings were trained for."""
        return self.image_size // self.patch_size

    @property
    def intermediate_size(self) -> int:
        """Width of the MLP: transformers derives it as int(hidden_size * mlp_ratio)."""
        return int(self.hidden_size * self.mlp_ratio)

    def unknown_fields(self, where: str = "backbone_config") -> list[str]:
        return _unknown_fields(self.extra, _GENERIC_FIELDS | _DINOV2_UNUSED_FIELDS, where)

    def to_dict(self) -> dict:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out["out_indices"] = list(self.out_indices)
        out["out_features"] = [f"stage{i}" for i in self.out_indices]
        out["stage_names"] = ["stem"] + [f"stage{i}" for i in range(1, self.num_hidden_layers + 1)]
        out.update(_DINOV2_REQUIRED)
        out["model_type"] = "dinov2"
        return dict(sorted(out.items()))


@dataclasses.dataclass(frozen=True)
class NeckConfig:
    """The DPT neck (reassemble, 3x3 convolutions, fusion) as a model configures it; ZoeDepth and Depth Anything
    build the same modules from it (`ZoeDepthConfig.neck`, `DepthAnythingConfig.neck`)."""

    hidden_size: int  # width of the backbone's tokens
    neck_hidden_sizes: tuple[int, ...]
    reassemble_factors: tuple[float, ...]
    fusion_hidden_size: int
    readout_type: str = "project"  # how the CLS token enters each map: "project", "add" or "ignore" (dropped)
    fusion_residual_bias: bool = True
    # Each fusion layer upsamples 2x (ZoeDepth) or, but for the last, to the size of the next map (Depth Anything).
    upsample_to_next_map: bool = False


def _check_reassemble(factors, fail) -> None:
    for factor in factors:
        if not (factor >= 1 and float(factor).is_integer()) and factor not in (0.5, 0.25):
            fail("reassemble_factors", "each factor must be a whole number >= 1, 0.5 or 0.25")


# ZoeDepth's own default depth range in meters (min_depth, max_depth), for a head whose config does not set one.
DEFAULT_DEPTH_RANGE = (1e-3, 10.0)


@dataclasses.dataclass(frozen=True)
class BinConfiguration:
    """One metric head: its name (the domain), number of bins and depth range in meters."""

    name: str
    n_bins: int
    min_depth: float
    max_depth: float

    @classmethod
    def from_dict(cls, raw: dict, index: int, single: bool) -> BinConfiguration:
        where = f"bin_configurations[{index}]"
        unknown = sorted(set(raw) - {"name", "n_bins", "min_depth", "max_depth"})
        if unknown:
            raise ConfigError(f"unknown field(s) in {where}: {', '.join(unknown)}")
        missing = sorted({"n_bins", "min_depth", "max_depth"} - set(raw))
        if missing or (not single and "name" not in raw):
            raise ConfigError(f"{where} lacks {', '.join(missing or ['name'])}")
        config = cls(raw.get("name", "metric"), int(raw["n_bins"]), float(raw["min_depth"]), float(raw["max_depth"]))
        if not 0 <= config.min_depth < config.max_depth:
            raise ConfigError(f"{where}: need 0 <= min_depth < max_depth, got {config.min_depth}, {config.max_depth}")
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Fields only a BEiT config holds: a backbone config with them and model_type "dinov2" is a BEiT config mislabelled.
_BEIT_ONLY_FIELDS = ("use_relative_position_bias", "use_shared_relative_position_bias", "layer_scale_init_value")


def _zoedepth_backbone(raw: dict) -> BeitConfig | Dinov2Config:
    """ZoeDepth's backbone config, by its model_type: BEiT (the default) or DINOv2."""
    if raw.get("model_type") != "dinov2":
        return BeitConfig.from_dict(raw)
    beit_fields = [name for name in _BEIT_ONLY_FIELDS if name in raw]
    if beit_fields:
        raise ConfigError(
            f"backbone_config.model_type = 'dinov2', but the backbone config holds BEiT's fields "
            f"({', '.join(beit_fields)}): the model_type does not describe this backbone"
        )
    return Dinov2Config.from_dict(raw)


class _ModelConfigFiles:
    """What a whole model's config does with files and changes, given its `from_dict`, `to_dict` and `validate`."""

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        return _from_json_file(cls.from_dict, path)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def replace(self, **changes: Any):
        """A copy with `changes`, validated."""
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config


@dataclasses.dataclass(frozen=True)
class ZoeDepthConfig(_ModelConfigFiles):
    """ZoeDepth: BEiT backbone, DPT neck, relative head and one metric head per bin configuration.

    With two bin configurations (ZoeD-NK) a patch-transformer router chooses the head for each input. The backbone
    is BEiT (the released checkpoints) or DINOv2 (a `backbone_config` of model_type "dinov2", as transformers
    builds ZoeDepth on `Dinov2Backbone`: its layernormed token sequences feed the neck).
    """

    backbone_config: BeitConfig | Dinov2Config = dataclasses.field(default_factory=BeitConfig)
    readout_type: str = "project"
    reassemble_factors: tuple[float, ...] = (4, 2, 1, 0.5)
    neck_hidden_sizes: tuple[int, ...] = (256, 512, 1024, 1024)
    fusion_hidden_size: int = 256
    head_in_index: int = -1
    use_bias_in_fusion_residual: bool | None = None
    num_relative_features: int = 32
    bottleneck_features: int = 256
    num_attractors: tuple[int, ...] = (16, 8, 4, 1)
    bin_embedding_dim: int = 128
    attractor_alpha: float = 1000  # recorded only: the attractors run with 300 (see metric_head.inverse_attractor)
    attractor_gamma: float = 2  # recorded only, as attractor_alpha
    attractor_kind: str = "mean"
    min_temp: float = 0.0212
    max_temp: float = 50.0
    bin_centers_type: str = "softplus"
    bin_configurations: tuple[BinConfiguration, ...] = (BinConfiguration("metric", 64, *DEFAULT_DEPTH_RANGE),)
    num_patch_transformer_layers: int | None = None
    patch_transformer_hidden_size: int | None = None
    patch_transformer_intermediate_size: int | None = None
    patch_transformer_num_attention_heads: int | None = None
    batch_norm_eps: float = 1e-5  # recorded only: batch norm in the fusion residuals is not supported
    # How the DPT neck and relative head resize. False: transformers' ZoeDepth, each fusion layer and the relative
    # head upsample 2x. True: Depth Anything's DPTHead (the Depth Anything V1 metric checkpoints): each fusion
    # layer but the last upsamples to the size of the next map, and the relative head resizes to the input size
    # (a patch-14 model then predicts depth at the input size, not at 16/14 of it). transformers does not read it.
    depth_anything_dpt: bool = False
    extra: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: dict) -> ZoeDepthConfig:
        if raw.get("model_type", "zoedepth") != "zoedepth":
            raise ConfigError(f"model_type = {raw.get('model_type')!r}: expected 'zoedepth'")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = _split_fields(raw, known, _ZOEDEPTH_REQUIRED, "config")
        values = {name: raw[name] for name in known if name in raw and raw[name] is not None}
        values["backbone_config"] = _zoedepth_backbone(raw.get("backbone_config") or {})
        for name in ("reassemble_factors", "neck_hidden_sizes", "num_attractors"):
            if name in values:
                values[name] = tuple(values[name])
        if "bin_configurations" in values:
            bins = values["bin_configurations"]
            values["bin_configurations"] = tuple(
                BinConfiguration.from_dict(b, i, single=len(bins) == 1) for i, b in enumerate(bins)
            )
        config = cls(**values, extra=extra)
        config.validate()
        unknown = _unknown_fields(extra, _GENERIC_FIELDS | _ZOEDEPTH_UNUSED_FIELDS, "config")
        if isinstance(config.backbone_config, Dinov2Config):
            unknown += config.backbone_config.unknown_fields()
        else:
            unknown += _unknown_fields(
                config.backbone_config.extra, _GENERIC_FIELDS | _BEIT_UNUSED_FIELDS, "backbone_config"
            )
        _warn_unknown(unknown)
        if "backbone_hidden_size" in raw and raw["backbone_hidden_size"] != config.backbone_config.hidden_size:
            raise ConfigError(
                f"config.backbone_hidden_size = {raw['backbone_hidden_size']} disagrees with "
                f"backbone_config.hidden_size = {config.backbone_config.hidden_size}"
            )
        return config

    def validate(self) -> None:
        def fail(field: str, message: str):
            raise ConfigError(f"config.{field} = {getattr(self, field)!r}: {message}")

        if self.readout_type not in ("ignore", "add", "project"):
            fail("readout_type", "expected 'ignore', 'add' or 'project'")
        if self.bin_centers_type not in ("normed", "softplus"):
            fail("bin_centers_type", "expected 'normed' or 'softplus' (no released checkpoint uses 'hybrid' kinds)")
        if self.attractor_kind not in ("mean", "sum"):
            fail("attractor_kind", "expected 'mean' or 'sum'")
        if not isinstance(self.depth_anything_dpt, bool):
            fail("depth_anything_dpt", "expected true or false")
        if isinstance(self.backbone_config, Dinov2Config) and self.backbone_config.reshape_hidden_states:
            raise ConfigError(
                "backbone_config.reshape_hidden_states = True: ZoeDepth's neck reads token sequences with the CLS "
                "token (transformers' DINOv2 ZoeDepth configs set it to false)"
            )
        n_stages = len(self.backbone_config.out_indices)
        for field in ("reassemble_factors", "neck_hidden_sizes"):
            if len(getattr(self, field)) != n_stages:
                fail(field, f"needs one entry per backbone output stage ({n_stages})")
        _check_reassemble(self.reassemble_factors, fail)
        if len(self.num_attractors) != 4 or n_stages != 4:
            fail("num_attractors", "the metric head has exactly four attractor stages over four neck stages")
        if self.bottleneck_features != self.fusion_hidden_size:
            fail("bottleneck_features", f"must equal fusion_hidden_size ({self.fusion_hidden_size})")
        if not -n_stages <= self.head_in_index < n_stages:
            fail("head_in_index", f"must index one of the {n_stages} fusion outputs")
        if not self.bin_configurations:
            fail("bin_configurations", "at least one bin configuration is needed")
        names = [b.name for b in self.bin_configurations]
        if len(set(names)) != len(names):
            fail("bin_configurations", "names must be unique")
        if len(self.bin_configurations) > 2:
            fail("bin_configurations", "the router classifies between exactly two domains")
        if self.is_multi_domain:
            self._validate_router(fail)

    def _validate_router(self, fail) -> None:
        fields = (
            "num_patch_transformer_layers",
            "patch_transformer_hidden_size",
            "patch_transformer_intermediate_size",
            "patch_transformer_num_attention_heads",
        )
        for field in fields:
            if getattr(self, field) is None:
                fail(field, "required when there are two bin configurations")
        # transformers runs exactly four encoder layers and builds the classifier for 128 features.
        if self.num_patch_transformer_layers != 4:
            fail("num_patch_transformer_layers", "the router runs exactly four encoder layers")
        if self.patch_transformer_hidden_size != 128:
            fail("patch_transformer_hidden_size", "the router's classifier takes 128 features")
        if self.patch_transformer_hidden_size % self.patch_transformer_num_attention_heads:
            fail("patch_transformer_num_attention_heads", "must divide patch_transformer_hidden_size")

    @property
    def is_multi_domain(self) -> bool:
        return len(self.bin_configurations) > 1

    @property
    def fusion_residual_bias(self) -> bool:
        return True if self.use_bias_in_fusion_residual is None else self.use_bias_in_fusion_residual

    @property
    def neck(self) -> NeckConfig:
        return NeckConfig(
            hidden_size=self.backbone_config.hidden_size,
            neck_hidden_sizes=self.neck_hidden_sizes,
            reassemble_factors=self.reassemble_factors,
            fusion_hidden_size=self.fusion_hidden_size,
            readout_type=self.readout_type,
            fusion_residual_bias=self.fusion_residual_bias,
            upsample_to_next_map=self.depth_anything_dpt,
        )

    def to_dict(self) -> dict:
        out = dict(self.extra)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "extra":
                continue
            if field.name == "backbone_config":
                value = value.to_dict()
            elif field.name == "bin_configurations":
                value = [b.to_dict() for b in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        out.update(_ZOEDEPTH_REQUIRED)
        out["backbone_hidden_size"] = self.backbone_config.hidden_size
        out["model_type"] = "zoedepth"
        return dict(sorted(out.items()))


# Depth Anything fields that transformers writes but that carry no architecture of their own.
_DEPTH_ANYTHING_UNUSED_FIELDS = frozenset("use_pretrained_backbone".split())
_DEPTH_ANYTHING_REQUIRED = {"backbone": None, "backbone_kwargs": None, "use_timm_backbone": False}
DEPTH_ESTIMATION_TYPES = ("relative", "metric")


@dataclasses.dataclass(frozen=True)
class DepthAnythingConfig(_ModelConfigFiles):
    """Depth Anything (V1 relative, V2 relative and metric; transformers `DepthAnythingForDepthEstimation`):
    DINOv2 backbone, the DPT neck without readout (the CLS token is dropped), each fusion layer upsampling to the
    next map's size, and a head whose output is ReLU (relative) or sigmoid (metric) times `max_depth`.

    transformers multiplies the relative output by `max_depth` too (1 unless the config sets another value), and
    so does this implementation."""

    backbone_config: Dinov2Config = dataclasses.field(
        default_factory=lambda: Dinov2Config(
            hidden_size=384,
            num_attention_heads=6,
            image_size=518,
            out_indices=(9, 10, 11, 12),
            reshape_hidden_states=False,
        )
    )
    patch_size: int = 14
    reassemble_hidden_size: int = 384
    reassemble_factors: tuple[float, ...] = (4, 2, 1, 0.5)
    neck_hidden_sizes: tuple[int, ...] = (48, 96, 192, 384)
    fusion_hidden_size: int = 64
    head_in_index: int = -1
    head_hidden_size: int = 32
    depth_estimation_type: str = "relative"
    max_depth: float = 1
    extra: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: dict) -> DepthAnythingConfig:
        if raw.get("model_type", "depth_anything") != "depth_anything":
            raise ConfigError(f"model_type = {raw.get('model_type')!r}: expected 'depth_anything'")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = _split_fields(raw, known, _DEPTH_ANYTHING_REQUIRED, "config")
        values = {name: raw[name] for name in known if name in raw and raw[name] is not None}
        if raw.get("max_depth", 1) is None and raw.get("depth_estimation_type") == "metric":
            raise ConfigError("config.max_depth = None: a metric model needs its depth range")
        if isinstance(values.get("patch_size"), (list, tuple)):
            size = values["patch_size"]
            if len(size) != 2 or size[0] != size[1]:
                raise ConfigError(f"config.patch_size = {size!r}: only square patches are supported")
            values["patch_size"] = size[0]
        if "backbone_config" in values:
            values["backbone_config"] = Dinov2Config.from_dict(values["backbone_config"])
        for name in ("reassemble_factors", "neck_hidden_sizes"):
            if name in values:
                values[name] = tuple(values[name])
        config = cls(**values, extra=extra)
        config.validate()
        _warn_unknown(
            _unknown_fields(extra, _GENERIC_FIELDS | _DEPTH_ANYTHING_UNUSED_FIELDS, "config")
            + config.backbone_config.unknown_fields()
        )
        return config

    def validate(self) -> None:
        def fail(field: str, message: str):
            raise ConfigError(f"config.{field} = {getattr(self, field)!r}: {message}")

        backbone = self.backbone_config
        if self.depth_estimation_type not in DEPTH_ESTIMATION_TYPES:
            fail("depth_estimation_type", f"expected one of {DEPTH_ESTIMATION_TYPES}")
        if not isinstance(self.max_depth, (int, float)) or self.max_depth <= 0:
            fail("max_depth", "expected a positive number")
        if backbone.reshape_hidden_states:
            raise ConfigError(
                "backbone_config.reshape_hidden_states = True: Depth Anything's neck reads token sequences "
                "(transformers' released configs set it to false)"
            )
        if self.patch_size != backbone.patch_size:
            fail("patch_size", f"must equal backbone_config.patch_size ({backbone.patch_size})")
        if self.reassemble_hidden_size != backbone.hidden_size:
            fail("reassemble_hidden_size", f"must equal backbone_config.hidden_size ({backbone.hidden_size})")
        n_stages = len(backbone.out_indices)
        for field in ("reassemble_factors", "neck_hidden_sizes"):
            if len(getattr(self, field)) != n_stages:
                fail(field, f"needs one entry per backbone output stage ({n_stages})")
        _check_reassemble(self.reassemble_factors, fail)
        if not -n_stages <= self.head_in_index < n_stages:
            fail("head_in_index", f"must index one of the {n_stages} fusion outputs")

    @property
    def neck(self) -> NeckConfig:
        return NeckConfig(
            hidden_size=self.reassemble_hidden_size,
            neck_hidden_sizes=self.neck_hidden_sizes,
            reassemble_factors=self.reassemble_factors,
            fusion_hidden_size=self.fusion_hidden_size,
            readout_type="ignore",
            upsample_to_next_map=True,
        )

    def to_dict(self) -> dict:
        out = dict(self.extra)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "extra":
                continue
            if field.name == "backbone_config":
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        out.update(_DEPTH_ANYTHING_REQUIRED)
        out["model_type"] = "depth_anything"
        return dict(sorted(out.items()))


# The model configs by the `model_type` of their config.json.
CONFIG_CLASSES = {"zoedepth": ZoeDepthConfig, "depth_anything": DepthAnythingConfig}


def config_from_json_file(path: str | os.PathLike) -> ZoeDepthConfig | DepthAnythingConfig:
    """The model config of a checkpoint's config.json, of the class its `model_type` names."""
    raw = _read_json_object(path)
    model_type = raw.get("model_type", "zoedepth")
    if model_type not in CONFIG_CLASSES:
        raise ConfigError(
            f"{path}: model_type = {model_type!r} is not supported (zoedepth-jax runs {', '.join(CONFIG_CLASSES)})"
        )
    return _from_json_file(CONFIG_CLASSES[model_type].from_dict, path)


# A tiny ZoeDepth: the released architecture (BEiT, DPT neck, metric-bins head) at a size that runs in a moment
# on a CPU. The tests build their transformers models from these values, the fine-tuning example and the
# benchmark scripts' quick checks run it. The 4x4 pretraining window makes every input size interpolate the
# relative-position tables, as the full model does at 384x512.
TINY_BACKBONE = {
    "image_size": 64,
    "patch_size": 16,
    "num_hidden_layers": 4,
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_attention_heads": 3,
    "out_indices": (1, 2, 3, 4),
}
TINY_NECK_AND_HEAD = {
    "neck_hidden_sizes": (16, 32, 48, 48),
    "fusion_hidden_size": 32,
    "bottleneck_features": 32,
    "num_relative_features": 8,
    "bin_embedding_dim": 16,
}


def tiny_config(**changes: Any) -> ZoeDepthConfig:
    """The tiny ZoeDepth above with one softplus head (ZoeDepthConfig's defaults for the rest), and `changes`."""
    return ZoeDepthConfig(backbone_config=BeitConfig(**TINY_BACKBONE), **TINY_NECK_AND_HEAD).replace(**changes)


# A tiny DINOv2 at a size that runs in a moment on a CPU. Its 4x4 pretraining grid (56 pixels) makes every other
# input size interpolate the position embeddings, as the released 37x37 grid does for any input but 518x518.
TINY_DINOV2 = {
    "image_size": 56,
    "patch_size": 14,
    "num_hidden_layers": 4,
    "hidden_size": 48,
    "num_attention_heads": 3,
    "mlp_ratio": 4,
    "out_indices": (1, 2, 3, 4),
}


# A tiny Depth Anything on the tiny DINOv2 above, with Depth Anything's neck and head at small widths.
TINY_DEPTH_ANYTHING = {
    "reassemble_hidden_size": 48,
    "neck_hidden_sizes": (16, 32, 48, 48),
    "fusion_hidden_size": 32,
    "head_hidden_size": 8,
}


def tiny_depth_anything_config(**changes: Any) -> DepthAnythingConfig:
    """The tiny Depth Anything above (relative unless `changes` say otherwise)."""
    backbone = Dinov2Config(**TINY_DINOV2, reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, **TINY_DEPTH_ANYTHING).replace(**changes)
