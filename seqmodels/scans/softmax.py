"""Causal softmax attention with one query per head as a prefix scan.

"Attention as an RNN" (Feng et al., 2024, Aaren), eq. 3-5: for scores ``s_i`` and values
``v_i``,

    o_t = Σ_{i≤t} exp(s_i) v_i / Σ_{i≤t} exp(s_i),

kept as a running state ``(m, u, w)`` = (max score, ``Σ exp(s_i − m)``,
``Σ exp(s_i − m) v_i``). States combine associatively by the log-sum-exp operator

    m = max(m_l, m_r),  u = u_l e^{m_l−m} + u_r e^{m_r−m},  w = w_l e^{m_l−m} + w_r e^{m_r−m},

with identity ``(−∞, 0, 0)`` and leaf ``(s_i, 1, v_i)`` (``(−∞, 0, 0)`` for a masked
step, ``s_i = −∞``); the output is ``w / u`` (0 while ``u = 0``). Every exponent is
``≤ 0``, so scores of any magnitude are safe. The only ``−∞ − (−∞)`` arises when both
sides are empty; the reference point ``m`` is then replaced by 0 *before* the
subtraction (never a ``where`` after a NaN, which would poison the gradient).

Internally ``u`` travels as one more column of ``w`` (``z = [w, u] = Σ e^{s_i−m} [v_i, 1]``):
one array instead of two halves the program ``lax.associative_scan`` builds.

Methods: ``"sequential"`` (``lax.scan`` of the RNN step), ``"associative"``
(``lax.associative_scan`` of the operator) and ``"chunked"`` (inside a chunk of C steps
the local states are a masked ``C × C`` softmax-weight matrix times the values -- one
matmul -- then a sequential scan of chunk states and a fix-up ``carry ∘ local_t``).

:func:`cumulative_logsumexp` is the log of this scan's normalizer alone,
``z_t = log Σ_{i≤t} exp(x_i) = m_t + log u_t``, for independent channels (LightNet's
per-key-feature running softmax). XLA's own ``lax.cumlogsumexp`` lowers on CPU to
``reduce_window`` passes (after XLA's rewrite: windows of 16, 16 and 4 steps for
``L = 1024``), about 36 scalar ``logaddexp`` evaluations per element: 490 ms at
``(4, 1024, 8, 32)`` against 3.5 ms for the sequential scan of
``z_t = logaddexp(z_{t-1}, x_t)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _checks
from ._dispatch import resolve_method
from .reference import SoftmaxState

_HIGHEST = jax.lax.Precision.HIGHEST


def softmax_scan(scores: Float[Array, "B L *heads"], v: Float[Array, "B L *heads Dv"],
                 state: SoftmaxState | None = None, *, method: str = "auto",
                 chunk_size: int | None = None) -> tuple[Float[Array, "B L *heads Dv"], SoftmaxState]:
    """Causal running softmax of ``v`` weighted by ``exp(scores)`` along axis 1.

    Args:
      scores: ``(B, L, *heads)``; ``-inf`` masks a step.
      v: values ``(B, L, *heads, Dv)``.
      state: :class:`~seqmodels.scans.SoftmaxState` ``(max, normalizer, weighted_sum)``
        with shapes ``(B, *heads)``, ``(B, *heads)``, ``(B, *heads, Dv)``; the empty
        state ``(-inf, 0, 0)`` if None.
      method: ``"auto" | "sequential" | "associative" | "chunked"``.
      chunk_size: chunk length for ``"chunked"`` (default 64); need not divide L.

    Returns:
      ``(o, final_state)``: outputs ``(B, L, *heads, Dv)`` (0 where no step so far is
      unmasked) in the dtype of ``scores`` promoted with ``v``, and the state after the
      last step as a ``SoftmaxState`` in the accumulation dtype (float32 or wider), so
      that a bfloat16 stream carries an unrounded state from call to call.
    """
    _checks.check_floating("scores", scores)
    _checks.check_floating("v", v)
    _checks.check_min_ndim("scores", scores, 2, "(batch, length, *heads)")
    _checks.check_shape("v", v, tuple(scores.shape) + (None,))
    heads_shape = (scores.shape[0],) + scores.shape[2:]
    Dv = v.shape[-1]
    if state is not None:
        if not isinstance(state, tuple) or len(state) != 3:
            raise ValueError(
                f"state must be a SoftmaxState(max, normalizer, weighted_sum); got {type(state).__name__}"
            )
        state = SoftmaxState(*state)
        _checks.check_shape("state.max", state.max, heads_shape)
        _checks.check_shape("state.normalizer", state.normalizer, heads_shape)
        _checks.check_shape("state.weighted_sum", state.weighted_sum, heads_shape + (Dv,))
        for name, x in zip(("state.max", "state.normalizer", "state.weighted_sum"), state):
            _checks.check_floating(name, x)
    _checks.check_method(method, _checks.METHODS)
    _checks.check_chunk_size(chunk_size)
    out_dtype = jnp.result_type(scores, v)
    acc = _checks.accumulation_dtype(scores, v)

    # Heads flattened to one axis, and u carried as an extra value column: the state is
    # (m, z) with z = [w, u] = Σ e^{s_i − m} [v_i, 1], one array for both sums.
    B, L = scores.shape[:2]
    H = math.prod(scores.shape[2:])
    s = jnp.asarray(scores, acc).reshape(B, L, H)
    x = jnp.asarray(v, acc).reshape(B, L, H, Dv)
    x = jnp.concatenate([x, jnp.ones((B, L, H, 1), acc)], -1)
    if state is None:
        carry = (jnp.full((B, H), -jnp.inf, acc), jnp.zeros((B, H, Dv + 1), acc))
    else:
        weighted_sum = jnp.asarray(state.weighted_sum, acc).reshape(B, H, Dv)
        normalizer = jnp.asarray(state.normalizer, acc).reshape(B, H, 1)
        carry = (jnp.asarray(state.max, acc).reshape(B, H), jnp.concatenate([weighted_sum, normalizer], -1))

    method = resolve_method(
        "softmax_scan", method, scores.shape, state_history_bytes=x.size * x.dtype.itemsize
    ) if L else "sequential"  # L = 0: the sequential scan returns the state unchanged
    if method == "sequential":
        (m, z), z_all = _sequential(s, x, carry)
    elif method == "associative":
        (m, z), z_all = _associative(s, x, carry)
    else:
        (m, z), z_all = _chunked(s, x, carry, chunk_size or 64)
    o = _output(z_all).reshape(v.shape).astype(out_dtype)
    final = SoftmaxState(
        m.reshape(heads_shape), z[..., -1].reshape(heads_shape), z[..., :-1].reshape(heads_shape + (Dv,))
    )
    return o, final


CUMULATIVE_LOGSUMEXP_METHODS = ("auto", "sequential", "associative")


def cumulative_logsumexp(x: Float[Array, "B L *S"], z0: Float[Array, "B *S"] | None = None, *,
                         method: str = "auto") -> tuple[Float[Array, "B L *S"], Float[Array, "B *S"]]:
    """``z_t = log(exp(z0) + Σ_{i≤t} exp(x_i))`` along axis 1, every other axis independent.

    Args:
      x: ``(B, L, *S)``; ``-inf`` entries add nothing.
      z0: the log-sum-exp of earlier steps ``(B, *S)``; ``-inf`` (none) if None.
      method: ``"auto" | "sequential" | "associative"``: a ``lax.scan`` of
        ``z_t = logaddexp(z_{t-1}, x_t)`` (CPU's ``"auto"``) or ``lax.associative_scan``
        of ``logaddexp`` (accelerators' ``"auto"``).

    Returns:
      ``(z, z_L)``: ``(B, L, *S)`` in ``x``'s dtype promoted with ``z0``'s, and the last
      step ``(B, *S)`` in the accumulation dtype (float32 or wider). Gradients are
      finite wherever ``z`` is (``jnp.logaddexp`` differentiates ``-inf`` operands to 0).
    """
    _checks.check_floating("x", x)
    _checks.check_min_ndim("x", x, 2, "(batch, length, ...)")
    if z0 is not None:
        _checks.check_floating("z0", z0)
        _checks.check_shape("z0", z0, x.shape[:1] + x.shape[2:])
    _checks.check_method(method, CUMULATIVE_LOGSUMEXP_METHODS)
    optional = () if z0 is None else (z0,)
    out_dtype = jnp.result_type(x, *optional)
    acc = _checks.accumulation_dtype(x, *optional)
    x = jnp.asarray(x, acc)
    first = jnp.full(x.shape[:1] + x.shape[2:], -jnp.inf, acc) if z0 is None else jnp.asarray(z0, acc)
    if x.shape[1] == 0:
        return x.astype(out_dtype), first
    if resolve_method("cumulative_logsumexp", method) == "sequential":
        def step(z, x_t):
            z = jnp.logaddexp(z, x_t)
            return z, z

        last, z = jax.lax.scan(step, first, jnp.moveaxis(x, 1, 0))
        z = jnp.moveaxis(z, 0, 1)
    else:
        z = jax.lax.associative_scan(jnp.logaddexp, x.at[:, 0].set(jnp.logaddexp(first, x[:, 0])), axis=1)
        last = z[:, -1]
    return z.astype(out_dtype), last


def _safe(m):
    """The reference point for exponents: ``m``, or 0 where ``m = -inf`` (empty state)."""
    return jnp.where(jnp.isneginf(m), jnp.zeros_like(m), m)


def _output(z):
    """``w / u`` from ``z = [w, u]``, 0 where ``u = 0`` (no unmasked step yet)."""
    u = z[..., -1:]
    return z[..., :-1] / jnp.where(u == 0, jnp.ones_like(u), u)


def _combine(left, right):
    """``left ∘ right`` (left first) on ``(m, z)``; any leading axes, ``z`` has one more."""
    m_l, z_l = left
    m_r, z_r = right
    m = jnp.maximum(m_l, m_r)
    ref = _safe(m)
    return m, jnp.exp(m_l - ref)[..., None] * z_l + jnp.exp(m_r - ref)[..., None] * z_r


def _leaves(s, x):
    """Per-step states ``(s_i, [v_i, 1])``, or ``(-inf, 0)`` for masked steps."""
    keep = jnp.exp(s - _safe(s))  # 1, or 0 where s = -inf; gradient 0 either way
    return s, keep[..., None] * x


def _sequential(s, x, carry):
    def step(carry, leaf):
        carry = _combine(carry, leaf)
        return carry, carry[1]

    leaves = jax.tree.map(lambda a: jnp.moveaxis(a, 1, 0), _leaves(s, x))
    final, z = jax.lax.scan(step, carry, leaves)
    return final, jnp.moveaxis(z, 0, 1)


def _associative(s, x, carry):
    m, z = _leaves(s, x)
    m0, z0 = _combine(carry, (m[:, 0], z[:, 0]))  # fold the state into step 0
    m, z = jax.lax.associative_scan(_combine, (m.at[:, 0].set(m0), z.at[:, 0].set(z0)), axis=1)
    return (m[:, -1], z[:, -1]), z


def _chunked(s, x, carry, chunk_size):
    """Masked ``C × C`` weights within chunks, a scan of chunk states, then ``carry ∘ local``."""
    B, L, H = s.shape
    D = x.shape[-1]
    C = min(chunk_size, L)
    n = -(-L // C)
    pad = n * C - L
    if pad:  # masked steps after the end leave every state unchanged
        s = jnp.pad(s, [(0, 0), (0, pad), (0, 0)], constant_values=-jnp.inf)
        x = jnp.pad(x, [(0, 0), (0, pad), (0, 0), (0, 0)])
    s = s.reshape(B, n, C, H)
    x = x.reshape(B, n, C, H, D)
    causal = jnp.tril(jnp.ones((C, C), bool)).reshape(1, 1, C, C, 1)  # [t, i]: i ≤ t
    s_ti = jnp.where(causal, s[:, :, None, :, :], -jnp.inf)  # (B, n, C_t, C_i, H)
    m = jnp.max(s_ti, axis=3)  # running max inside the chunk, (B, n, C, H)
    # Mask the exponent, not the exponential: exp(-inf) = 0 has a zero gradient, while an
    # overflowing exp(s_i - m_t) for i > t would turn into NaN in the backward pass.
    p = jnp.exp(s_ti - _safe(m)[:, :, :, None, :])
    z = jnp.einsum("bntih,bnihd->bnthd", p, x, precision=_HIGHEST)

    def across(carry, chunk):
        return _combine(carry, chunk), carry  # emit the state *into* each chunk

    final, carries = jax.lax.scan(across, carry, (jnp.moveaxis(m[:, :, -1], 1, 0), jnp.moveaxis(z[:, :, -1], 1, 0)))
    carries = jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1)[:, :, None], carries)  # (B, n, 1, ...)
    _, z = _combine(carries, (m, z))
    return final, z.reshape(B, n * C, H, D)[:, :L]
