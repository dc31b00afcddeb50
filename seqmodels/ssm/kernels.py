"""Convolution kernels ``K_l = C Ā^l B̄`` (l < L) of linear time-invariant state-space models.

Papers and equations:

* S4D Vandermonde kernel -- "On the Parameterization and Initialization of Diagonal
  State Space Models" (Gu, Gupta, Goel, Ré, NeurIPS 2022), eq. (5)/(6):
  ``K_l = 2·Re Σ_n C_n B̄_n Λ̄_n^l`` for a conjugate-halved diagonal system, computed as a
  Vandermonde product ``Σ_n v_n exp(l·log Λ̄_n)``.
* S4 DPLR kernel -- "Efficiently Modeling Long Sequences with Structured State Spaces"
  (Gu, Goel, Ré, ICLR 2022), Alg. 1 and Lemmas 3.3-3.5: for ``A = Λ - P Q^*`` and the
  bilinear rule, the truncated generating function ``Σ_{l<L} K_l ω^l`` at the roots of
  unity ``ω_k = exp(-2πik/L)`` equals ``2/(1+ω) · C̃ᵀ (g(ω) - A)^{-1} B`` with
  ``g(ω) = (2/Δ)(1-ω)/(1+ω)`` and ``C̃ᵀ = Cᵀ(I - Ā^L)``. The resolvent of ``A`` is
  reduced by the Woodbury identity to four Cauchy sums ``Σ_n a_n b_n / (g - λ_n)``, and
  ``K`` is recovered by an inverse FFT.
* LSSL Krylov kernel -- "Combining Recurrent, Convolutional, and Continuous-time Models
  with Linear State-Space Layers" (Gu, Johnson, Goel, Saab, Dao, Rudra, Ré, NeurIPS
  2021), §3.2 and Lemma 3.1: ``K = C·[B̄, ĀB̄, …, Ā^{L-1}B̄]`` for a dense ``Ā``, built by
  repeated squaring in ``⌈log₂ L⌉`` matrix products.

Conventions:

* ``conj_pairs=True`` (s4's half-N convention): a system of ``N`` stored modes stands
  for the real ``2N``-state system ``λ_f = [Λ, conj Λ]``, ``P_f = [P, conj P]``,
  ``B_f = [B, conj B]``, ``C_f = [C, conj C]``; sums run over both halves and the kernel
  is real (``2·Re`` of the half sum). ``conj_pairs=False`` (annotated-s4's full-N
  convention): the ``N`` modes are used as they are and the real part is returned.
* ``C`` enters **unconjugated** (``Cᵀ (…) B``, as in state-spaces/s4). annotated-s4's
  ``kernel_DPLR`` uses ``C̃^*``: pass ``conj(C_tilde)`` to reproduce it.
* The DPLR kernel takes ``C̃`` (the ``C`` of the truncated generating function) -- the
  parameter S4 learns; :func:`dplr_c_tilde` / :func:`dplr_c_from_c_tilde` convert.

Every function here is pure JAX and wrapped in ``jax.jit`` with ``L`` and the flags
static (an ``int`` / ``bool``), so it can be called eagerly or inside another ``jit``;
argument checks run at trace time and raise ``ValueError``. Shapes are broadcast
explicitly, so they run under ``jax_numpy_rank_promotion="raise"``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, Inexact

from ..scans import _checks

from .discretize import DIAG_METHODS


def _check_length(L) -> int:
    if not isinstance(L, (int, np.integer)) or L < 1:
        raise ValueError(f"kernel length L must be a positive int (static under jit); got {L!r}")
    return int(L)


def _batch_shape(**named):
    """Broadcast the batch shapes of ``name=(array, core_ndim, layout)`` entries."""
    shapes = []
    for name, (x, core, layout) in named.items():
        _checks.check_min_ndim(name, x, core, layout)
        shapes.append(jnp.shape(x)[: jnp.ndim(x) - core])
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        desc = ", ".join(f"{n} {s}" for n, s in zip(named, shapes))
        raise ValueError(f"batch axes do not broadcast: {desc}") from None


def _complex_dtype(*xs):
    return jnp.promote_types(jnp.result_type(*xs), jnp.complex64)


def _real_dtype(cdtype):
    return jnp.finfo(cdtype).dtype


def _double(x, conj_pairs):
    """``[x, conj x]`` along the last axis (conj_pairs) or ``x``."""
    return jnp.concatenate([x, jnp.conj(x)], axis=-1) if conj_pairs else x


# ----------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("conj_pairs",))
def cauchy(
    v: Inexact[Array, "*batch n"],
    z: Inexact[Array, "*batch k"],
    w: Inexact[Array, "*batch n"],
    conj_pairs: bool = False,
) -> Complex[Array, "*batch k"]:
    """Cauchy sums ``Σ_n v_n / (z_k - w_n)``; with ``conj_pairs`` also ``+ conj(v_n)/(z_k - conj(w_n))``.

    Materializes ``(..., N, K)``; fine for the small ``N`` of S4 layers.
    """
    batch = _batch_shape(v=(v, 1, "(..., N)"), z=(z, 1, "(..., K)"), w=(w, 1, "(..., N)"))
    dtype = _complex_dtype(v, z, w)
    N, K = jnp.shape(v)[-1], jnp.shape(z)[-1]
    if jnp.shape(w)[-1] != N:
        raise ValueError(f"v and w must have the same last axis; got {jnp.shape(v)} and {jnp.shape(w)}")
    v = _double(jnp.broadcast_to(jnp.asarray(v, dtype), batch + (N,)), conj_pairs)
    w = _double(jnp.broadcast_to(jnp.asarray(w, dtype), batch + (N,)), conj_pairs)
    z = jnp.broadcast_to(jnp.asarray(z, dtype), batch + (K,))
    return jnp.sum(v[..., :, None] / (z[..., None, :] - w[..., :, None]), axis=-2)


@functools.partial(jax.jit, static_argnames=("L",))
def vandermonde(
    v: Inexact[Array, "*batch n"],
    x: Inexact[Array, "*batch n"],
    L: int,
) -> Complex[Array, "*batch L"]:
    """Vandermonde product ``Σ_n v_n exp(l·x_n)`` for ``l = 0..L-1`` (``x = log Λ̄``).

    Powers are taken as ``exp(l·x)`` -- no repeated products whose rounding errors
    accumulate over long kernels.
    """
    L = _check_length(L)
    batch = _batch_shape(v=(v, 1, "(..., N)"), x=(x, 1, "(..., N)"))
    dtype = _complex_dtype(v, x)
    N = jnp.shape(v)[-1]
    if jnp.shape(x)[-1] != N:
        raise ValueError(f"v and x must have the same last axis; got {jnp.shape(v)} and {jnp.shape(x)}")
    v = jnp.broadcast_to(jnp.asarray(v, dtype), batch + (N,))
    x = jnp.broadcast_to(jnp.asarray(x, dtype), batch + (N,))
    ell = jnp.arange(L, dtype=_real_dtype(dtype)).reshape((1,) * (len(batch) + 1) + (L,))
    return jnp.einsum("...n,...nl->...l", v, jnp.exp(x[..., :, None] * ell))


# ----------------------------------------------------------------------------------------
# S4D: diagonal state matrix
# ----------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("L", "method", "conj_pairs"))
def s4d_kernel(
    C: Inexact[Array, "*batch n"],
    B: Inexact[Array, "*batch n"] | None,
    Lambda: Complex[Array, "*batch n"],
    dt: Float[Array, "*#batch #n"],
    L: int,
    *,
    method: str = "zoh",
    conj_pairs: bool = True,
) -> Float[Array, "*batch L"]:
    """S4D kernel ``K_l = 2·Re Σ_n C_n B̄_n Λ̄_n^l`` (``Re`` without the 2 if not conj_pairs).

    Args:
      C: ``(..., N)`` output vector (complex).
      B: ``(..., N)`` input vector, or None for ``B ≡ 1`` (the minimal S4D, which absorbs
        ``B`` into ``C``).
      Lambda: ``(..., N)`` diagonal of the continuous state matrix (``Re < 0``).
      dt: step sizes broadcastable to ``Lambda``'s shape: ``(H, 1)`` for one step per
        channel of ``Lambda (H, N)``, ``(H, N)`` untied.
      L: kernel length (static).
      method: ``"zoh"`` (``Λ̄ = exp(ΔΛ)``, ``B̄ = (Λ̄-1)/Λ·B``) or ``"bilinear"``.
      conj_pairs: the ``N`` modes are one half of conjugate pairs (``2·Re``).

    Returns:
      ``(..., L)`` real kernel.
    """
    _checks.check_method(method, DIAG_METHODS)
    L = _check_length(L)
    named = dict(C=(C, 1, "(..., N)"), Lambda=(Lambda, 1, "(..., N)"))
    if B is not None:
        named["B"] = (B, 1, "(..., N)")
    batch = _batch_shape(**named)
    N = jnp.shape(Lambda)[-1]
    for name, (x, _, _) in named.items():
        if jnp.shape(x)[-1] != N:
            raise ValueError(f"{name} must have last axis N={N} (that of Lambda); got shape {jnp.shape(x)}")
    _checks.check_floating("dt", dt)
    dt = jnp.asarray(dt)
    if jnp.ndim(dt) > len(batch) + 1 or not _broadcasts_to(dt.shape, batch + (N,)):
        raise ValueError(f"dt with shape {dt.shape} must broadcast to Lambda's shape {batch + (N,)}")
    dtype = _complex_dtype(C, Lambda, *([] if B is None else [B]))
    shape = batch + (N,)
    Lam = jnp.broadcast_to(jnp.asarray(Lambda, dtype), shape)
    dtb = jnp.broadcast_to(dt.astype(_real_dtype(dtype)), shape)
    dtL = dtb * Lam
    CB = jnp.broadcast_to(jnp.asarray(C, dtype), shape)
    if B is not None:
        CB = CB * jnp.broadcast_to(jnp.asarray(B, dtype), shape)
    if method == "zoh":
        log_bar = dtL
        coef = CB * jnp.expm1(dtL) / Lam
    else:
        log_bar = jnp.log1p(0.5 * dtL) - jnp.log1p(-0.5 * dtL)
        coef = CB * dtb / (1.0 - 0.5 * dtL)
    K = vandermonde(coef, log_bar, L).real
    return 2.0 * K if conj_pairs else K


def _broadcasts_to(shape, target) -> bool:
    try:
        return tuple(np.broadcast_shapes(tuple(shape), tuple(target))) == tuple(target)
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------
# S4: diagonal plus low rank
# ----------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("conj_pairs",))
def dplr_dense(
    Lambda: Complex[Array, "*batch n"],
    P: Complex[Array, "*batch r n"],
    B: Inexact[Array, "*batch n"],
    Q: Complex[Array, "*batch r n"] | None = None,
    *,
    conj_pairs: bool = True,
) -> tuple[Complex[Array, "*batch nf nf"], Complex[Array, "*batch nf"]]:
    """Materialize the DPLR system: ``A = diag(λ_f) - P_fᵀ conj(Q_f)`` (i.e. ``Λ - P Q^*``), ``B_f``.

    With ``conj_pairs`` the ``2N``-state conj-doubled system (``N_f = 2N``), else the
    ``N``-state one. ``Q`` defaults to ``P``. For tests, step mode and C̃ conversion.
    """
    batch = _batch_shape(Lambda=(Lambda, 1, "(..., N)"), P=(P, 2, "(..., R, N)"), B=(B, 1, "(..., N)"),
                         **({} if Q is None else {"Q": (Q, 2, "(..., R, N)")}))
    N, R = jnp.shape(Lambda)[-1], jnp.shape(P)[-2]
    dtype = _complex_dtype(Lambda, P, B, *([] if Q is None else [Q]))
    lam = _double(jnp.broadcast_to(jnp.asarray(Lambda, dtype), batch + (N,)), conj_pairs)
    p = _double(jnp.broadcast_to(jnp.asarray(P, dtype), batch + (R, N)), conj_pairs)
    q = p if Q is None else _double(jnp.broadcast_to(jnp.asarray(Q, dtype), batch + (R, N)), conj_pairs)
    b = _double(jnp.broadcast_to(jnp.asarray(B, dtype), batch + (N,)), conj_pairs)
    Nf = lam.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(Nf, dtype=dtype), batch + (Nf, Nf))
    A = eye * lam[..., None, :] - jnp.einsum("...rn,...rm->...nm", p, jnp.conj(q))
    return A, b


@functools.partial(jax.jit, static_argnames=("L", "conj_pairs"))
def dplr_c_tilde(
    C: Inexact[Array, "*batch n"],
    A_bar: Inexact[Array, "*batch nf nf"],
    L: int,
    *,
    conj_pairs: bool = True,
) -> Complex[Array, "*batch n"]:
    """``C̃ᵀ = Cᵀ (I - Ā^L)`` (first half when conj_pairs): the output vector of the kernel
    truncated to length L, as S4 stores it. ``A_bar`` is the dense discrete matrix
    (conj-doubled when conj_pairs, e.g. from :func:`dplr_dense` + bilinear)."""
    L = _check_length(L)
    Cf, AL = _c_and_power(C, A_bar, L, conj_pairs)
    Ct = Cf - jnp.einsum("...n,...nm->...m", Cf, AL)
    return Ct[..., : jnp.shape(C)[-1]]


@functools.partial(jax.jit, static_argnames=("L", "conj_pairs"))
def dplr_c_from_c_tilde(
    C_tilde: Inexact[Array, "*batch n"],
    A_bar: Inexact[Array, "*batch nf nf"],
    L: int,
    *,
    conj_pairs: bool = True,
) -> Complex[Array, "*batch n"]:
    """Inverse of :func:`dplr_c_tilde`: ``Cᵀ = C̃ᵀ (I - Ā^L)^{-1}`` (for step mode)."""
    L = _check_length(L)
    Cf, AL = _c_and_power(C_tilde, A_bar, L, conj_pairs)
    Nf = AL.shape[-1]
    M = jnp.broadcast_to(jnp.eye(Nf, dtype=AL.dtype), AL.shape) - AL
    C = jnp.linalg.solve(jnp.swapaxes(M, -1, -2), Cf[..., None])[..., 0]
    return C[..., : jnp.shape(C_tilde)[-1]]


def _c_and_power(C, A_bar, L, conj_pairs):
    batch = _batch_shape(C=(C, 1, "(..., N)"), A_bar=(A_bar, 2, "(..., Nf, Nf)"))
    N = jnp.shape(C)[-1]
    Nf = 2 * N if conj_pairs else N
    _checks.check_square("A_bar", A_bar, Nf, "2N with conj_pairs, else N" if conj_pairs else "N")
    dtype = _complex_dtype(C, A_bar)
    Cf = _double(jnp.broadcast_to(jnp.asarray(C, dtype), batch + (N,)), conj_pairs)
    A = jnp.broadcast_to(jnp.asarray(A_bar, dtype), batch + (Nf, Nf))
    return Cf, jnp.linalg.matrix_power(A, L)


@functools.partial(jax.jit, static_argnames=("L", "conj_pairs"))
def dplr_kernel(
    Lambda: Complex[Array, "*batch n"],
    P: Complex[Array, "*batch r n"],
    B: Inexact[Array, "*batch n"],
    C: Inexact[Array, "*batch n"],
    dt: Float[Array, "*#batch"],
    L: int,
    *,
    Q: Complex[Array, "*batch r n"] | None = None,
    conj_pairs: bool = True,
) -> Float[Array, "*batch L"]:
    """S4 kernel of the bilinear-discretized DPLR system ``A = diag(Λ) - P Q^*``.

    Computes the truncated generating function at the roots of unity
    ``ω_k = exp(-2πik/L)`` (``k ≤ L/2`` with conj_pairs, via ``irfft``; all ``L`` and
    ``Re(ifft)`` otherwise):

      ``K̂(ω) = m₀₀ - h·m₀₁ (I + h·m₁₁)^{-1} m₁₀``,  ``h = (1+ω)/2``,
      ``m_ab(ω) = Σ_n a_n b_n · 2Δ / (2(1-ω) - Δ(1+ω)λ_n)``,

    with ``a ∈ {C, conj Q_r}``, ``b ∈ {B, P_r}`` and sums over both conjugate halves when
    conj_pairs. This is S4's ``2/(1+ω)·[k₀₀ - k₀₁(1+k₁₁)^{-1}k₁₀]`` with Cauchy sums
    ``k_ab = Σ a b/(g - λ)``, multiplied through by ``(1+ω)/2`` so that the node ``ω = -1``
    (``g = ∞``, present for even ``L``) is not singular.

    The weights are finite for every node as long as no ``λ_n`` lies on the imaginary
    axis at ``(2/Δ)(1-ω)/(1+ω)``; ``Re λ_n < 0`` (S4's ``-exp(·)`` parameterization)
    guarantees it. NPLR-FouT has ``λ = 0`` exactly and gives ``inf`` at ``ω = 1``; NPLR-LegT
    has ``Re λ = 0`` (fine unless a ``λ`` hits a node).

    Args:
      Lambda: ``(..., N)`` diagonal part (``Re < 0``).
      P: ``(..., R, N)`` low-rank factor (rank R = 1 for LegS; R = 0 gives S4D-bilinear).
      B: ``(..., N)``.
      C: ``(..., N)`` -- **C̃** (see :func:`dplr_c_tilde`), entering unconjugated.
      dt: step size per batch element, a scalar or broadcastable to the batch axes (e.g.
        ``(H,)`` for ``Lambda (H, N)``); one step per system, not per state.
      L: kernel length (static).
      Q: ``(..., R, N)``; defaults to ``P`` (S4's ``A = Λ - P P^*``).
      conj_pairs: half-N convention (see the module docstring).

    Returns:
      ``(..., L)`` real kernel ``K_l = Re(C_fᵀ Ā^l B̄)`` of the (doubled) discrete system,
      where ``C_f`` solves ``C̃_fᵀ = C_fᵀ (I - Ā^L)``.
    """
    L = _check_length(L)
    named = dict(Lambda=(Lambda, 1, "(..., N)"), P=(P, 2, "(..., R, N)"), B=(B, 1, "(..., N)"),
                 C=(C, 1, "(..., N)"))
    if Q is not None:
        named["Q"] = (Q, 2, "(..., R, N)")
    batch = _batch_shape(**named)
    N, R = jnp.shape(Lambda)[-1], jnp.shape(P)[-2]
    for name, (x, _, _) in named.items():
        if jnp.shape(x)[-1] != N:
            raise ValueError(f"{name} must have last axis N={N} (that of Lambda); got shape {jnp.shape(x)}")
    if Q is not None and jnp.shape(Q)[-2] != R:
        raise ValueError(f"Q must have the rank R={R} of P; got shape {jnp.shape(Q)}")
    _checks.check_floating("dt", dt)
    if not _broadcasts_to(jnp.shape(dt), batch):
        raise ValueError(f"dt with shape {jnp.shape(dt)} must broadcast to the batch axes {batch}")

    dtype = _complex_dtype(Lambda, P, B, C, *([] if Q is None else [Q]))
    rdtype = _real_dtype(dtype)
    cast = lambda x, core: jnp.broadcast_to(jnp.asarray(x, dtype), batch + core)
    lam = cast(Lambda, (N,))
    Pm = cast(P, (R, N))
    Qm = Pm if Q is None else cast(Q, (R, N))
    left = jnp.concatenate([cast(C, (N,))[..., None, :], jnp.conj(Qm)], axis=-2)
    right = jnp.concatenate([cast(B, (N,))[..., None, :], Pm], axis=-2)
    s = jnp.broadcast_to(jnp.asarray(dt, rdtype), batch).reshape(batch + (1, 1))

    K = L // 2 + 1 if conj_pairs else L
    ones = (1,) * len(batch)
    k = jnp.arange(K, dtype=rdtype)
    omega = jnp.exp((-2j * np.pi / L) * k.astype(dtype)).reshape(ones + (1, K))

    def weights(lam_):  # (..., N, K)
        return 2.0 * s / (2.0 * (1.0 - omega) - s * (1.0 + omega) * lam_[..., :, None])

    m = jnp.einsum("...an,...bn,...nk->...abk", left, right, weights(lam))
    if conj_pairs:
        m = m + jnp.einsum("...an,...bn,...nk->...abk", jnp.conj(left), jnp.conj(right), weights(jnp.conj(lam)))

    h = (0.5 * (1.0 + omega)).reshape(ones + (K,))
    m00 = m[..., 0, 0, :]
    if R == 0:
        khat = m00
    elif R == 1:
        khat = m00 - h * m[..., 0, 1, :] * m[..., 1, 0, :] / (1.0 + h * m[..., 1, 1, :])
    else:
        m01 = jnp.moveaxis(m[..., 0, 1:, :], -1, -2)  # (..., K, R)
        m10 = jnp.moveaxis(m[..., 1:, 0, :], -1, -2)  # (..., K, R)
        m11 = jnp.moveaxis(m[..., 1:, 1:, :], -1, -3)  # (..., K, R, R)
        hk = h[..., :, None, None]
        M = jnp.broadcast_to(jnp.eye(R, dtype=dtype), m11.shape) + hk * m11
        x = jnp.linalg.solve(M, m10[..., None])[..., 0]
        khat = m00 - h * jnp.sum(m01 * x, axis=-1)

    if conj_pairs:
        return jnp.fft.irfft(khat, n=L, axis=-1).astype(rdtype)
    return jnp.fft.ifft(khat, n=L, axis=-1).real.astype(rdtype)


# ----------------------------------------------------------------------------------------
# LSSL: dense state matrix
# ----------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("L",))
def krylov(
    A: Inexact[Array, "*batch n n"],
    b: Inexact[Array, "*batch n"],
    L: int,
) -> Inexact[Array, "*batch n L"]:
    """Krylov matrix ``[b, A b, A² b, …, A^{L-1} b]`` (columns), by repeated squaring.

    ``⌈log₂ L⌉`` rounds of ``X ← [X, A^{2^j} X]``: ``O(N³ log L + N² L)`` work,
    ``O(N L)`` memory per batch element.
    """
    L = _check_length(L)
    batch = _batch_shape(A=(A, 2, "(..., N, N)"), b=(b, 1, "(..., N)"))
    N = jnp.shape(b)[-1]
    _checks.check_square("A", A, N, "N, the last axis of b")
    dtype = jnp.promote_types(jnp.result_type(A, b), jnp.float32)
    A = jnp.broadcast_to(jnp.asarray(A, dtype), batch + (N, N))
    X = jnp.broadcast_to(jnp.asarray(b, dtype), batch + (N,))[..., :, None]
    power = A
    while X.shape[-1] < L:
        X = jnp.concatenate([X, power @ X], axis=-1)
        if X.shape[-1] < L:
            power = power @ power
    return X[..., :L]


@functools.partial(jax.jit, static_argnames=("L",))
def krylov_kernel(
    C: Inexact[Array, "*batch n"],
    A_bar: Inexact[Array, "*batch n n"],
    B_bar: Inexact[Array, "*batch n"],
    L: int,
) -> Inexact[Array, "*batch L"]:
    """LSSL kernel ``K_l = C Ā^l B̄`` for a dense ``Ā`` (real in, real out; complex stays
    complex). For ``M`` output channels use ``einsum("...mn,...nl->...ml", C, krylov(Ā, B̄, L))``."""
    batch = _batch_shape(C=(C, 1, "(..., N)"), A_bar=(A_bar, 2, "(..., N, N)"), B_bar=(B_bar, 1, "(..., N)"))
    N = jnp.shape(B_bar)[-1]
    if jnp.shape(C)[-1] != N:
        raise ValueError(f"C must have last axis N={N} (that of B_bar); got shape {jnp.shape(C)}")
    X = krylov(A_bar, B_bar, L)
    X = jnp.broadcast_to(X, batch + X.shape[-2:])
    dtype = jnp.result_type(X, C)
    C = jnp.broadcast_to(jnp.asarray(C, dtype), batch + (N,))
    return jnp.einsum("...n,...nl->...l", C, X)
