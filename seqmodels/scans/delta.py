"""The (gated) delta rule and its product form, DeltaProduct.

Per head the state ``S`` is a ``Dk × Dv`` matrix. Token ``t`` brings a query ``q_t``,
an optional log gate ``g_t ≤ 0`` and ``n_h`` key/value/step triples
``(k_{t,j}, v_{t,j}, β_{t,j})``, ``j = 1..n_h``::

    S ← exp(g_t) S                                        (once per token, first)
    S ← (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S + β_{t,j} k_{t,j} v_{t,j}ᵀ     for j = 1..n_h
    o_t = Sᵀ q_t                                          (after the last step)

Each step is one online gradient step on ``½‖Sᵀk − v‖²`` with step size ``β``. With
``n_h = 1`` this is DeltaNet (Schlag et al., "Linear Transformers Are Secretly Fast
Weight Programmers", 2021, eq. 23; Yang et al., "Parallelizing Linear Transformers
with the Delta Rule over Sequence Length", 2024, eq. 1) and, with the gate, Gated
DeltaNet (Yang, Kautz, Hatamizadeh, "Gated Delta Networks", 2025, eq. 10). With
``n_h > 1`` the per-token transition ``exp(g_t) Π_j (I − β_{t,j} k_{t,j} k_{t,j}ᵀ)`` is a
product of generalized Householder matrices: DeltaProduct (Siems et al., "DeltaProduct:
Improving State-Tracking in Linear RNNs via Householder Products", 2025, eq. 3).
For unit keys and ``β ∈ [0, 2]`` every factor has eigenvalues ``{1, 1 − β} ⊂ [−1, 1]``.

No query scaling and no key normalization happen here; the caller does both.

Chunked form (the WY representation; Yang et al. 2024, §3). The ``n_h`` steps of a
token are ``n_h`` consecutive micro-steps, so a chunk of ``C`` tokens holds
``M = C·n_h`` micro-steps ``m`` with keys ``k_m``, values ``v_m`` and steps ``β_m``; the
gate of a token acts before its first micro-step. ``chunk_size`` counts micro-steps,
as in fla's interleaved reference: ``C = chunk_size // n_h`` tokens, so the triangular
systems (and the rounding error, below) do not grow with ``n_h``. Let ``S`` be the
state entering the chunk and ``γ_m`` the cumulative log gate of micro-step ``m``'s
token, counted from the chunk start (all micro-steps of one token share it). Writing
the update of step ``m`` as ``S_m = e^{g_m} S_{m−1} + k_m δ_mᵀ`` with
``δ_m = β_m (v_m − e^{g_m} S_{m−1}ᵀ k_m)`` and unrolling gives, for ``i < m`` inside
the chunk,

    δ_m + β_m Σ_{i<m} e^{γ_m − γ_i} (k_m·k_i) δ_i = β_m v_m − β_m e^{γ_m} Sᵀ k_m

i.e. ``(I + A) Δ = diag(β) V − diag(β e^γ) K S`` with the strictly lower triangular
``A_mi = β_m e^{γ_m−γ_i} (k_m·k_i)``. One unit-lower-triangular solve per chunk,
independent of ``S``, gives ``U = (I + A)⁻¹ diag(β) V`` and ``W = (I + A)⁻¹ diag(β e^γ) K``;
then across chunks only::

    Δ      = U − W S
    o_t    = e^{γ_t} Sᵀ q_t + Σ_{m ∈ tokens ≤ t} e^{γ_t − γ_m} (q_t·k_m) δ_m
    S_next = e^{γ_C} S + Σ_m e^{γ_C − γ_m} k_m δ_mᵀ

The solve, the scores and the decay factors are computed for a group of chunks
(about ``GROUP_STEPS`` micro-steps) at once; a ``lax.scan`` over groups carries ``S``,
its body rematerialized by ``jax.checkpoint``, so the backward pass keeps one state per
group plus one group's workspace, where a differentiated sequential scan keeps
``n_h`` states per token (at B = 8, L = 16384, H = 4, Dk = Dv = 64 in float32, gated,
forward+backward peaks at 1.5 GiB for ``n_h = 1`` and 2.2 GiB for ``n_h = 2``, against
26 and 35 GiB for the sequential scan: XLA's estimates). Equivalently, this is the gated delta rule on the interleaved
length-``L·n_h`` sequence with the gate on each token's first micro-step and the query
on its last (fla's ``chunk_gated_delta_product_ref``), without computing the outputs
of the other micro-steps.

Numerics. With unit keys and ``β ∈ [0, 2]`` every Householder factor has spectral
norm ≤ 1, and the entries of ``(I + A)⁻¹`` are ``−β_m k_mᵀ (Π_{i<r<m} (I − β_r k_r k_rᵀ)) k_i``
scaled by decays ≤ 1, so they are bounded by 2: the substitution is well conditioned
even at ``β = 2`` (keys that are not normalized break this; fla issue #537). Bounded
entries still cancel: with ``β ≈ 2`` and nearly parallel keys the rows of ``W``
alternate in sign, and ``Δ = U − W S`` and the state update sum ``M`` terms of size
``~2‖S‖`` to a small result, so the float32 error grows with the micro-steps per
chunk (measured relative error up to 1.2e-4 at 64 micro-steps, 2e-4 at 128, against
4e-6 for the sequential scan: ``tests/test_scans_delta.py``); a smaller
``chunk_size`` lowers it. Decays are built from within-chunk segment sums masked
before ``exp``, never from ``exp(cumsum)`` over a sequence. Everything is computed in
float32 or wider.

Measured on a 2-core CPU (``benchmarks/delta.py``) the sequential scan is the faster
forward and the chunked form the faster (and memory-bounded) backward; the chunked
form is also the fast form on accelerators. So on CPU ``method="auto"`` runs the
sequential forward and, under differentiation, the chunked forward and backward
(``_dispatch.sequential_forward_chunked_backward``, a ``jax.custom_vjp``; ``jax.jvp``
needs an explicit method); on accelerators it is ``"chunked"`` throughout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _checks
from ._dispatch import resolve_method, sequential_forward_chunked_backward

METHODS = ("auto", "sequential", "chunked")
DEFAULT_CHUNK_SIZE = 64


def delta_rule(q: Float[Array, "B L H Dk"], k: Float[Array, "B L H n_h Dk"] | Float[Array, "B L H Dk"],
               v: Float[Array, "B L H n_h Dv"] | Float[Array, "B L H Dv"],
               beta: Float[Array, "B L H n_h"] | Float[Array, "B L H"], log_gate: Float[Array, "B L H"] | None = None,
               s0: Float[Array, "B H Dk Dv"] | None = None, *, method: str = "auto",
               chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[Float[Array, "B L H Dv"], Float[Array, "B H Dk Dv"]]:
    """Evaluate the (gated) delta rule with ``n_h`` Householder steps per token over axis 1.

    Args:
      q: queries ``(B, L, H, Dk)`` (scaled by the caller).
      k: keys ``(B, L, H, n_h, Dk)``, step ``j`` of token ``t`` at ``[:, t, :, j]``
        (normalized by the caller); ``(B, L, H, Dk)`` means ``n_h = 1``.
      v: values ``(B, L, H, n_h, Dv)``, or ``(B, L, H, Dv)`` with rank-4 keys.
      beta: step sizes ``(B, L, H, n_h)``, or ``(B, L, H)`` with rank-4 keys.
      log_gate: ``g`` ``(B, L, H)``: the state is multiplied by ``exp(g_t)`` once per token,
        before its steps; None for no gate.
      s0: initial state ``(B, H, Dk, Dv)``; zeros if None.
      method: ``"auto" | "sequential" | "chunked"``; ``"auto"`` on CPU runs the
        sequential forward and differentiates through the chunked form, on
        accelerators it is ``"chunked"``.
      chunk_size: micro-steps per chunk for ``"chunked"`` (default 64): a chunk holds
        ``max(1, chunk_size // n_h)`` tokens, so its triangular system has about
        ``chunk_size`` unknowns whatever ``n_h``; need not divide L.

    Returns:
      ``(o, S_final)``: outputs ``o_t = S_tᵀ q_t`` ``(B, L, H, Dv)`` in the promoted dtype
      of ``q, k, v, beta, log_gate``, and the state after the last token ``(B, H, Dk, Dv)``
      in the accumulation dtype (float32 or wider), so that a bfloat16 stream carries an
      unrounded state from call to call.
    """
    for name, x in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        _checks.check_floating(name, x)
    _checks.check_ndim("q", q, 4, "(batch, length, heads, key_dim)")
    B, L, H, Dk = q.shape
    _checks.check_ndim("k", k, (4, 5), "(batch, length, heads, n_householder, key_dim)")
    if k.ndim == 4:  # one step per token
        _checks.check_shape("k", k, (B, L, H, Dk))
        _checks.check_ndim("v", v, 4, "(batch, length, heads, value_dim) when k has rank 4")
        _checks.check_shape("v", v, (B, L, H, None))
        _checks.check_shape("beta", beta, (B, L, H))
        k, v, beta = k[:, :, :, None], v[:, :, :, None], beta[..., None]
    else:
        _checks.check_shape("k", k, (B, L, H, None, Dk))
        n_h = k.shape[3]
        _checks.check_ndim("v", v, 5, "(batch, length, heads, n_householder, value_dim)")
        _checks.check_shape("v", v, (B, L, H, n_h, None))
        _checks.check_shape("beta", beta, (B, L, H, n_h))
    Dv = v.shape[-1]
    if log_gate is not None:
        _checks.check_floating("log_gate", log_gate)
        _checks.check_shape("log_gate", log_gate, (B, L, H))
    if s0 is not None:
        _checks.check_floating("s0", s0)
        _checks.check_shape("s0", s0, (B, H, Dk, Dv))
    _checks.check_method(method, METHODS)
    _checks.check_chunk_size(chunk_size)
    coefficients = [x for x in (q, k, v, beta, log_gate) if x is not None]
    out_dtype = jnp.result_type(*coefficients)
    acc = _checks.accumulation_dtype(*coefficients, *([] if s0 is None else [s0]))

    q, k, v, beta = (jnp.asarray(x, acc) for x in (q, k, v, beta))
    g = None if log_gate is None else jnp.asarray(log_gate, acc)
    S0 = jnp.zeros((B, H, Dk, Dv), acc) if s0 is None else jnp.asarray(s0, acc)

    method = resolve_method("delta_rule", method)
    C = chunk_size or DEFAULT_CHUNK_SIZE
    if method == "sequential":
        o, S = _sequential(q, k, v, beta, g, S0)
    elif method == "chunked":
        o, S = _chunked(q, k, v, beta, g, S0, C)
    else:  # CPU's auto: the sequential forward, differentiated through the chunked form
        hybrid = sequential_forward_chunked_backward(_sequential, lambda *args: _chunked(*args, C))
        o, S = hybrid(q, k, v, beta, g, S0)
    return o.astype(out_dtype), S


def _sequential(q, k, v, beta, g, S0):
    """``lax.scan`` over time-major copies, the ``n_h`` steps unrolled inside the body."""
    time_major = lambda x: jnp.moveaxis(x, 1, 0)
    n_h = k.shape[3]
    a = None if g is None else jnp.exp(g)[..., None, None]  # (B, L, H, 1, 1)

    def step(S, inputs):
        q_t, k_t, v_t, b_t, a_t = inputs
        if a_t is not None:
            S = a_t * S
        for j in range(n_h):
            k_j = k_t[:, :, j]
            delta = b_t[:, :, j, None] * (v_t[:, :, j] - jnp.einsum("bhkv,bhk->bhv", S, k_j))
            S = S + k_j[..., :, None] * delta[..., None, :]
        return S, jnp.einsum("bhkv,bhk->bhv", S, q_t)

    xs = (q, k, v, beta, a)
    S, o = jax.lax.scan(step, S0, jax.tree.map(time_major, xs))
    return time_major(o), S


GROUP_STEPS = 1024  # micro-steps per rematerialized group of chunks (bounds backward memory)


def _chunked(q, k, v, beta, g, S0, chunk_size):
    """WY form. A chunk holds ``C = chunk_size // n_h`` tokens (at least 1, at most L),
    i.e. about ``chunk_size`` micro-steps; chunks are gathered in groups of about
    ``GROUP_STEPS`` micro-steps. A ``lax.scan`` over groups carries the state, and its
    body (rematerialized by ``jax.checkpoint``) solves the triangular systems of all its
    chunks at once, then scans the state across them. The backward pass keeps the
    inputs and one state per group, and recomputes one group at a time."""
    B, L, H, n_h, Dk = k.shape
    C = max(1, min(chunk_size // n_h, L))
    n = -(-L // C)
    groups = -(-n // max(1, GROUP_STEPS // (C * n_h)))
    G = -(-n // groups) if groups else 1  # chunks per group, balanced to limit padding
    pad = groups * G * C - L

    def split(x):  # (B, L, H, ...) -> (groups, B, H, G, C, ...); padded tokens are identities (β = 0)
        if pad:
            x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        x = x.reshape((B, groups, G, C) + x.shape[2:])
        return jnp.moveaxis(x, (1, 4), (0, 2))

    xs = tuple(None if x is None else split(x) for x in (q, k, v, beta, g))
    body = jax.checkpoint(_group_step, prevent_cse=False)
    S, o = jax.lax.scan(body, S0, xs)  # o: (groups, B, H, G, C, Dv)
    o = jnp.moveaxis(o, (0, 2), (1, 4)).reshape(B, groups * G * C, H, v.shape[-1])
    return o[:, :L], S


def _group_step(S, inputs):
    """One group of chunks: ``q (B, H, G, C, Dk)``, ``k (B, H, G, C, n_h, Dk)``,
    ``v (B, H, G, C, n_h, Dv)``, ``beta (B, H, G, C, n_h)``, ``g`` None or ``(B, H, G, C)``;
    returns the next state and ``o (B, H, G, C, Dv)``."""
    q, k, v, beta, g = inputs
    B, H, G, C, n_h, Dk = k.shape
    Dv = v.shape[-1]
    M = C * n_h
    k = k.reshape(B, H, G, M, Dk)  # micro-step m = token·n_h + j
    v = v.reshape(B, H, G, M, Dv)
    beta = beta.reshape(B, H, G, M)
    gated = g is not None
    g = g if gated else jnp.zeros((B, H, G, C), q.dtype)

    # Token-level decays inside a chunk, γ_t = Σ_{s≤t} g_s: pair[t, s] = e^{γ_t − γ_s} for
    # s ≤ t (exact segment sums, masked before exp; e^0 on the diagonal), 0 above.
    pair = jnp.exp(_log_segments(g)) if gated else None  # (B, H, G, C, C)
    from_start = jnp.exp(jnp.cumsum(g, axis=-1))  # e^{γ_t}
    suffix = jnp.flip(jnp.cumsum(jnp.flip(g, -1), axis=-1), -1)  # Σ_{s≥t} g_s
    after = jnp.concatenate([suffix[..., 1:], jnp.zeros_like(suffix[..., :1])], axis=-1)  # Σ_{s>t} g_s
    to_end = jnp.exp(after)  # e^{γ_C − γ_t}, summed over s > t rather than subtracted
    total = suffix[..., 0]  # γ_C

    per_micro = lambda x: jnp.repeat(x, n_h, axis=-1)  # token axis (last) -> micro-step axis
    strictly_lower = _leading(jnp.tril(jnp.ones((M, M), bool), -1), 5)
    A = beta[..., :, None] * jnp.einsum("bhnmd,bhnid->bhnmi", k, k)
    if gated:
        pair_micro = per_micro(pair)  # (B, H, G, C, M): query token t vs micro-step m
        A = A * jnp.repeat(pair_micro, n_h, axis=-2)
    T = _unit_lower_inverse(jnp.where(strictly_lower, A, 0.0))  # (I + A)⁻¹
    rhs = jnp.concatenate([beta[..., None] * v, (beta * per_micro(from_start))[..., None] * k], axis=-1)
    UW = T @ rhs
    U, W = UW[..., :Dv], UW[..., Dv:]

    scores = jnp.einsum("bhntd,bhnmd->bhntm", q, k)  # (B, H, G, C, M)
    if gated:
        scores = scores * pair_micro
    else:  # query token t sees the micro-steps of tokens s ≤ t
        scores = jnp.where(_leading(per_micro(jnp.tril(jnp.ones((C, C), bool))), 5), scores, 0.0)
    q_in = q * from_start[..., None]
    k_out = k * per_micro(to_end)[..., None]
    chunk_decay = jnp.exp(total)[..., None, None]  # (B, H, G, 1, 1)

    scan_major = lambda x: jnp.moveaxis(x, 2, 0)
    xs = tuple(scan_major(x) for x in (U, W, scores, q_in, k_out, chunk_decay))
    S, o = jax.lax.scan(_chunk_step, S, xs)  # o: (G, B, H, C, Dv)
    return S, jnp.moveaxis(o, 0, 2)


def _log_segments(g):
    """``seg[..., t, s] = Σ_{r=s+1}^{t} g_r`` over the last axis for ``s < t``, ``0`` (a
    constant: no gradient) for ``s = t`` and ``-inf`` for ``s > t``: the log of the decay
    from token ``s`` to token ``t``, masked before ``exp``.

    ``G_t − G_s`` of the cumulative sum ``G`` alone loses ``ulp(G_t)`` (~4e-5 at
    ``|G| ≈ 600``), the whole error budget of a short segment after strong gates. The
    realized increments of ``G`` telescope exactly; what each step lost is summed
    separately into ``E`` (mathematically ``E ≡ 0``, so it carries no gradient).
    """
    C = g.shape[-1]
    G = jnp.cumsum(g, axis=-1)
    realized = jnp.diff(G, axis=-1, prepend=jnp.zeros_like(G[..., :1]))
    E = jax.lax.stop_gradient(jnp.cumsum(g - realized, axis=-1))
    segment = (G[..., :, None] - G[..., None, :]) + (E[..., :, None] - E[..., None, :])
    below = _leading(jnp.tril(jnp.ones((C, C), bool), -1), segment.ndim)
    diagonal = _leading(jnp.eye(C, dtype=bool), segment.ndim)
    return jnp.where(below, segment, jnp.where(diagonal, 0.0, -jnp.inf))


def _leading(x, ndim):
    """Left-pad ``x``'s shape with 1s to rank ``ndim`` (explicit broadcasting)."""
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)


BASE_BLOCK = 16  # unit-lower inverses of this size by substitution; larger ones by block merges


@jax.custom_vjp
def _unit_lower_inverse(A):
    """``T = (I + A)⁻¹`` for strictly lower triangular ``A`` ``(..., M, M)``.

    Diagonal blocks of ``BASE_BLOCK`` rows are inverted by forward substitution, all at
    once; then neighbouring blocks merge, level by level, with ``T₂₁ = −T₂ A₂₁ T₁``
    (the lower-left block of ``[[I + A₁, 0], [A₂₁, I + A₂]]⁻¹``): matmuls only (XLA's
    batched triangular solve is ~7× slower on CPU). Every block of the result is a block
    of the exact inverse; for unit keys and ``β ∈ [0, 2]`` their entries are bounded by 2.
    Only the strictly lower part of ``A`` is read. The backward pass is
    ``Ā = −Tᵀ T̄ Tᵀ`` (strictly lower part), so it keeps only ``T``.
    """
    M = A.shape[-1]
    base = min(M, BASE_BLOCK)
    size = base
    while size < M:
        size *= 2
    if size > M:  # zero rows/columns extend I + A by an identity block
        A = jnp.pad(A, [(0, 0)] * (A.ndim - 2) + [(0, size - M), (0, size - M)])
    T = _substitution_inverse(_diagonal_blocks(A, base))  # (..., size/base, base, base)
    while T.shape[-1] < size:
        s = T.shape[-1]
        pairs = _diagonal_blocks(A, 2 * s)  # (..., n/2, 2s, 2s)
        T1, T2 = T[..., 0::2, :, :], T[..., 1::2, :, :]
        T21 = -(T2 @ (pairs[..., s:, :s] @ T1))
        top = jnp.concatenate([T1, jnp.zeros_like(T1)], axis=-1)
        T = jnp.concatenate([top, jnp.concatenate([T21, T2], axis=-1)], axis=-2)
    return T[..., 0, :M, :M]


def _unit_lower_inverse_fwd(A):
    T = _unit_lower_inverse(A)
    return T, T


def _unit_lower_inverse_bwd(T, T_bar):
    Tt = jnp.swapaxes(T, -1, -2)
    M = T.shape[-1]
    strictly_lower = _leading(jnp.tril(jnp.ones((M, M), bool), -1), T.ndim)
    return (jnp.where(strictly_lower, -(Tt @ T_bar @ Tt), 0.0),)


_unit_lower_inverse.defvjp(_unit_lower_inverse_fwd, _unit_lower_inverse_bwd)


def _diagonal_blocks(A, s):
    """The ``s × s`` diagonal blocks of ``A`` ``(..., M, M)``: ``(..., M/s, s, s)``."""
    n = A.shape[-1] // s
    blocks = A.reshape(A.shape[:-2] + (n, s, n, s))
    return jnp.moveaxis(jnp.diagonal(blocks, axis1=-4, axis2=-2), -1, -3)


def _substitution_inverse(A):
    """``(I + A)⁻¹`` for small strictly lower ``A`` by forward substitution, row by row:
    ``T_i = e_i − Σ_{j<i} A_ij T_j`` (rows ``j ≥ i`` of ``T`` are still ``e_j`` and meet
    zeros of ``A``, so the full row of ``A`` can be used)."""
    M = A.shape[-1]

    def row(i, T):
        A_i = jax.lax.dynamic_index_in_dim(A, i, axis=A.ndim - 2, keepdims=False)  # (..., M)
        T_i = jax.lax.dynamic_index_in_dim(T, i, axis=T.ndim - 2, keepdims=False)  # e_i
        new = T_i - jnp.einsum("...j,...jm->...m", A_i, T)
        return jax.lax.dynamic_update_index_in_dim(T, new, i, axis=T.ndim - 2)

    T = jnp.broadcast_to(_leading(jnp.eye(M, dtype=A.dtype), A.ndim), A.shape)
    return jax.lax.fori_loop(1, M, row, T)


def _chunk_step(S, inputs):
    """State-dependent part of one chunk: ``S (B, H, Dk, Dv)`` -> next ``S`` and ``o (B, H, C, Dv)``."""
    U, W, scores, q_in, k_out, chunk_decay = inputs
    delta = U - jnp.einsum("bhmk,bhkv->bhmv", W, S)
    o = jnp.einsum("bhtk,bhkv->bhtv", q_in, S) + jnp.einsum("bhtm,bhmv->bhtv", scores, delta)
    S = chunk_decay * S + jnp.einsum("bhmk,bhmv->bhkv", k_out, delta)
    return S, o
