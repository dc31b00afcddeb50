"""Dense linear recurrence ``h_t = A_t h_{t-1} + b_t``.

The state ``h_t`` is a vector of size N and ``A_t`` a dense ``N × N`` matrix (the LSSL
with a dense HiPPO ``A``, "Combining Recurrent, Convolutional, and Continuous-time
Models with Linear State-Space Layers", Gu et al., 2021, eq. 4; and the reference for
structured cases). The affine maps ``h ↦ A h + b`` compose associatively:

    (A_l, b_l) ∘ (A_r, b_r) = (A_r A_l, A_r b_l + b_r)      (apply l first, then r)

so the recurrence can be evaluated sequentially (``lax.scan``, O(L N²)), in log depth
(``lax.associative_scan``, O(L N³) work: every combine multiplies two matrices; the
pair ``(A, b)`` is kept as the augmented matrix ``[[A, b], [0, 1]]``), or
chunk-wise: inside each chunk a local scan from a zero state that also accumulates
``P_t = A_t ⋯ A_start`` (the product of the chunk's matrices so far), a sequential
scan of the chunk carries ``c_{k+1} = P_last c_k + local_last``, then the fix-up
``h_t = local_t + P_t c_k``. Products run only inside a chunk, never over the whole
sequence.

Matrix products use ``Precision.HIGHEST``: float32 accumulation must mean float32 on
accelerators too (TF32/bf16 passes would lose three to five digits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact

from . import _checks
from ._dispatch import resolve_method

_HIGHEST = jax.lax.Precision.HIGHEST


def matrix_scan(A: Inexact[Array, "... N N"], b: Inexact[Array, "B L *S N"],
                h0: Inexact[Array, "B *S N"] | None = None, *, reverse: bool = False, method: str = "auto",
                chunk_size: int | None = None) -> tuple[Inexact[Array, "B L *S N"], Inexact[Array, "B *S N"]]:
    """Evaluate ``h_t = A_t @ h_{t-1} + b_t`` over axis 1.

    Args:
      A: transitions, broadcastable to ``b.shape + (N,)`` -- per step ``(B, L, ..., N, N)``,
        time-invariant ``(N, N)`` or ``(B, 1, ..., N, N)``, shared over batch
        ``(L, ..., N, N)``, .... Real or complex.
      b: inputs ``(B, L, ..., N)``.
      h0: initial state ``(B, ..., N)`` (``b``'s shape without the time axis); zeros if None.
      reverse: run from ``t = L-1`` down to 0 (``h_t = A_t h_{t+1} + b_t``); the final
        state is then the state after step 0.
      method: ``"auto" | "sequential" | "associative" | "chunked"``.
      chunk_size: chunk length for ``"chunked"`` (default 64); need not divide L.

    Returns:
      ``(h, h_last)``: all states ``(B, L, ..., N)`` in ``b``'s dtype (promoted with ``A``'s,
      and complex if ``h0`` is: a complex ``h0`` with real ``A``, ``b`` runs in the complex
      numbers), and the state after the last step processed in the accumulation dtype
      (float32 or wider), so that a bfloat16 stream carries an unrounded state from call
      to call. With ``L = 0``: empty states and ``h0`` (zeros if None) as the final state.
    """
    _checks.check_floating("b", b, allow_complex=True)
    _checks.check_floating("A", A, allow_complex=True)
    _checks.check_min_ndim("b", b, 3, "(batch, length, ..., N)")
    N = b.shape[-1]
    _checks.check_square("A", A, N, "b.shape[-1]")
    _checks.check_broadcastable("A", A, b.shape + (N,), "b.shape + (N,)")
    state_shape = (b.shape[0],) + b.shape[2:]
    if h0 is not None:
        _checks.check_shape("h0", h0, state_shape)
        _checks.check_floating("h0", h0, allow_complex=True)
    _checks.check_method(method, _checks.METHODS)
    _checks.check_chunk_size(chunk_size)
    out_dtype = _checks.output_dtype(A, b, state=h0)
    acc = _checks.accumulation_dtype(out_dtype)

    # A gets b's rank + 1; a time axis of size 1 means a time-invariant transition.
    A = jnp.asarray(A, acc)
    A = A.reshape((1,) * (b.ndim + 1 - A.ndim) + A.shape)
    b = jnp.asarray(b, acc)
    h0 = jnp.zeros(state_shape, acc) if h0 is None else jnp.asarray(h0, acc)
    if b.shape[1] == 0:  # no steps: no outputs, and the state is the initial one
        return jnp.zeros(b.shape, out_dtype), h0
    if reverse:
        A, b = jnp.flip(A, 1), jnp.flip(b, 1)

    method = resolve_method(
        "matrix_scan", method, b.shape, state_history_bytes=b.size * b.dtype.itemsize
    )
    if method == "sequential":
        h = _sequential(A, b, h0)
    elif method == "associative":
        h = _associative(A, b, h0)
    else:
        h = _chunked(A, b, h0, chunk_size or 64)
    h_last = h[:, -1]
    if reverse:
        h = jnp.flip(h, 1)
    return h.astype(out_dtype), h_last


def _matvec(A, h):
    return jnp.einsum("...ij,...j->...i", A, h, precision=_HIGHEST)


def _matmul(A, B):
    return jnp.einsum("...ij,...jk->...ik", A, B, precision=_HIGHEST)


def _sequential(A, b, h0):
    """``lax.scan`` over a time-major copy of ``b``."""
    b_t = jnp.moveaxis(b, 1, 0)
    if A.shape[1] == 1:  # time-invariant: keep A out of the streamed inputs
        A_const = A[:, 0]

        def step(h, b_s):
            h = _matvec(A_const, h) + b_s
            return h, h

        _, h = jax.lax.scan(step, h0, b_t)
    else:

        def step(h, inputs):
            A_s, b_s = inputs
            h = _matvec(A_s, h) + b_s
            return h, h

        _, h = jax.lax.scan(step, h0, (jnp.moveaxis(A, 1, 0), b_t))
    return jnp.moveaxis(h, 0, 1)


def _associative(A, b, h0):
    """Prefix products of the augmented ``(N+1) × (N+1)`` matrices ``[[A_t, b_t], [0, 1]]``.

    Composing affine maps is multiplying their augmented matrices, so ``∘`` above is one
    matmul per combine (half the program of a separate ``A`` and ``b`` update, which
    matters for compile time); ``h_t`` is the last column of the prefix product.
    """
    N = b.shape[-1]
    A = jnp.broadcast_to(A, b.shape + (N,))
    b = b.at[:, 0].add(_matvec(A[:, 0], h0))  # fold h0 into step 0
    last_row = jnp.broadcast_to(jnp.eye(1, N + 1, N, dtype=A.dtype), b.shape[:-1] + (1, N + 1))
    M = jnp.concatenate([jnp.concatenate([A, b[..., None]], -1), last_row], -2)
    prefix = jax.lax.associative_scan(lambda left, right: _matmul(right, left), M, axis=1)
    return prefix[..., :N, N]


def _chunked(A, b, h0, chunk_size):
    """Local scans per chunk (with products of the A's), a scan over chunk carries, a fix-up.

    A time-invariant ``A`` stays unbroadcast: the in-chunk products are then the powers
    ``A^(s+1)``, the same for every chunk. The last chunk may be padded past ``L``; its
    carry out is never used (``h_last`` is read off ``h``), so padding with ``b = 0`` is
    enough and ``A`` needs no identity steps.
    """
    B, L = b.shape[:2]
    C = min(chunk_size, L)
    n = -(-L // C)
    pad = n * C - L
    N = b.shape[-1]
    feat = b.shape[2:]
    if pad:
        b = jnp.pad(b, [(0, 0), (0, pad)] + [(0, 0)] * (b.ndim - 2))
    # (C, B, n, ..., N): scan along the chunk position, all chunks of all batches in parallel.
    b_c = jnp.moveaxis(b.reshape((B, n, C) + feat), 2, 0)
    h_init = jnp.zeros_like(b_c[0])
    if A.shape[1] == 1:  # (Ba, 1, ..., N, N): the size-1 time axis broadcasts over chunks
        A_const = A

        def local(carry, b_s):
            prod, h = carry
            prod, h = _matmul(A_const, prod), _matvec(A_const, h) + b_s
            return (prod, h), (prod, h)

        eye = jnp.broadcast_to(jnp.eye(N, dtype=A.dtype), A.shape)
        _, (prods, local_h) = jax.lax.scan(local, (eye, h_init), b_c)
    else:
        A = jnp.pad(A, [(0, 0), (0, pad)] + [(0, 0)] * (A.ndim - 2))  # values unused
        A_c = jnp.moveaxis(A.reshape((A.shape[0], n, C) + A.shape[2:]), 2, 0)

        def local(carry, inputs):
            prod, h = carry
            A_s, b_s = inputs
            prod, h = _matmul(A_s, prod), _matvec(A_s, h) + b_s
            return (prod, h), (prod, h)

        eye = jnp.broadcast_to(jnp.eye(N, dtype=A.dtype), A_c.shape[1:])
        _, (prods, local_h) = jax.lax.scan(local, (eye, h_init), (A_c, b_c))

    # Carries: c_0 = h0, c_{k+1} = P_last,k c_k + local_last,k; emit the carry *into* chunk k.
    chunk_A, chunk_b = prods[-1], local_h[-1]  # (Ba, n or 1, ..., N, N), (B, n, ..., N)
    if chunk_A.shape[1] == 1:
        chunk_A_const = chunk_A[:, 0]

        def across(c, b_k):
            return _matvec(chunk_A_const, c) + b_k, c

        _, carries = jax.lax.scan(across, h0, jnp.moveaxis(chunk_b, 1, 0))
    else:

        def across(c, inputs):
            A_k, b_k = inputs
            return _matvec(A_k, c) + b_k, c

        _, carries = jax.lax.scan(
            across, h0, (jnp.moveaxis(chunk_A, 1, 0), jnp.moveaxis(chunk_b, 1, 0))
        )
    carries = jnp.moveaxis(carries, 0, 1)  # (B, n, ..., N)
    h = local_h + _matvec(prods, carries[None])
    return jnp.moveaxis(h, 0, 2).reshape((B, n * C) + feat)[:, :L]
