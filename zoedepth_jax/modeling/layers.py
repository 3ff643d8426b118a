"""Small building blocks shared by the model files.

Parameter names follow the Hugging Face module tree: a PyTorch module `a.b.3.c` is the Flax path
`a/b_3/c`, so wrappers exist only where transformers nests a module (`intermediate.dense`, `mlp.0`).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

Dtype = jnp.dtype


def conv(features: int, kernel: int, name: str, dtype: Dtype, stride: int = 1, padding: int = 0, bias: bool = True):
    """A 2-D convolution with torch's explicit symmetric zero padding (Flax's 'SAME' pads differently for stride 2)."""
    return nn.Conv(
        features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=bias,
        dtype=dtype,
        name=name,
    )


def layer_norm(epsilon: float, name: str) -> nn.LayerNorm:
    """LayerNorm computed in fp32 with torch's two-pass variance (Flax's default E[x^2]-E[x]^2 loses digits
    when the mean is large, as it is in BEiT's residual stream). Callers cast the result back."""
    return nn.LayerNorm(epsilon=epsilon, use_fast_variance=False, dtype=jnp.float32, name=name)


class DenseBlock(nn.Module):
    """A module holding one linear layer called `dense` (transformers' `intermediate`, `output`, ...)."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features, dtype=self.dtype, name="dense")(x)


class UpsampleConvTranspose(nn.Module):
    """torch `ConvTranspose2d(c, c, kernel_size=k, stride=k)`: each input pixel paints its own k x k block.

    The blocks do not overlap, so the layer is one matmul followed by a depth-to-space reshape, which XLA runs
    far faster than a general transposed convolution. `kernel` is `[k, k, in, out]`: torch's `[in, out, k, k]`
    permuted (2, 3, 0, 1), with no spatial flip because no two taps meet.
    """

    features: int
    factor: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # x: [B, H, W, C_in] -> [B, H*k, W*k, C_out]
        k = self.factor
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        batch, height, width, _ = x.shape
        y = jnp.einsum("bhwi,pqio->bhpwqo", x, kernel)  # [B, H, k, W, k, C_out]
        y = y.reshape(batch, height * k, width * k, self.features)
        return y + bias.astype(self.dtype)
