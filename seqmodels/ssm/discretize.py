"""Discretization of continuous-time linear state-space models ``x' = A x + B u``.

Papers:

* LSSL: "Combining Recurrent, Convolutional, and Continuous-time Models with Linear
  State-Space Layers" (Gu, Johnson, Goel, Saab, Dao, Rudra, Ré, NeurIPS 2021) -- the
  generalized bilinear transform (GBT), eq. (3):
  ``Ā = (I - αΔA)^{-1}(I + (1-α)ΔA)``, ``B̄ = Δ(I - αΔA)^{-1} B``
  (α = ½ bilinear/Tustin, 0 forward Euler, 1 backward Euler).
* S4: "Efficiently Modeling Long Sequences with Structured State Spaces" (Gu, Goel, Ré,
  ICLR 2022) -- bilinear discretization, eq. (3).
* S4D: "On the Parameterization and Initialization of Diagonal State Space Models"
  (Gu, Gupta, Goel, Ré, NeurIPS 2022) -- zero-order hold for diagonal A:
  ``Ā = exp(ΔA)``, ``B̄ = (exp(ΔA) - 1)/A · B``.
* S5: "Simplified State Space Layers for Sequence Modeling" (Smith, Warrington,
  Linderman, ICLR 2023) -- the same two rules with one step Δ per state (§2, App. C).

All functions are pure JAX, wrapped in ``jax.jit`` (``method``/``alpha`` static); they
accept NumPy or JAX arrays and broadcast explicitly (they are safe under
``jax_numpy_rank_promotion="raise"``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, Inexact

from ..scans import _checks

DIAG_METHODS = ("zoh", "bilinear")
DENSE_METHODS = ("bilinear", "zoh", "forward_euler", "backward_euler", "gbt")


def _diag_coefficients(Lambda, B, dt, name_b="B"):
    _checks.check_floating("Lambda", Lambda, allow_complex=True)
    _checks.check_floating(name_b, B, allow_complex=True)
    _checks.check_floating("dt", dt)
    Lambda, B, dt = jnp.asarray(Lambda), jnp.asarray(B), jnp.asarray(dt)
    try:
        shape = np.broadcast_shapes(Lambda.shape, dt.shape)
    except ValueError:
        raise ValueError(f"dt with shape {dt.shape} must broadcast against Lambda's shape {Lambda.shape}") from None
    if len(shape) != Lambda.ndim:
        raise ValueError(f"dt with shape {dt.shape} must broadcast to Lambda's shape {Lambda.shape}")
    if B.ndim < len(shape) or not _broadcastable(B.shape[: len(shape)], shape):
        raise ValueError(
            f"{name_b} must have shape Lambda.shape + (trailing input axes...) = {shape} + (...); got {B.shape}"
        )
    return jnp.broadcast_to(Lambda, shape), B, jnp.broadcast_to(dt, shape)


def _broadcastable(a, b) -> bool:
    try:
        np.broadcast_shapes(tuple(a), tuple(b))
        return True
    except ValueError:
        return False


def _expand(coef, B):
    """Give a per-state coefficient ``coef`` trailing unit axes to multiply ``B``."""
    return coef.reshape(coef.shape + (1,) * (B.ndim - coef.ndim))


@jax.jit
def discretize_zoh_diag(
    Lambda: Inexact[Array, "*batch n"],
    B: Inexact[Array, "..."],
    dt: Inexact[Array, "*#batch #n"],
) -> tuple[Inexact[Array, "*batch n"], Inexact[Array, "..."]]:
    """Zero-order hold for a diagonal state matrix: ``Λ̄ = exp(ΔΛ)``, ``B̄ = (Λ̄ - 1)/Λ · B``.

    Args:
      Lambda: diagonal of the continuous state matrix, shape ``S`` (e.g. ``(P,)`` for S5,
        ``(H, N)`` for S4D).
      B: input matrix whose leading axes are ``S`` (``(P, H)`` for S5, ``(H, N)`` for S4D);
        trailing axes are input channels and share the per-state coefficient.
      dt: step sizes, broadcastable to ``S`` (S5: ``(P,)``; S4D per channel: ``(H, 1)``).

    Returns:
      ``(Lambda_bar, B_bar)`` with the shapes of ``Lambda`` (broadcast to ``S``) and ``B``.
    """
    Lambda, B, dt = _diag_coefficients(Lambda, B, dt)
    Lambda_bar = jnp.exp(dt * Lambda)
    return Lambda_bar, _expand((Lambda_bar - 1.0) / Lambda, B) * B


@jax.jit
def discretize_bilinear_diag(
    Lambda: Inexact[Array, "*batch n"],
    B: Inexact[Array, "..."],
    dt: Inexact[Array, "*#batch #n"],
) -> tuple[Inexact[Array, "*batch n"], Inexact[Array, "..."]]:
    """Bilinear (Tustin) rule for a diagonal state matrix.

    ``Λ̄ = (1 + ΔΛ/2)/(1 - ΔΛ/2)``, ``B̄ = Δ/(1 - ΔΛ/2) · B``. Shapes as in
    :func:`discretize_zoh_diag`.
    """
    Lambda, B, dt = _diag_coefficients(Lambda, B, dt)
    inv = 1.0 / (1.0 - 0.5 * dt * Lambda)
    return inv * (1.0 + 0.5 * dt * Lambda), _expand(inv * dt, B) * B


@functools.partial(jax.jit, static_argnames=("method",))
def discretize_diag(Lambda, B, dt, method: str = "zoh"):
    """Diagonal discretization by name: ``method`` in ``("zoh", "bilinear")``."""
    _checks.check_method(method, DIAG_METHODS)
    fn = discretize_zoh_diag if method == "zoh" else discretize_bilinear_diag
    return fn(Lambda, B, dt)


@functools.partial(jax.jit, static_argnames=("method", "alpha"))
def discretize_dense(
    A: Inexact[Array, "*batch n n"],
    B: Inexact[Array, "*batch n m"],
    dt: Inexact[Array, "*#batch"],
    method: str = "bilinear",
    alpha: float | None = None,
) -> tuple[Inexact[Array, "*batch n n"], Inexact[Array, "*batch n m"]]:
    """Discretize a dense state matrix (LSSL's GBT, S4's bilinear, or exact ZOH).

    Args:
      A: ``(..., N, N)`` continuous state matrix (real or complex).
      B: ``(..., N, M)`` input matrix (columns are inputs; pass ``B[..., None]`` for a
        vector).
      dt: step size, a scalar or broadcastable to the batch axes ``A.shape[:-2]``.
      method: ``"bilinear"`` (α = ½), ``"forward_euler"`` (α = 0), ``"backward_euler"``
        (α = 1), ``"gbt"`` (pass ``alpha``), or ``"zoh"`` (``Ā = expm(ΔA)``,
        ``B̄ = ∫₀^Δ e^{sA} ds · B``, from one matrix exponential of the augmented matrix
        ``[[A, B], [0, 0]]``, valid for singular ``A``).

    Returns:
      ``(A_bar, B_bar)`` with the batch axes of ``A``, ``B`` and ``dt`` broadcast.
    """
    _checks.check_method(method, DENSE_METHODS)
    _checks.check_floating("A", A, allow_complex=True)
    _checks.check_floating("B", B, allow_complex=True)
    _checks.check_floating("dt", dt)
    A, B, dt = jnp.asarray(A), jnp.asarray(B), jnp.asarray(dt)
    _checks.check_min_ndim("A", A, 2, "(..., N, N)")
    N = A.shape[-1]
    _checks.check_square("A", A, N, "N")
    _checks.check_min_ndim("B", B, 2, "(..., N, M): pass B[..., None] for a vector")
    if B.shape[-2] != N:
        raise ValueError(f"B must have shape (..., N={N}, M); got {B.shape}")
    try:
        batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2], dt.shape)
    except ValueError:
        raise ValueError(
            f"batch axes of A {A.shape[:-2]}, B {B.shape[:-2]} and dt {dt.shape} do not broadcast"
        ) from None
    M = B.shape[-1]
    A = jnp.broadcast_to(A, batch + (N, N))
    B = jnp.broadcast_to(B, batch + (N, M))
    dt = jnp.broadcast_to(dt, batch)[..., None, None]

    if alpha is not None and method != "gbt":
        raise ValueError(f"alpha is only used with method='gbt'; got method={method!r}")
    if method == "zoh":
        dtype = jnp.result_type(A, B, dt)
        top = jnp.concatenate([A, B], axis=-1).astype(dtype)
        aug = jnp.concatenate([top, jnp.zeros(batch + (M, N + M), dtype)], axis=-2)
        E = jsl.expm(dt.astype(dtype) * aug)
        return E[..., :N, :N], E[..., :N, N:]

    if method == "gbt":
        if alpha is None:
            raise ValueError("method='gbt' needs alpha in [0, 1]")
        a = float(alpha)
    else:
        a = {"bilinear": 0.5, "forward_euler": 0.0, "backward_euler": 1.0}[method]
    eye = jnp.broadcast_to(jnp.eye(N, dtype=A.dtype), batch + (N, N))
    lhs = eye - a * dt * A
    rhs = jnp.concatenate([eye + (1.0 - a) * dt * A, dt * B], axis=-1)
    sol = jnp.linalg.solve(lhs, rhs)
    return sol[..., :N], sol[..., N:]
