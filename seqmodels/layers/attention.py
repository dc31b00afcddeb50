"""Full multi-head softmax attention: the quadratic baseline every benchmark compares against.

"Attention Is All You Need" (Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser,
Polosukhin, 2017), eq. 1 and §3.2.2 (multi-head attention):

    q_t = W_q x_t,  k_t = W_k x_t,  v_t = W_v x_t            split into H heads of d = head_dim
    o_t = softmax_s(q_t · k_s / √d + m_{ts}) v_s               per head, m_{ts} = 0 or −∞
    y_t = W_o concat_h(o_{t,h})

``attention`` is causal (``m_{ts} = −∞`` for ``s > t``), ``attention_bidirectional``
sees the whole sequence. Every query meets every key: time and memory grow as
``L²`` (an ``(L × L)`` logit matrix per head is built); this is the quadratic baseline,
not a fast path. Logits and softmax are computed in float32 (or wider) with
``common.masked_softmax``; the scale is ``1/√head_dim``.

**Positions** (``rope=True``, the default): rotary position embedding, "RoFormer:
Enhanced Transformer with Rotary Position Embedding" (Su, Lu, Pan, Murtadha, Wen, Liu,
2021), §3.2–3.4. Each pair of features ``(x_{2i}, x_{2i+1})`` of a query or key at
position ``p`` is rotated by the angle ``p θ_i``, ``θ_i = base^{−2i/d}``
(``i = 0..d/2−1``, ``base = 10000``):

    x'_{2i}   = x_{2i} cos(p θ_i) − x_{2i+1} sin(p θ_i)
    x'_{2i+1} = x_{2i} sin(p θ_i) + x_{2i+1} cos(p θ_i)

so ``q'_t · k'_s`` depends on ``t − s`` only. Values are not rotated. ``rope=False``
gives attention without positions (a causal stack can still infer positions from the
mask, but weakly).

**Step** (causal mixer only) runs over a key/value cache (:class:`KVCache`)
preallocated for ``max_length`` positions (default 4096): the token's rotated key and
value are written at slot ``position mod max_length`` before it attends over the filled
slots (the others are masked), so ``step`` equals the parallel output token by token
while ``position < max_length``. Past that the cache is a ring buffer: a step then
attends over the last ``max_length`` tokens (sliding-window attention with RoPE's
relative positions intact), no longer the full prefix. This can be detected only when
the position is concrete: an eager ``step`` (outside ``jit``) past ``max_length``
raises ``ValueError``; under ``jit`` the sliding-window behaviour applies silently, so
size ``max_length`` for the longest generation. The cost of a step is
``O(max_length · d_model)`` whatever the position. The parallel forward has no length
limit.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .base import Mixer, register
from .options import Interval
from .common import Dense, check_positive_int, masked_softmax


class KVCache(NamedTuple):
    """Decoding cache of the causal attention mixer (all float32).

    position: ``(B,)`` tokens seen so far (an exact count up to 2^24).
    keys: ``(B, max_length, H, head_dim)`` keys after RoPE, slot ``t mod max_length``.
    values: ``(B, max_length, H, head_dim)``.
    """

    position: jax.Array
    keys: jax.Array
    values: jax.Array


def rotary_frequencies(head_dim: int, base: float = 10000.0) -> np.ndarray:
    """``θ_i = base^{−2i/head_dim}``, ``i = 0..head_dim/2 − 1`` (float64 numpy)."""
    return base ** (-np.arange(0, head_dim, 2) / head_dim)


def rotary_embedding(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
    """Rotate feature pairs ``(x_{2i}, x_{2i+1})`` by ``p θ_i`` (RoPE).

    Args:
      x: ``(batch, length, heads, head_dim)`` with an even ``head_dim``.
      positions: ``(batch or 1, length)`` positions (any real dtype; float32 is exact
        for integers up to 2^24).
      base: the frequency base of ``θ_i``.

    Returns ``x``'s shape and dtype; angles and rotation in float32 (or wider).
    """
    if x.ndim != 4 or x.shape[-1] % 2:
        raise ValueError(f"x must have shape (batch, length, heads, head_dim) with an even head_dim; "
                         f"got shape {x.shape}")
    if positions.ndim != 2 or positions.shape[1] != x.shape[1] or positions.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"positions must have shape ({x.shape[0]} or 1, {x.shape[1]}); got {positions.shape}")
    dtype = jnp.promote_types(jnp.promote_types(x.dtype, positions.dtype), jnp.float32)
    theta = jnp.asarray(rotary_frequencies(x.shape[-1], base), dtype)
    angle = positions.astype(dtype)[:, :, None, None] * theta[None, None, None, :]  # (B, L, 1, d/2)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    pairs = x.astype(dtype).reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)


def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float) -> jax.Array:
    """``softmax(q kᵀ · scale + mask) v`` per head.

    ``q (B, Lq, H, d)``, ``k, v (B, Lk, H, d)``, ``mask`` boolean broadcastable to
    ``(B, H, Lq, Lk)`` (rank 4); logits and softmax in float32 (or wider); returns
    ``(B, Lq, H, d)`` in ``q.dtype``.

    A non-finite key or value reaches exactly the queries whose mask admits it: masked
    weights are exactly 0, but ``0 · NaN`` is NaN, so non-finite keys and values enter
    the products as 0 and the queries that admit one are set to NaN afterwards (a NaN at
    step ``t`` of a causal sequence leaves the outputs before ``t`` intact).
    """
    acc = jnp.promote_types(q.dtype, jnp.float32)
    finite = jnp.all(jnp.isfinite(k), axis=-1) & jnp.all(jnp.isfinite(v), axis=-1)      # (B, Lk, H)
    k, v = (jnp.where(finite[..., None], a, 0).astype(q.dtype) for a in (k, v))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=acc) * scale
    weights = masked_softmax(logits, mask)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(q.dtype), v, preferred_element_type=acc)
    admits_non_finite = jnp.any(mask & ~jnp.moveaxis(finite, 1, 2)[:, :, None, :], axis=-1)  # (B, H, Lq)
    out = jnp.where(jnp.moveaxis(admits_non_finite, 1, 2)[..., None], jnp.nan, out)
    return out.astype(q.dtype)


@register("attention", example_options={"num_heads": 2, "max_length": 512})
class Attention(Mixer):
    """Causal multi-head softmax attention (the quadratic baseline) with a KV cache for ``step``.

    Args:
      d_model: model width.
      num_heads: heads ``H``; ``head_dim`` defaults to ``d_model // num_heads``.
      rope: rotary position embedding on queries and keys (``head_dim`` must be even).
      rope_base: the frequency base of RoPE.
      max_length: positions the ``step`` cache holds (``init_state``); the parallel
        forward has no limit.
      use_bias: biases in the four projections.
    """

    option_ranges = {"rope_base": Interval(1, open_low=True)}

    causal = True

    def __init__(self, d_model: int, *, num_heads: int = 4, head_dim: int | None = None, rope: bool = True,
                 rope_base: float = 10000.0, max_length: int = 4096, use_bias: bool = True, rngs: nnx.Rngs):
        check_positive_int("num_heads", num_heads)
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads} "
                                 "(or pass head_dim)")
            head_dim = d_model // num_heads
        check_positive_int("head_dim", head_dim, even=rope)
        check_positive_int("max_length", max_length)
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, head_dim
        self.rope, self.rope_base, self.max_length = bool(rope), float(rope_base), max_length
        self.scale = 1.0 / math.sqrt(head_dim)
        width = num_heads * head_dim
        self.query = Dense(d_model, width, use_bias=use_bias, rngs=rngs)
        self.key = Dense(d_model, width, use_bias=use_bias, rngs=rngs)
        self.value = Dense(d_model, width, use_bias=use_bias, rngs=rngs)
        self.out = Dense(width, d_model, use_bias=use_bias, rngs=rngs)

    def _qkv(self, x, positions):
        """x ``(B, L, d_model)``, positions ``(B or 1, L)`` -> q, k, v ``(B, L, H, d)`` (q, k rotated)."""
        heads = x.shape[:-1] + (self.num_heads, self.head_dim)
        q, k, v = (proj(x).reshape(heads) for proj in (self.query, self.key, self.value))
        if self.rope:
            q = rotary_embedding(q, positions, base=self.rope_base)
            k = rotary_embedding(k, positions, base=self.rope_base)
        return q, k, v

    def _project(self, o):
        return self.out(o.reshape(o.shape[:-2] + (self.num_heads * self.head_dim,)))

    def forward(self, x):
        length = x.shape[1]
        q, k, v = self._qkv(x, jnp.arange(length, dtype=jnp.float32)[None])
        if self.causal:
            mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
        else:
            mask = jnp.ones((1, 1, 1, 1), bool)
        return self._project(softmax_attention(q, k, v, mask, self.scale))

    # -- recurrent form -----------------------------------------------------------------

    def init_state(self, batch_size: int) -> KVCache:
        """An empty cache of ``max_length`` positions."""
        if not self.causal:
            return super().init_state(batch_size)
        shape = (batch_size, self.max_length, self.num_heads, self.head_dim)
        return KVCache(jnp.zeros((batch_size,), jnp.float32), jnp.zeros(shape, jnp.float32),
                       jnp.zeros(shape, jnp.float32))

    def _check_room(self, position) -> None:
        """Eagerly (a concrete position) refuse to step past ``max_length``; traced: nothing to check."""
        try:
            filled = np.asarray(position)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            return
        if filled.size and int(filled.max()) >= self.max_length:
            raise ValueError(f"the KV cache holds max_length={self.max_length} positions; this step would "
                             f"write position {int(filled.max())} (build the mixer with a larger max_length; "
                             "under jit the cache wraps around and attends over the last max_length tokens)")

    def forward_step(self, x_t, state: KVCache):
        self._check_room(state.position)
        batch = x_t.shape[0]
        q, k, v = self._qkv(x_t[:, None], state.position[:, None])                       # (B, 1, H, d)
        position = state.position.astype(jnp.int32)
        rows, slot = jnp.arange(batch), position % self.max_length
        keys = state.keys.at[rows, slot].set(k[:, 0].astype(jnp.float32))
        values = state.values.at[rows, slot].set(v[:, 0].astype(jnp.float32))
        filled = jnp.arange(self.max_length)[None, :] <= position[:, None]              # (B, max_length)
        o = softmax_attention(q, keys, values, filled[:, None, None, :], self.scale)
        return self._project(o[:, 0]), KVCache(state.position + 1.0, keys, values)


@register("attention_bidirectional", example_options={"num_heads": 2})
class AttentionBidirectional(Attention):
    """Non-causal multi-head softmax attention: every position sees the whole sequence."""

    causal = False
