"""Small parts shared by several mixers.

``Dense`` keeps its parameters in float32 and computes in the activation dtype, which
is the mixed-precision policy of the library: bfloat16 activations run bfloat16
matmuls against float32 master weights, and scans accumulate in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def expand_to(x: jax.Array, ndim: int) -> jax.Array:
    """Left-pad ``x``'s shape with 1s to rank ``ndim`` (explicit broadcasting)."""
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)


class Dense(nnx.Module):
    """``y = x @ W + b`` over the last axis; float32 parameters, activation-dtype compute."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 kernel_init=nnx.initializers.lecun_normal(), rngs: nnx.Rngs):
        self.in_features, self.out_features = in_features, out_features
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.matmul(x, self.kernel[...].astype(x.dtype))
        if self.bias is not None:
            y = y + expand_to(self.bias[...].astype(x.dtype), y.ndim)
        return y
