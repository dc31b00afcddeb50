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


class SSMParam(nnx.Param):
    """A state-space parameter (A/Λ, B, Δ, ...): the training loop gives these their own
    learning rate and no weight decay, as the S4 and S5 papers require.

    A layer marks a parameter by creating it as ``SSMParam(value)`` instead of
    ``nnx.Param(value)``; it is still an ``nnx.Param`` for every other purpose
    (``nnx.state(model, nnx.Param)`` includes it, gradients flow as usual), and the
    optimizer's parameter groups are read off the types once, at set-up.
    """


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` naming option ``name`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")


def check_positive_int(name: str, value, *, even: bool = False) -> int:
    """Return ``value`` if it is a positive (and, if asked, even) int; else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (even and value % 2):
        raise ValueError(f"{name} must be a positive{' even' if even else ''} int; got {value!r}")
    return value


SSM_OUTPUTS = ("linear", "glu")


class SSMOutput(nnx.Module):
    """Output stage of the state-space layers (S4, S4D, LSSL): skip term, GELU, projection.

    ``y`` holds the SSM outputs ``(..., H, M)`` (``H = d_model`` input channels, ``M``
    output channels per input channel), ``u`` the layer inputs ``(..., H)``:

        z   = GELU(y + D ⊙ u)                                 D: (H, M), y = K * u + D u
        out = W · flatten(z)                                  "linear": W: H·M → d_model
        out = a ⊙ σ(b),  [a, b] = W · flatten(z)              "glu":    W: H·M → 2·d_model

    The S4 block ("Efficiently Modeling Long Sequences with Structured State Spaces",
    Gu, Goel, Ré, 2022; state-spaces/s4 ``S4Block``: GELU, then ``Linear(H, 2H)`` + GLU)
    and the LSSL ("Combining Recurrent, Convolutional, and Continuous-time Models with
    Linear State-Space Layers", Gu et al., 2021, §3: ``GELU(K * u + D u)``, then a
    linear layer over the ``H·M`` features). ``D ~ N(0, 1)`` is an ordinary ``nnx.Param``
    (as in both reference implementations). GELU is the exact (erf) form, as in torch.
    Computes in the dtype of ``y``.
    """

    def __init__(self, d_model: int, channels: int = 1, *, output: str = "linear", rngs: nnx.Rngs):
        check_choice("output", output, SSM_OUTPUTS)
        self.output = output
        self.D = nnx.Param(jax.random.normal(rngs.params(), (d_model, channels), jnp.float32))
        width = 2 * d_model if output == "glu" else d_model
        self.proj = Dense(d_model * channels, width, rngs=rngs)

    def __call__(self, y: jax.Array, u: jax.Array) -> jax.Array:
        D = expand_to(self.D[...].astype(y.dtype), y.ndim)
        z = jax.nn.gelu(y + u.astype(y.dtype)[..., None] * D, approximate=False)
        out = self.proj(z.reshape(z.shape[:-2] + (z.shape[-2] * z.shape[-1],)))
        if self.output == "glu":
            a, b = jnp.split(out, 2, axis=-1)
            out = a * jax.nn.sigmoid(b)
        return out
