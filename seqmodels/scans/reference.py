"""Plain-loop references for every recurrence in the scan core.

Written for clarity, not speed: one step of the recurrence per loop iteration, in
the accumulation dtype (float32, or float64 when the inputs are float64). The fast
paths in ``seqmodels.scans`` are tested against these functions, and a user who
doubts a fast path can swap one in. They take the same arguments and return the same
``(outputs, final_state)`` as the fast functions, without ``method`` options.

Conventions (shared with the fast paths):
  * batch first, time on axis 1;
  * ``reverse=True`` runs from the last step to the first, and the final state is the
    state after step 0;
  * ``reset[b, t]`` zeroes the state carried *into* step t.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import accumulation_dtype


class SoftmaxState(NamedTuple):
    """Running state of a causal softmax: ``max`` and ``normalizer`` are ``(B, *heads)``,
    ``weighted_sum`` is ``(B, *heads, Dv)``. The empty state is ``(-inf, 0, 0)``."""

    max: jax.Array
    normalizer: jax.Array
    weighted_sum: jax.Array


def _time_loop(step, carry, xs, reverse):
    """Runs ``step(carry, x_t) -> (carry, y_t)`` over axis 1 of every leaf of ``xs``."""
    xs = jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), xs)
    carry, ys = jax.lax.scan(step, carry, xs, reverse=reverse)
    return jax.tree.map(lambda y: jnp.moveaxis(y, 0, 1), ys), carry


def linear_scan(a, b, h0=None, *, reverse=False, reset=None):
    """``h_t = a_t * h_{t-1} + b_t`` (elementwise); ``a`` broadcasts against ``b``."""
    dtype = accumulation_dtype(a, b)
    a = jnp.broadcast_to(jnp.asarray(a, dtype), b.shape)
    b = jnp.asarray(b, dtype)
    if reset is None:
        reset = jnp.zeros(b.shape[:2], bool)
    h = jnp.zeros((b.shape[0],) + b.shape[2:], dtype) if h0 is None else jnp.asarray(h0, dtype)

    def step(h, inputs):
        a_t, b_t, reset_t = inputs
        h = jnp.where(reset_t.reshape(reset_t.shape + (1,) * (h.ndim - 1)), 0, h)
        h = a_t * h + b_t
        return h, h

    return _time_loop(step, h, (a, b, reset), reverse)


def matrix_scan(A, b, h0=None, *, reverse=False):
    """``h_t = A_t @ h_{t-1} + b_t`` with dense ``A_t``; ``b`` is ``(B, L, ..., N)``."""
    dtype = accumulation_dtype(A, b)
    A = jnp.broadcast_to(jnp.asarray(A, dtype), b.shape + b.shape[-1:])
    b = jnp.asarray(b, dtype)
    h = jnp.zeros((b.shape[0],) + b.shape[2:], dtype) if h0 is None else jnp.asarray(h0, dtype)

    def step(h, inputs):
        A_t, b_t = inputs
        h = jnp.einsum("...ij,...j->...i", A_t, h) + b_t
        return h, h

    return _time_loop(step, h, (A, b), reverse)


def linear_attention(q, k, v, log_decay=None, s0=None):
    """``S_t = exp(g_t) S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t``.

    q, k: ``(B, L, H, Dk)``; v: ``(B, L, H, Dv)``; ``log_decay`` g: ``(B, L, H)`` or
    ``(B, L, H, Dk)`` (a per-key-feature decay scales the rows of S); state
    ``(B, H, Dk, Dv)``.
    """
    dtype = accumulation_dtype(q, k, v, *(x for x in (log_decay, s0) if x is not None))
    B, L, H, Dk = k.shape
    Dv = v.shape[-1]
    if log_decay is None:
        log_decay = jnp.zeros((B, L, H), dtype)
    log_decay = jnp.asarray(log_decay, dtype)
    if log_decay.ndim == 3:
        log_decay = log_decay[..., None]
    log_decay = jnp.broadcast_to(log_decay, (B, L, H, Dk))
    S = jnp.zeros((B, H, Dk, Dv), dtype) if s0 is None else jnp.asarray(s0, dtype)

    def step(S, inputs):
        q_t, k_t, v_t, g_t = inputs
        S = jnp.exp(g_t)[..., None] * S + k_t[..., :, None] * v_t[..., None, :]
        return S, jnp.einsum("bhkv,bhk->bhv", S, q_t)

    q, k, v = (jnp.asarray(x, dtype) for x in (q, k, v))
    return _time_loop(step, S, (q, k, v, log_decay), reverse=False)



def plstm_scan(q, k, v, source, transition, mark, direct, initial_state=None):
    """pLSTM 1-D: ``C_t = T_t C_{t-1} + S_t ⊗ k_t v_tᵀ``, ``h_t = Σ_i M_t[i] C_{t-1}[·,·,i]ᵀ q_t
    + D_t (q_t·k_t) v_t`` (the output reads the state *before* the step).

    q, k: ``(B, L, H, Dk)``; v: ``(B, L, H, Dv)``; source, mark: ``(B, L, H, N)``;
    transition: ``(B, L, H, N, N)``; direct: ``(B, L, H)``; state ``(B, H, Dk, Dv, N)``.
    """
    arrays = (q, k, v, source, transition, mark, direct)
    dtype = accumulation_dtype(*arrays, *(() if initial_state is None else (initial_state,)))
    B, L, H, Dk = q.shape
    Dv, N = v.shape[-1], source.shape[-1]
    C = jnp.zeros((B, H, Dk, Dv, N), dtype) if initial_state is None else jnp.asarray(initial_state, dtype)

    def step(C, inputs):
        q_t, k_t, v_t, s_t, T_t, m_t, d_t = inputs
        h = jnp.zeros((B, H, Dv), dtype)
        for i in range(N):
            h = h + m_t[..., i, None] * jnp.einsum("bhd,bhdv->bhv", q_t, C[..., i])
        h = h + (d_t * jnp.sum(q_t * k_t, axis=-1))[..., None] * v_t
        kv = k_t[..., :, None] * v_t[..., None, :]
        C = jnp.stack([sum(T_t[..., i, j, None, None] * C[..., j] for j in range(N)) + s_t[..., i, None, None] * kv
                       for i in range(N)], axis=-1)
        return C, h

    return _time_loop(step, C, tuple(jnp.asarray(x, dtype) for x in arrays), reverse=False)


def softmax_scan(scores, v, state=None):
    """``o_t = Σ_{i≤t} exp(s_i) v_i / Σ_{i≤t} exp(s_i)``, one running softmax per head.

    scores: ``(B, L, *heads)``; v: ``(B, L, *heads, Dv)``; state: :class:`SoftmaxState`.
    A step whose score is ``-inf`` is masked; an output with no unmasked step so far is 0.
    """
    dtype = accumulation_dtype(scores, v)
    scores, v = jnp.asarray(scores, dtype), jnp.asarray(v, dtype)
    if state is None:
        heads = (scores.shape[0],) + scores.shape[2:]
        state = SoftmaxState(
            jnp.full(heads, -jnp.inf, dtype), jnp.zeros(heads, dtype), jnp.zeros(v.shape[:1] + v.shape[2:], dtype)
        )
    state = SoftmaxState(*(jnp.asarray(x, dtype) for x in state))

    def step(state, inputs):
        s_t, v_t = inputs
        m = jnp.maximum(state.max, s_t)
        # exp(-inf - finite) = 0 is fine; guard -inf - (-inf) = nan for a still-empty state.
        m_safe = jnp.where(jnp.isneginf(m), 0.0, m)
        old = jnp.exp(state.max - m_safe)
        new = jnp.exp(s_t - m_safe)
        u = old * state.normalizer + new
        w = old[..., None] * state.weighted_sum + new[..., None] * v_t
        out = w / jnp.where(u == 0, 1.0, u)[..., None]
        return SoftmaxState(m, u, w), out

    return _time_loop(step, state, (scores, v), reverse=False)


def cumulative_logsumexp(x, z0=None):
    """``z_t = log(exp(z_{t-1}) + exp(x_t))`` along axis 1, from ``z0`` (``-inf`` if None);
    the running max and the sum of ``exp(x_i − max)`` are carried (the normalizer of
    :func:`softmax_scan`), so nothing is formed by ``logaddexp``."""
    dtype = accumulation_dtype(x)
    x = jnp.asarray(x, dtype)
    start = jnp.full(x.shape[:1] + x.shape[2:], -jnp.inf, dtype) if z0 is None else jnp.asarray(z0, dtype)
    m0 = start
    u0 = jnp.where(jnp.isneginf(start), 0.0, 1.0).astype(dtype)

    def step(carry, x_t):
        m, u = carry
        m_new = jnp.maximum(m, x_t)
        m_safe = jnp.where(jnp.isneginf(m_new), 0.0, m_new)
        u = u * jnp.exp(m - m_safe) + jnp.exp(x_t - m_safe)
        return (m_new, u), m_new + jnp.log(u)

    z, (m, u) = _time_loop(step, (m0, u0), x, reverse=False)
    return z, m + jnp.log(u)


def fft_conv(u, kernel, *, causal=True):
    """Direct convolution along time, for checking ``scans.fft_conv``.

    u: ``(B, L, ...)``; kernel: ``(K, ...)`` or ``(B, K, ...)``.
    causal: ``y_t = Σ_{j=0}^{min(t, K-1)} k_j u_{t-j}``.
    non-causal (K odd, centre c = (K-1)/2): ``y_t = Σ_j k_j u_{t-j+c}`` with zero padding,
    i.e. numpy's ``convolve(u, k, mode="same")``.
    """
    dtype = accumulation_dtype(u, kernel)
    u = jnp.asarray(u, dtype)
    kernel = jnp.asarray(kernel, dtype)
    if kernel.ndim == u.ndim - 1:
        kernel = kernel[None]
    L, K = u.shape[1], kernel.shape[1]
    shift = 0 if causal else (K - 1) // 2
    y = jnp.zeros(jnp.broadcast_shapes(u.shape, (kernel.shape[0], L) + kernel.shape[2:]), dtype)
    for j in range(K):
        lag = j - shift  # y_t += k_j * u_{t - lag}
        if lag >= L or -lag >= L:
            continue
        if lag >= 0:
            y = y.at[:, lag:].add(kernel[:, j : j + 1] * u[:, : L - lag])
        else:
            y = y.at[:, : L + lag].add(kernel[:, j : j + 1] * u[:, -lag:])
    return y


def delta_rule(q, k, v, beta, log_gate=None, s0=None):
    """The (gated) delta rule with ``n_h`` generalized Householder steps per token.

    For each token: ``S ← exp(g_t) S``; then for ``j = 1..n_h``
    ``S ← (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S + β_{t,j} k_{t,j} v_{t,j}ᵀ`` (the Householder
    matrix is formed explicitly); finally ``o_t = Sᵀ q_t``.

    q: ``(B, L, H, Dk)``; k: ``(B, L, H, n_h, Dk)`` (or ``(B, L, H, Dk)`` for ``n_h = 1``);
    v: ``(B, L, H, n_h, Dv)`` (or ``(B, L, H, Dv)``); beta: ``(B, L, H, n_h)`` (or
    ``(B, L, H)``); log_gate g: ``(B, L, H)`` or None; state ``(B, H, Dk, Dv)``.
    """
    dtype = accumulation_dtype(q, k, v, beta, *(x for x in (log_gate, s0) if x is not None))
    if k.ndim == 4:
        k, v, beta = k[:, :, :, None], v[:, :, :, None], beta[..., None]
    B, L, H, n_h, Dk = k.shape
    Dv = v.shape[-1]
    if log_gate is None:
        log_gate = jnp.zeros((B, L, H), dtype)
    S = jnp.zeros((B, H, Dk, Dv), dtype) if s0 is None else jnp.asarray(s0, dtype)
    identity = jnp.eye(Dk, dtype=dtype)[None, None]

    def step(S, inputs):
        q_t, k_t, v_t, beta_t, g_t = inputs
        S = jnp.exp(g_t)[..., None, None] * S
        for j in range(n_h):
            k_j, v_j, b_j = k_t[:, :, j], v_t[:, :, j], beta_t[:, :, j, None, None]
            householder = identity - b_j * (k_j[..., :, None] * k_j[..., None, :])
            S = householder @ S + b_j * (k_j[..., :, None] * v_j[..., None, :])
        return S, jnp.einsum("bhkv,bhk->bhv", S, q_t)

    inputs = tuple(jnp.asarray(x, dtype) for x in (q, k, v, beta, log_gate))
    return _time_loop(step, S, inputs, reverse=False)


def grid_scan(b_r, b_d, T_rl=None, T_ru=None, T_dl=None, T_du=None, h0_left=None, h0_top=None,
              *, reverse=(False, False), exclusive=False):
    """pLSTM's 2-D grid recurrence, one cell at a time (see ``seqmodels.scans.grid``).

    ``Cr(x,y) = T_rl Cr(x-1,y) + T_ru Cd(x,y-1) + b_r`` and
    ``Cd(x,y) = T_du Cd(x,y-1) + T_dl Cr(x-1,y) + b_d``, where "x-1" / "y-1" is the
    previous cell in the direction of travel (``x+1`` when ``reverse[0]``). Cells are
    visited row by row in that direction -- no flipping, no skewing. ``b_*``:
    ``(B, X, Y, ..., N)``; ``T_*``: broadcastable to ``(B, X, Y, ..., N, N)`` or None;
    ``h0_left``: ``(B, Y, ..., N)``; ``h0_top``: ``(B, X, ..., N)``. Returns
    ``((Cr, Cd), (last_r, last_d))`` like the fast path.
    """
    present = [T for T in (T_rl, T_ru, T_dl, T_du) if T is not None]
    dtype = accumulation_dtype(b_r, b_d, *present)
    B, X, Y = b_r.shape[:3]
    feat = b_r.shape[3:]
    N = feat[-1]
    b_r, b_d = jnp.asarray(b_r, dtype), jnp.asarray(b_d, dtype)

    def full(T):
        if T is None:
            return jnp.zeros(b_r.shape + (N,), dtype)
        T = jnp.asarray(T, dtype)
        return jnp.broadcast_to(T.reshape((1,) * (b_r.ndim + 1 - T.ndim) + T.shape), b_r.shape + (N,))

    T_rl, T_ru, T_dl, T_du = (full(T) for T in (T_rl, T_ru, T_dl, T_du))
    left = jnp.zeros((B, Y) + feat, dtype) if h0_left is None else jnp.asarray(h0_left, dtype)
    top = jnp.zeros((B, X) + feat, dtype) if h0_top is None else jnp.asarray(h0_top, dtype)
    x_order = range(X - 1, -1, -1) if reverse[0] else range(X)
    y_order = range(Y - 1, -1, -1) if reverse[1] else range(Y)
    Cr, Cd = jnp.zeros_like(b_r), jnp.zeros_like(b_d)
    In_r, In_d = jnp.zeros_like(b_r), jnp.zeros_like(b_d)

    def matvec(T, h):
        return jnp.einsum("...ij,...j->...i", T, h)

    px = None
    for x in x_order:
        py = None
        for y in y_order:
            cl = left[:, y] if px is None else Cr[:, px, y]
            cu = top[:, x] if py is None else Cd[:, x, py]
            Cr = Cr.at[:, x, y].set(matvec(T_rl[:, x, y], cl) + matvec(T_ru[:, x, y], cu) + b_r[:, x, y])
            Cd = Cd.at[:, x, y].set(matvec(T_du[:, x, y], cu) + matvec(T_dl[:, x, y], cl) + b_d[:, x, y])
            In_r, In_d = In_r.at[:, x, y].set(cl), In_d.at[:, x, y].set(cu)
            py = y
        px = x
    last_r, last_d = Cr[:, px], Cd[:, :, py]
    return ((In_r, In_d) if exclusive else (Cr, Cd)), (last_r, last_d)
