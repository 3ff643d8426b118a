"""Metric heads: bottleneck -> seed bins -> four attractor stages -> conditional log-binomial -> depth = sum p*c.

transformers builds two variants with different hyper-parameters, and the released weights depend on them:

| quirk (kept)                    | one domain (`ZoeDepthMetricDepthEstimationHead`) | two domains (NK)        |
|---------------------------------|--------------------------------------------------|-------------------------|
| seed regressor hidden width     | 256 (constructor default)                        | bin_embedding_dim // 2  |
| projector hidden width          | 128 (constructor default)                        | bin_embedding_dim // 2  |
| attractors per stage            | num_attractors[i]                                | 16 (constructor default)|
| relative depth joins features   | yes (+1 channel)                                 | no                      |
| log-binomial MLP bottleneck     | (in + embedding) // 2                            | (in + embedding) // 4   |

Both variants compute every domain's depth: the heads cost well under 1% of a forward, and computing all of
them keeps routing a pure selection (no `lax.cond`, no host sync), valid under `jit`, `vmap` and `grad`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoedepth_jax.config import BinConfiguration, ZoeDepthConfig
from zoedepth_jax.modeling.layers import conv
from zoedepth_jax.modeling.metric_bins import (
    AttractorLayer,
    ConditionalLogBinomial,
    Projector,
    SeedBinRegressor,
    resize_to,
)
from zoedepth_jax.modeling.router import MLPClassifier, PatchTransformerEncoder

SINGLE_HEAD_SEED_MLP_DIM = 256
SINGLE_HEAD_PROJECTOR_MLP_DIM = 128
MULTI_HEAD_ATTRACTORS = 16


class MetricHead(nn.Module):
    """Returns the depth of every domain `[num_domains, B, H, W]` and the domain logits `[B, num_domains]`
    (None with a single domain). `deterministic=False` turns on the router's dropout (the bins have none).
    With `with_std`, the depth is a pair: (mean, standard deviation) under each pixel's bin distribution."""

    config: ZoeDepthConfig
    with_std: bool = False

    @nn.compact
    def __call__(self, relative_features, relative_depth, bottleneck, fused, deterministic: bool = True):
        config = self.config
        multi = config.is_multi_domain
        embedding_dim = config.bin_embedding_dim
        projector_dim = embedding_dim // 2 if multi else SINGLE_HEAD_PROJECTOR_MLP_DIM
        x = conv(config.bottleneck_features, 1, "conv2", jnp.float32)(bottleneck.astype(jnp.float32))
        seed_embedding = Projector(embedding_dim, projector_dim, name="seed_projector")(x)
        embeddings = [
            Projector(embedding_dim, projector_dim, name=f"projectors_{i}")(feature.astype(jnp.float32))
            for i, feature in enumerate(fused)
        ]
        last = relative_features.astype(jnp.float32)
        if not multi:
            last = jnp.concatenate([last, resize_to(relative_depth[..., None].astype(jnp.float32), last)], axis=-1)
        per_domain = [
            self._domain_depth(bins, x, seed_embedding, embeddings, last) for bins in config.bin_configurations
        ]
        # [num_domains, B, H, W], or a (mean, std) pair of them
        depths = jax.tree_util.tree_map(lambda *d: jnp.stack(d), *per_domain)
        if not multi:
            return depths, None
        tokens = PatchTransformerEncoder(config, name="patch_transformer")(x, deterministic)
        domain_logits = MLPClassifier(len(config.bin_configurations), name="mlp_classifier")(tokens[:, 0, :])
        return depths, domain_logits

    def _domain_depth(self, bins: BinConfiguration, x, seed_embedding, embeddings, last):
        config = self.config
        multi = config.is_multi_domain
        normed = config.bin_centers_type == "normed"
        # Parameter names: `seed_bin_regressor` (one domain) or `seed_bin_regressors_<name>` (ModuleDict), etc.
        suffix = f"_{bins.name}" if multi else ""
        seed_name = f"seed_bin_regressors{suffix}" if multi else "seed_bin_regressor"
        seed_dim = config.bin_embedding_dim // 2 if multi else SINGLE_HEAD_SEED_MLP_DIM
        seed = SeedBinRegressor(bins.n_bins, seed_dim, bins.min_depth, bins.max_depth, normed, name=seed_name)
        prev_bins, centers = seed(x)
        self.sow("intermediates", f"seed_bin_centers_{bins.name}", centers)
        prev_embedding = seed_embedding
        for i, embedding in enumerate(embeddings):
            n_attractors = MULTI_HEAD_ATTRACTORS if multi else config.num_attractors[i]
            attractor = AttractorLayer(
                n_attractors,
                bins.min_depth,
                bins.max_depth,
                normed,
                config.attractor_kind,
                name=f"attractors{suffix}_{i}",
            )
            prev_bins, centers = attractor(embedding, prev_bins, prev_embedding)
            prev_embedding = embedding
        factor = 4 if multi else 2
        log_binomial = ConditionalLogBinomial(
            bins.n_bins,
            (last.shape[-1] + config.bin_embedding_dim) // factor,
            config.min_temp,
            config.max_temp,
            self.with_std,
            name=f"conditional_log_binomial{suffix}",
        )
        self.sow("intermediates", f"bin_centers_{bins.name}", centers)
        return log_binomial(last, prev_embedding, centers)  # resizes the embedding and the centres itself
