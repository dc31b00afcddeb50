"""Multi-dimensional positional encodings of LightNet.

"You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet"
(Qin, Mao, Shen, Li, Zhang, Dai, Zhong, 2024): both encodings treat a position as
a point ``p = (p_1, ..., p_m)`` of an ``m``-dimensional grid (``m = 1`` for sequences,
``m = 2`` for images) and work axis by axis, so neither depends on how the grid is
flattened.

**MD-LRPE** (multi-dimensional linearized relative positional encoding). With fixed
frequencies ``θ ∈ R^e``, ``e = nextpow2(⌈d/m⌉)``, ``θ_i = base^{-i/e}`` (RoPE-like), the
angle of a position is ``a(p) = concat_i(p_i θ)[:d]`` and

    φ(x, p) = [x ⊙ cos a(p),  x ⊙ sin a(p)]  ∈ R^{2d},
    φ(q, p) · φ(k, p') = Σ_c q_c k_c cos(a_c(p) − a_c(p')),

a function of ``p − p'`` only (relative), which factorizes over ``q`` and ``k`` and so
stays compatible with linear attention (the key dimension doubles).

**MD-TPE** (multi-dimensional Toeplitz positional encoding). Along one axis, per head
``h`` with decay ``λ_h = sigmoid(θ_h)`` and gain ``c_h``,

    T(x)_t = c_h Σ_{s≤t} λ_h^{t−s} x_s            (causal)
    T(x)_t = c_h Σ_s     λ_h^{|t−s|} x_s           (non-causal: forward + backward − x_t)

an exponentially decaying Toeplitz operator evaluated by ``scans.linear_scan``; the
multi-dimensional encoding sums it over the axes, then applies a per-head RMSNorm and
a linear map: ``MdTpe(x) = W · GroupRMSNorm(Σ_axes T_axis(x))``. (The first author's
code writes ``c_h`` as the product ``q_h · k_h`` of two learned vectors; that is one
scalar per head, learned directly here.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import scans
from .common import Dense, RMSNorm, expand_to


def grid_positions(spatial_shape, offset=None) -> jax.Array:
    """Integer coordinates of a grid as float32, ``(1, *spatial_shape, m)``.

    ``offset`` (``(B,)`` or ``(B, m)``) shifts them per batch element, giving
    ``(B, *spatial_shape, m)``; a streaming step passes the number of steps so far.
    """
    axes = [jnp.arange(n, dtype=jnp.float32) for n in spatial_shape]
    grid = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)[None]
    if offset is None:
        return grid
    offset = jnp.asarray(offset, jnp.float32)
    offset = offset.reshape(offset.shape[:1] + (1,) * len(spatial_shape) + (-1,))
    return grid + offset


class MdLrpe(nnx.Module):
    """MD-LRPE feature map ``x ↦ [x cos a(p), x sin a(p)]``; no parameters.

    ``x``: ``(B, *spatial, heads, d)``; ``positions``: ``(B or 1, *spatial, m)``;
    returns ``(B, *spatial, heads, 2d)``. Angles are computed in float32 (or the
    positions' wider dtype).
    """

    def __init__(self, dim: int, *, spatial_ndim: int = 1, base: float = 10000.0):
        self.dim, self.spatial_ndim, self.base = dim, spatial_ndim, float(base)
        self.num_frequencies = 1 << max(0, math.ceil(math.log2(-(-dim // spatial_ndim))))

    def frequencies(self) -> np.ndarray:
        e = self.num_frequencies
        return self.base ** (-np.arange(e) / e)

    def angles(self, positions: jax.Array) -> jax.Array:
        """``a(p)``: ``(..., m)`` -> ``(..., dim)``."""
        if positions.shape[-1] != self.spatial_ndim:
            raise ValueError(f"positions must end in {self.spatial_ndim} coordinates; got shape {positions.shape}")
        dtype = jnp.promote_types(positions.dtype, jnp.float32)
        theta = expand_to(jnp.asarray(self.frequencies(), dtype), positions.ndim)
        per_axis = [positions[..., i:i + 1].astype(dtype) * theta for i in range(self.spatial_ndim)]
        return jnp.concatenate(per_axis, axis=-1)[..., :self.dim]

    def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have {self.dim} features on its last axis; got shape {x.shape}")
        angle = self.angles(positions)[..., None, :]  # one angle for every head
        return jnp.concatenate([x * jnp.cos(angle), x * jnp.sin(angle)], axis=-1)


class MdTpe(nnx.Module):
    """MD-TPE: ``x (B, *spatial, d_model) ↦ W · GroupRMSNorm(Σ_axes T_axis(x))``.

    Causal instances (``spatial_ndim = 1`` only) also run step by step over a state of
    shape ``(B, num_heads, d_model // num_heads)`` (:meth:`scan`).
    """

    def __init__(self, d_model: int, *, num_heads: int, spatial_ndim: int = 1, causal: bool = True,
                 eps: float = 1e-5, rngs: nnx.Rngs):
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        if causal and spatial_ndim != 1:
            raise ValueError("a causal MD-TPE needs spatial_ndim=1 (one time axis)")
        self.d_model, self.num_heads, self.spatial_ndim, self.causal = d_model, num_heads, spatial_ndim, causal
        self.head_dim = d_model // num_heads
        # decays λ spread over [0.9, 0.99] across heads (slow and fast positional memories)
        lam = np.linspace(0.9, 0.99, num_heads)
        logit = np.tile(np.log(lam / (1 - lam)), (spatial_ndim, 1)).astype(np.float32)
        self.decay_logit = nnx.Param(jnp.asarray(logit))  # (m, heads)
        self.gain = nnx.Param(jnp.ones((spatial_ndim, num_heads), jnp.float32))
        self.norm = RMSNorm(d_model, groups=num_heads, eps=eps)
        self.out = Dense(d_model, d_model, use_bias=False, rngs=rngs)

    def initial_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, self.num_heads, self.head_dim), jnp.float32)

    def _toeplitz(self, x, axis, h0=None):
        """``c Σ λ^{|t−s|} x_s`` (or ``Σ_{s≤t}``) along spatial axis ``axis``; x is split into heads."""
        acc = jnp.promote_types(x.dtype, jnp.float32)
        decay = jax.nn.sigmoid(self.decay_logit[...][axis].astype(acc))[:, None]  # (heads, 1)
        gain = self.gain[...][axis][:, None].astype(x.dtype)
        b = jnp.moveaxis(x, 1 + axis, 1)
        h, h_last = scans.linear_scan(decay, b, h0)
        if not self.causal:
            h = h + scans.linear_scan(decay, b, reverse=True)[0] - b
        return jnp.moveaxis(h, 1, 1 + axis) * expand_to(gain, x.ndim), h_last

    def scan(self, x: jax.Array, state: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Causal 1-D form with a carried state: ``(B, L, d) -> (y, state)``."""
        if not self.causal:
            raise NotImplementedError("a non-causal MD-TPE has no recurrent state")
        heads = x.shape[:-1] + (self.num_heads, self.head_dim)
        h, state = self._toeplitz(x.reshape(heads), 0, state)
        return self._finish(h), state

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 2 + self.spatial_ndim:
            raise ValueError(f"x must have rank {2 + self.spatial_ndim}; got shape {x.shape}")
        heads = x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))
        total = sum(self._toeplitz(heads, axis)[0] for axis in range(self.spatial_ndim))
        return self._finish(total)

    def _finish(self, h):
        return self.out(self.norm(h.reshape(h.shape[:-2] + (self.d_model,))))
