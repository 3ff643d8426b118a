"""Small building blocks shared by the model files.

Parameter names follow the Hugging Face module tree: a PyTorch module `a.b.3.c` is the Flax path
`a/b_3/c`, so wrappers exist only where transformers nests a module (`intermediate.dense`, `mlp.0`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype


def dot_accumulating_in_f32(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """`lax.dot_general` that accumulates in fp32 and returns the inputs' dtype.

    For fp32 inputs this is the plain dot. For bf16 it is the form XLA:CPU runs on AMX (bf16 inputs, fp32
    result); a bf16 -> bf16 dot runs there in fp32 with conversions, about half as fast (measured on a BEiT-L
    MLP matmul). On GPU/TPU it is what the matrix units do anyway.
    """
    del preferred_element_type  # always fp32 here
    result = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=jnp.float32)
    return result.astype(jnp.result_type(lhs.dtype, rhs.dtype))


def dense(features: int, dtype: Dtype, name: str, use_bias: bool = True) -> nn.Dense:
    """A linear layer computing in `dtype` with fp32 accumulation (see `dot_accumulating_in_f32`)."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, dot_general=dot_accumulating_in_f32, name=name)


def conv(features: int, kernel: int, name: str, dtype: Dtype, stride: int = 1, padding: int = 0, bias: bool = True):
    """A 2-D convolution with torch's explicit symmetric zero padding (Flax's 'SAME' pads differently for stride 2).
    A 1x1 convolution (stride 1, no padding) is a `Conv1x1`."""
    if kernel == 1 and stride == 1 and padding == 0:
        return Conv1x1(features, dtype, use_bias=bias, name=name)
    return nn.Conv(
        features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=bias,
        dtype=dtype,
        name=name,
    )


class Conv1x1(nn.Module):
    """A 1x1 convolution computed as a matmul over the channel axis, with `nn.Conv`'s parameters
    (`kernel [1, 1, in, out]`, `bias [out]`) and initialisers.

    XLA:CPU runs a 1x1 `conv_general_dilated` well below its dot rate (measured on 2 cores, fp32: 36 vs 176 GFLOP/s
    at 192x256 with 256 -> 64 channels, 35 vs 174 at 128 -> 128, 159 vs 187 at 96x128 with 256 -> 256), and in
    bf16 the dot takes the bf16 path (`dot_accumulating_in_f32`) where a convolution is converted to fp32.
    """

    features: int
    dtype: Dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):  # [..., C_in] -> [..., features]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (1, 1, x.shape[-1], self.features))
        y = dot_accumulating_in_f32(
            x.astype(self.dtype), kernel.astype(self.dtype)[0, 0], (((x.ndim - 1,), (0,)), ((), ()))
        )
        if not self.use_bias:
            return y
        return y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)


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
        return dense(self.features, self.dtype, "dense")(x)


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
