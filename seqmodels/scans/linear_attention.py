"""Linear attention with decay: ``S_t = exp(g_t) S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t``.

The state ``S_t`` is a ``Dk × Dv`` matrix per head. Three decays are supported:

* none (``g = 0``): causal linear attention in its recurrent form, without the
  normalizer (Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive
  Transformers with Linear Attention", 2020);
* one scalar per head and step, ``g: (B, L, H)``: the SSD recurrence of Mamba-2 (Dao &
  Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
  Structured State Space Duality", 2024; there ``g = Δ·A``, ``k = Δ·B``, ``q = C``),
  as used by Hydra, and LightNet's decayed recurrence;
* one value per key feature, ``g: (B, L, H, Dk)``: gated linear attention,
  ``S_t = (α_tᵀ 1) ⊙ S_{t-1} + k_t v_tᵀ`` with ``α_t = exp(g_t)`` (Yang et al., "Gated
  Linear Attention Transformers with Hardware-Efficient Training", 2024): the decay
  scales the rows of ``S``.

No query scaling is applied here; the caller scales ``q``.

Chunked form (SSD / GLA). Split time into chunks of ``C`` steps, let ``S`` be the state
entering a chunk and ``G_i = Σ_{s≤i} g_s`` the cumulative log decay *within* the chunk
(``i = 0..C-1``). Unrolling the recurrence inside the chunk gives::

    o_i   = (q_i ⊙ exp(G_i))ᵀ S  +  Σ_{j≤i} (Σ_d q_id k_jd exp(G_id - G_jd)) v_j
    S_new = exp(G_{C-1}) ⊙ S     +  Σ_j (k_j ⊙ exp(G_{C-1} - G_j)) v_jᵀ

(with a scalar decay the inner sum is ``(q_i·k_j) exp(G_i - G_j)``: a ``C × C`` matrix
that multiplies ``Q Kᵀ`` elementwise). The first terms carry the state in, the second
are matmuls local to the chunk, and only ``S`` goes from chunk to chunk.

Numerics. Every exponent is a sum of log decays over a segment inside one chunk:
``exp(cumsum)`` over the whole sequence (which overflows / underflows after ~1.7k
steps) is never formed, nor is any cumulative product divided.

* Segment sums ``Σ_{s=j+1}^{i} g_s`` are differences of within-chunk cumulative sums,
  masked to ``i ≥ j`` *before* ``exp`` (-inf above the diagonal; the diagonal is the
  constant 0, so no gradient flows through it). The cumulative sums carry their own
  rounding error (``_cumsum_with_error``): a plain ``G_i - G_j`` after strong decays
  (``|G| ≈ 300`` in float32) is off by ~2e-5, the whole float32 error budget.
* Per-key-feature decays never form ``q ⊙ exp(G)`` and ``k ⊙ exp(-G)`` (whose second
  factor overflows for strong decays). Within sub-chunks of 16 steps the weights are
  the exact ``(c, c, Dk)`` tensor ``exp(G_i - G_j)``; between sub-chunks the exponent
  splits into three sums over disjoint ranges, each factor ``≤ 1`` for ``g ≤ 0``, and
  the block is a matmul (GLA's secondary chunking).

Memory: the scan across chunks checkpoints (``jax.checkpoint``) each chunk, so the
backward pass keeps one state per chunk (``B·H·Dk·Dv·L/C`` values) and recomputes the
rest. The sequential scan keeps per-step states (the state before and after each
step: 17 GiB of temporaries at B=8, L=16k, H=4, Dk=Dv=64 in float32, against 0.8 GiB
for the chunked form).

Measured on a 2-core CPU (``benchmarks/scans.py``) the sequential scan is the fastest
forward (~2×), but its backward is 3-25× slower than the chunked one and stores every
step's state. So on CPU ``method="auto"`` runs the sequential forward and, under
differentiation, the chunked forward and backward (a ``jax.custom_vjp``); on
accelerators it is the chunked form throughout.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _checks
from ._dispatch import resolve_method, sequential_forward_chunked_backward

METHODS = ("auto", "sequential", "chunked")
DEFAULT_CHUNK_SIZE = 64
SUB_CHUNK_SIZE = 16  # per-feature decay: exact (c, c, Dk) weights within sub-chunks of this size
LOG_DECAY_FLOOR = -1e4  # chunked: differences of -inf cumulative sums would be NaN


def linear_attention(q: Float[Array, "B L H Dk"], k: Float[Array, "B L H Dk"], v: Float[Array, "B L H Dv"],
                     log_decay: Float[Array, "B L H"] | Float[Array, "B L H Dk"] | None = None,
                     s0: Float[Array, "B H Dk Dv"] | None = None, *, method: str = "auto",
                     chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[Float[Array, "B L H Dv"], Float[Array, "B H Dk Dv"]]:
    """Evaluate ``S_t = exp(g_t) S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t`` over axis 1.

    Args:
      q: queries ``(B, L, H, Dk)`` (already scaled by the caller).
      k: keys ``(B, L, H, Dk)``.
      v: values ``(B, L, H, Dv)``.
      log_decay: ``g``, the log of the decay: ``(B, L, H)`` (one scalar per head and step)
        or ``(B, L, H, Dk)`` (per key feature: scales the rows of ``S``); None for no decay.
        Usually ``≤ 0``.
      s0: initial state ``(B, H, Dk, Dv)``; zeros if None.
      method: ``"auto" | "sequential" | "chunked"``. On CPU ``"auto"`` runs the
        sequential scan forward and differentiates through the chunked form (fastest
        both ways, bounded backward memory; ``jax.jvp`` needs an explicit method); on
        accelerators it is ``"chunked"``.
      chunk_size: chunk length for ``"chunked"`` (default 64); need not divide L.

    Returns:
      ``(o, S_final)``: outputs ``(B, L, H, Dv)`` in the promoted dtype of the inputs,
      and the state after the last step ``(B, H, Dk, Dv)`` in the accumulation dtype
      (float32 or wider).
    """
    B, L, H, Dk, Dv = _checks.check_qkv(q, k, v)
    optional = [x for x in (log_decay, s0) if x is not None]
    if log_decay is not None:
        _checks.check_floating("log_decay", log_decay)
        _checks.check_shape_one_of("log_decay", log_decay, [(B, L, H), (B, L, H, Dk)])
    if s0 is not None:
        _checks.check_floating("s0", s0)
        _checks.check_shape("s0", s0, (B, H, Dk, Dv))
    _checks.check_method(method, METHODS)
    _checks.check_chunk_size(chunk_size)
    out_dtype = jnp.result_type(q, k, v, *optional)
    acc = _checks.accumulation_dtype(q, k, v, *optional)

    q, k, v = (jnp.asarray(x, acc) for x in (q, k, v))
    g = None if log_decay is None else jnp.asarray(log_decay, acc)
    S0 = jnp.zeros((B, H, Dk, Dv), acc) if s0 is None else jnp.asarray(s0, acc)

    method = resolve_method("linear_attention", method)
    C = chunk_size or DEFAULT_CHUNK_SIZE
    if L == 1:  # one token (decoding): the step itself, no scan to trace and compile
        S, o = _step(S0, (q[:, 0], k[:, 0], v[:, 0], None if g is None else _decay(g)[:, 0]))
        return o[:, None].astype(out_dtype), S
    if method == "sequential":
        o, S = _sequential(q, k, v, g, S0)
    elif method == "chunked":
        o, S = _chunked(q, k, v, g, S0, C)
    else:  # CPU's auto: the sequential forward, differentiated through the chunked form
        hybrid = sequential_forward_chunked_backward(_sequential, lambda *args: _chunked(*args, C))
        o, S = hybrid(q, k, v, g, S0)
    return o.astype(out_dtype), S


def _sequential(q, k, v, g, S0):
    """``lax.scan`` over time-major copies; the decay is exponentiated once, outside."""
    time_major = lambda x: jnp.moveaxis(x, 1, 0)
    xs = (time_major(q), time_major(k), time_major(v), None if g is None else time_major(_decay(g)))
    S, o = jax.lax.scan(_step, S0, xs)
    return time_major(o), S


def _decay(g):
    """``exp(g)`` reshaped to the state's rank: ``(B, L, H, 1, 1)`` per head, ``(B, L, H, Dk, 1)`` per feature."""
    return jnp.exp(g).reshape(g.shape + (1,) * (5 - g.ndim))


def _step(S, inputs):
    """One step: ``S ← a ⊙ S + k vᵀ``, ``o = Sᵀ q``; returns ``(S, o)``."""
    q_t, k_t, v_t, a_t = inputs
    if a_t is not None:
        S = a_t * S
    S = S + k_t[..., :, None] * v_t[..., None, :]
    return S, jnp.einsum("bhkv,bhk->bhv", S, q_t)


def _chunked(q, k, v, g, S0, chunk_size):
    """A scan across chunks whose body (one chunk, all matmuls) is rematerialized."""
    B, L, H, Dk = q.shape
    C = min(chunk_size, max(L, 1))
    n = -(-L // C)
    pad = n * C - L

    def chunks(x):  # (B, L, H, ...) -> (n, B, H, C, ...); padding steps are identities
        if pad:
            x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        x = x.reshape((B, n, C) + x.shape[2:])
        return jnp.moveaxis(x, (1, 3), (0, 2))

    if g is not None:  # exp(-1e4) is 0 even in float64: a -inf decay (a reset) stays exact, not NaN
        g = jnp.maximum(g, LOG_DECAY_FLOOR)
    xs = (chunks(q), chunks(k), chunks(v), None if g is None else chunks(g))
    body = jax.checkpoint(_chunk_step, prevent_cse=False)
    S, o = jax.lax.scan(body, S0, xs)
    o = jnp.moveaxis(o, (0, 2), (1, 3)).reshape((B, n * C, H, v.shape[-1]))
    return o[:, :L], S


def _chunk_step(S, inputs):
    """One chunk: ``S (B, H, Dk, Dv)``, ``q, k (B, H, C, Dk)``, ``v (B, H, C, Dv)``,
    ``g`` None, ``(B, H, C)`` or ``(B, H, C, Dk)``; returns ``(S_new, o (B, H, C, Dv))``."""
    q, k, v, g = inputs
    C = q.shape[2]
    if g is None:
        causal = jnp.tril(jnp.ones((C, C), bool))[None, None]
        scores = jnp.where(causal, jnp.einsum("bhid,bhjd->bhij", q, k), 0)
        q_in, k_out, state_decay = q, k, None
    else:
        if g.ndim == 3:  # one scalar per head: a (C, C) decay matrix
            g = g[..., None]  # (B, H, C, F = 1)
            scores = jnp.einsum("bhid,bhjd->bhij", q, k) * jnp.exp(_log_segments(g))[..., 0]
        else:  # F = Dk
            scores = _feature_decay_scores(q, k, g)
        G, E = _cumsum_with_error(g)
        after, total = _sums_after(g)
        q_in = q * jnp.exp(G + E)
        k_out = k * jnp.exp(after)
        state_decay = jnp.swapaxes(jnp.exp(total), 2, 3)  # (B, H, F, 1)
    o = jnp.einsum("bhij,bhjv->bhiv", scores, v) + jnp.einsum("bhid,bhdv->bhiv", q_in, S)
    if state_decay is not None:
        S = state_decay * S
    S = S + jnp.einsum("bhjd,bhjv->bhdv", k_out, v)
    return S, o


def _feature_decay_scores(q, k, g):
    """``A[i, j] = Σ_d q_id k_jd exp(Σ_{s=j+1}^{i} g_sd)`` for ``i ≥ j`` (0 above), ``(B, H, C, C)``.

    Two levels (GLA's secondary chunking): the chunk is split into ``m`` sub-chunks of
    ``c`` steps. Within a sub-chunk the weights are formed exactly, as the ``(c, c, Dk)``
    tensor of masked ``exp`` s. Between sub-chunks ``J < I`` the exponent splits into
    three sums over disjoint ranges: the steps of ``I`` up to ``i``, the whole
    sub-chunks strictly between, and the steps of ``J`` after ``j``; each factor is
    ``≤ 1`` for ``g ≤ 0`` (no ``exp(-G)``), and the block is a matmul.
    """
    B, H, C, Dk = q.shape
    c = math.gcd(C, SUB_CHUNK_SIZE)
    m = C // c
    q, k, g = (x.reshape(B, H, m, c, Dk) for x in (q, k, g))
    pair = jnp.exp(_log_segments(g))  # (B, H, m, c_i, c_j, Dk)
    blocks = jnp.sum(q[..., :, None, :] * k[..., None, :, :] * pair, axis=-1)  # (B, H, m, c, c)
    if m > 1:
        G, E = _cumsum_with_error(g)
        after, totals = _sums_after(g)
        # between[I, J] = Σ of sub-chunks J < K < I: the masked segment sums of the
        # sub-chunk totals, shifted by one row (0 for I = J + 1, -inf for I ≤ J).
        segments = _log_segments(totals[..., 0, :])  # (B, H, m, m, Dk)
        between = jnp.concatenate([jnp.full_like(segments[:, :, :1], -jnp.inf), segments[:, :, :-1]], axis=2)
        # (B, H, I, J, c, Dk): keys of sub-chunk J decayed to the start of sub-chunk I
        k_between = jnp.exp(between)[:, :, :, :, None] * (k * jnp.exp(after))[:, :, None]
        off = jnp.einsum("bhIad,bhIJcd->bhIJac", q * jnp.exp(G + E), k_between)
        eye = jnp.eye(m, dtype=bool)[None, None, :, :, None, None]
        blocks = jnp.where(eye, blocks[:, :, :, None], off)  # (B, H, m_I, m_J, c, c)
        blocks = jnp.swapaxes(blocks, 3, 4)
    return blocks.reshape(B, H, C, C)


# The helpers below work over the step axis of ``(..., n, F)`` arrays: the second to last.


def _log_segments(x):
    """``L[..., i, j, :] = Σ_{s=j+1}^{i} x_s`` for ``i > j``, ``0`` (a constant, so no
    gradient) for ``i = j`` and ``-inf`` for ``i < j``: the log of the decay from step
    ``j`` to step ``i``, masked before ``exp``; ``(..., n, F) -> (..., n, n, F)``."""
    n = x.shape[-2]
    G, E = _cumsum_with_error(x)
    segment = (G[..., :, None, :] - G[..., None, :, :]) + (E[..., :, None, :] - E[..., None, :, :])
    mask_shape = (1,) * (x.ndim - 2) + (n, n, 1)
    below = jnp.tril(jnp.ones((n, n), bool), -1).reshape(mask_shape)
    diagonal = jnp.eye(n, dtype=bool).reshape(mask_shape)
    return jnp.where(below, segment, jnp.where(diagonal, 0.0, -jnp.inf))


def _sums_after(g):
    """``Σ_{s>j} g_s`` (exclusive suffix sums, formed without subtraction) and the total
    ``Σ_s g_s`` (with a step axis of size 1)."""
    suffix = jax.lax.cumsum(g, axis=g.ndim - 2, reverse=True)
    total = suffix[..., :1, :]
    return jnp.concatenate([suffix[..., 1:, :], jnp.zeros_like(total)], axis=-2), total


def _cumsum_with_error(g):
    """Inclusive cumulative sum ``G`` and a correction ``E`` such that
    ``(G_i - G_j) + (E_i - E_j)`` is ``Σ_{s=j+1}^{i} g_s`` to a rounding error relative
    to that segment sum, not to ``|G_i|``.

    ``G_i - G_j`` alone loses ``ulp(G_i)`` (~2e-5 for ``|G| ≈ 300`` in float32), which
    is the whole error budget for a short segment after strong decays. ``G``'s realized
    increments ``G_s - G_{s-1}`` telescope exactly; what each step lost, ``g_s`` minus
    its realized increment, is tiny and summed separately into ``E``. Mathematically
    ``E ≡ 0``, so it carries no gradient.
    """
    G = jnp.cumsum(g, axis=-2)
    realized = jnp.diff(G, axis=-2, prepend=jnp.zeros_like(G[..., :1, :]))
    return G, jax.lax.stop_gradient(jnp.cumsum(g - realized, axis=-2))
