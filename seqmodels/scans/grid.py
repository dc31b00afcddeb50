"""Linear propagation over a 2-D grid: the recurrence of pLSTM 2-D.

"pLSTM: parallelizable Linear Source Transition Mark networks" (Pöppel, Freinschlag,
Schmied, Lin, Hochreiter, 2025), the 2-D grid recurrence (§3; upstream
``pLSTM2D_jax``). Every cell ``(x, y)`` of an ``X × Y`` grid has two incoming edges,
from the left (``x - 1``) and from above (``y - 1``), and two outgoing edges, right
and down; each edge carries a state vector of size N (any leading feature axes ride
along, e.g. ``(heads, Dk, Dv)``):

    Cr(x, y) = T_rl(x,y) Cr(x-1, y) + T_ru(x,y) Cd(x, y-1) + b_r(x, y)     (right edge)
    Cd(x, y) = T_du(x,y) Cd(x, y-1) + T_dl(x,y) Cr(x-1, y) + b_d(x, y)     (down edge)

with ``Cr(-1, y) = h0_left[y]`` and ``Cd(x, -1) = h0_top[x]`` (zeros by default). The
transitions are named ``T_<out><in>`` as upstream. ``reverse=(rx, ry)`` runs the
recurrence against axis x and/or y (the left neighbour of ``x`` is then ``x + 1``):
pLSTM's four orientations.

Algorithms (``method``):

* ``"factorized"`` (D-mode, one cross transition absent). With ``T_dl = 0`` the down
  states never see the right states, so ``Cd`` is a 1-D scan along y per column, and
  ``Cr`` then a 1-D scan along x with the input ``b_r + T_ru Cd(x, y-1)``; with
  ``T_ru = 0`` the roles swap. Both 1-D scans go through ``matrix_scan`` (or
  ``linear_scan`` when N = 1), so depth and work are those of two 1-D scans.
* ``"wavefront"`` (any transitions, P-mode). Every cell of an anti-diagonal
  ``x + y = d`` depends only on diagonal ``d - 1``: a ``lax.scan`` over the
  ``X + Y - 1`` diagonals updates a whole diagonal at once (``O(X·Y)`` work on a
  skewed ``(X + Y - 1) × X`` layout, ``X + Y - 1`` sequential steps).
* ``"auto"``: factorized where it applies, else the wavefront.

The naive float64 cell-by-cell loop is ``seqmodels.scans.reference.grid_scan``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _checks
from .linear import linear_scan
from .matrix import matrix_scan

GRID_METHODS = ("auto", "factorized", "wavefront")
_HIGHEST = jax.lax.Precision.HIGHEST


def grid_scan(b_r: Float[Array, "B X Y *S N"], b_d: Float[Array, "B X Y *S N"],
              T_rl: Float[Array, "... N N"] | None = None, T_ru: Float[Array, "... N N"] | None = None,
              T_dl: Float[Array, "... N N"] | None = None, T_du: Float[Array, "... N N"] | None = None,
              h0_left: Float[Array, "B Y *S N"] | None = None, h0_top: Float[Array, "B X *S N"] | None = None,
              *, reverse: tuple[bool, bool] = (False, False), exclusive: bool = False, method: str = "auto",
              ) -> tuple[tuple[Float[Array, "B X Y *S N"], Float[Array, "B X Y *S N"]],
                         tuple[Float[Array, "B Y *S N"], Float[Array, "B X *S N"]]]:
    """Evaluate the grid recurrence above over axes 1 (x) and 2 (y).

    Args:
      b_r, b_d: inputs injected into the right / down edge of every cell, ``(B, X, Y, ..., N)``.
      T_rl, T_ru, T_dl, T_du: transitions broadcastable to ``(B, X, Y, ..., N, N)``
        (e.g. ``(B, X, Y, H, 1, 1, N, N)``), or None for zero.
      h0_left: states entering the first column along x, ``(B, Y, ..., N)``; zeros if None.
      h0_top: states entering the first row along y, ``(B, X, ..., N)``; zeros if None.
      reverse: ``(rx, ry)``: run against axis x / axis y.
      exclusive: return the states on each cell's *incoming* edges,
        ``(Cr(x-1, y), Cd(x, y-1))`` (the borders at the first cells), instead of its
        outgoing ones ``(Cr(x, y), Cd(x, y))``.
      method: ``"auto" | "factorized" | "wavefront"``; ``"factorized"`` needs
        ``T_dl`` or ``T_ru`` to be None.

    Returns:
      ``((Cr, Cd), (last_r, last_d))``: the edge states ``(B, X, Y, ..., N)`` each, in
      the inputs' dtype, and the states leaving the grid, ``last_r = Cr`` at the last
      x processed ``(B, Y, ..., N)`` and ``last_d = Cd`` at the last y ``(B, X, ..., N)``,
      in the accumulation dtype (float32 or wider).
    """
    for name, arr in (("b_r", b_r), ("b_d", b_d)):
        _checks.check_floating(name, arr)
        _checks.check_min_ndim(name, arr, 4, "(batch, X, Y, ..., N)")
    _checks.check_shape("b_d", b_d, b_r.shape)
    N = b_r.shape[-1]
    transitions = {"T_rl": T_rl, "T_ru": T_ru, "T_dl": T_dl, "T_du": T_du}
    for name, T in transitions.items():
        if T is not None:
            _checks.check_floating(name, T)
            _checks.check_square(name, T, N, "b_r.shape[-1]")
            _checks.check_broadcastable(name, T, b_r.shape + (N,), "b_r.shape + (N,)")
    B, X, Y = b_r.shape[:3]
    feat = b_r.shape[3:]
    if h0_left is not None:
        _checks.check_shape("h0_left", h0_left, (B, Y) + feat)
    if h0_top is not None:
        _checks.check_shape("h0_top", h0_top, (B, X) + feat)
    if len(reverse) != 2:
        raise ValueError(f"reverse must be a pair (reverse_x, reverse_y); got {reverse!r}")
    _checks.check_method(method, GRID_METHODS)
    if method == "factorized" and T_dl is not None and T_ru is not None:
        raise ValueError("method='factorized' needs T_dl or T_ru to be None (pLSTM D-mode); "
                         "use method='wavefront' for coupled transitions")
    present = [T for T in transitions.values() if T is not None]
    out_dtype = jnp.result_type(b_r, b_d, *present)
    acc = _checks.accumulation_dtype(b_r, b_d, *present)
    rx, ry = bool(reverse[0]), bool(reverse[1])

    def prepare(T):
        if T is None:
            return None
        T = jnp.asarray(T, acc)
        return _flip(T.reshape((1,) * (b_r.ndim + 1 - T.ndim) + T.shape), rx, ry)

    T_rl, T_ru, T_dl, T_du = (prepare(T) for T in (T_rl, T_ru, T_dl, T_du))
    b_r = _flip(jnp.asarray(b_r, acc), rx, ry)
    b_d = _flip(jnp.asarray(b_d, acc), rx, ry)
    left = jnp.zeros((B, Y) + feat, acc) if h0_left is None else jnp.asarray(h0_left, acc)
    top = jnp.zeros((B, X) + feat, acc) if h0_top is None else jnp.asarray(h0_top, acc)
    left = jnp.flip(left, 1) if ry else left
    top = jnp.flip(top, 1) if rx else top

    # Fold the borders into the first column / row: afterwards the borders are zero.
    b_r = b_r.at[:, 0].add(_apply(T_rl, left, 1)).at[:, :, 0].add(_apply(T_ru, top, 2))
    b_d = b_d.at[:, 0].add(_apply(T_dl, left, 1)).at[:, :, 0].add(_apply(T_du, top, 2))

    if method == "auto":
        method = "factorized" if (T_dl is None or T_ru is None) else "wavefront"
    if method == "factorized":
        Cr, Cd = _factorized(b_r, b_d, T_rl, T_ru, T_dl, T_du)
    else:
        Cr, Cd = _wavefront(b_r, b_d, T_rl, T_ru, T_dl, T_du)

    last_r, last_d = Cr[:, -1], Cd[:, :, -1]
    if exclusive:
        Cr = jnp.concatenate([left[:, None], Cr[:, :-1]], axis=1)
        Cd = jnp.concatenate([top[:, :, None], Cd[:, :, :-1]], axis=2)
    Cr, Cd = _flip(Cr, rx, ry), _flip(Cd, rx, ry)
    last_r = jnp.flip(last_r, 1) if ry else last_r
    last_d = jnp.flip(last_d, 1) if rx else last_d
    return (Cr.astype(out_dtype), Cd.astype(out_dtype)), (last_r, last_d)


def _flip(a, rx, ry):
    axes = tuple(ax for ax, r in ((1, rx), (2, ry)) if r)
    return jnp.flip(a, axes) if axes else a


def _matvec(T, h):
    return jnp.einsum("...ij,...j->...i", T, h, precision=_HIGHEST)


def _apply(T, h, axis):
    """``T`` at index 0 of grid ``axis`` applied to ``h`` (zero if ``T`` is None)."""
    if T is None:
        return jnp.zeros_like(h)
    return _matvec(jnp.take(T, 0, axis=axis), h)


def _shift(a, axis):
    """``a`` moved one cell forward along ``axis``, zero at index 0: ``out[i] = a[i-1]``."""
    zero = jnp.zeros_like(jnp.take(a, jnp.arange(1), axis=axis))
    return jnp.concatenate([zero, jax.lax.slice_in_dim(a, 0, a.shape[axis] - 1, axis=axis)], axis=axis)


def _scan_along(T, b, axis):
    """``h_i = T_i h_{i-1} + b_i`` along grid ``axis`` (1 or 2) from a zero state."""
    if T is None:
        return b
    b_t, T_t = jnp.swapaxes(b, 1, axis), jnp.swapaxes(T, 1, axis)
    if b.shape[-1] == 1:
        h, _ = linear_scan(T_t[..., 0], b_t)
    else:
        h, _ = matrix_scan(T_t, b_t)
    return jnp.swapaxes(h, 1, axis)


def _factorized(b_r, b_d, T_rl, T_ru, T_dl, T_du):
    if T_dl is None:  # down states first (along y), then right states (along x)
        Cd = _scan_along(T_du, b_d, 2)
        if T_ru is not None:
            b_r = b_r + _matvec(T_ru, _shift(Cd, 2))
        return _scan_along(T_rl, b_r, 1), Cd
    Cr = _scan_along(T_rl, b_r, 1)
    b_d = b_d + _matvec(T_dl, _shift(Cr, 1))
    return Cr, _scan_along(T_du, b_d, 2)


def _wavefront(b_r, b_d, T_rl, T_ru, T_dl, T_du):
    """``lax.scan`` over anti-diagonals ``d = x + y`` on a skewed layout ``(B, X+Y-1, X, ...)``."""
    X, Y = b_r.shape[1:3]
    xs = jnp.arange(X)
    ds = jnp.arange(X + Y - 1)
    ys = ds[:, None] - xs[None, :]                       # (D, X): y of slot (d, x)
    valid = (ys >= 0) & (ys < Y)
    ys_c = jnp.clip(ys, 0, Y - 1)

    def skew(a):  # (B', X, Y, ...) -> (D, B', X, ...), time-major
        a = jnp.broadcast_to(a, a.shape[:1] + (X, Y) + a.shape[3:])
        return jnp.moveaxis(a[:, xs[None, :], ys_c], 1, 0)

    def masked(a):  # zero the slots that are not cells
        return jnp.where(valid.reshape(valid.shape[:1] + (1,) + valid.shape[1:] + (1,) * (a.ndim - 3)),
                         a, jnp.zeros((), a.dtype))

    inputs = {"b_r": masked(skew(b_r)), "b_d": masked(skew(b_d)), "valid": valid}
    inputs.update({n: skew(T) for n, T in (("T_rl", T_rl), ("T_ru", T_ru), ("T_dl", T_dl),
                                             ("T_du", T_du)) if T is not None})

    def term(inp, name, h):
        return _matvec(inp[name], h) if name in inp else jnp.zeros_like(h)

    def step(carry, inp):
        Cr_prev, Cd_prev = carry
        cl = _shift(Cr_prev, 1)          # Cr(x-1, y): slot x-1 of the previous diagonal
        cu = Cd_prev                     # Cd(x, y-1): slot x of the previous diagonal
        Cr = term(inp, "T_rl", cl) + term(inp, "T_ru", cu) + inp["b_r"]
        Cd = term(inp, "T_du", cu) + term(inp, "T_dl", cl) + inp["b_d"]
        keep = inp["valid"].reshape((1, X) + (1,) * (Cr.ndim - 2))
        Cr = jnp.where(keep, Cr, jnp.zeros((), Cr.dtype))
        Cd = jnp.where(keep, Cd, jnp.zeros((), Cd.dtype))
        return (Cr, Cd), (Cr, Cd)

    zero = jnp.zeros(b_r.shape[:1] + (X,) + b_r.shape[3:], b_r.dtype)
    _, (Cr, Cd) = jax.lax.scan(step, (zero, zero), inputs)

    def unskew(a):  # (D, B, X, ...) -> (B, X, Y, ...): cell (x, y) is slot (x + y, x)
        return jnp.moveaxis(a[xs[:, None] + jnp.arange(Y)[None, :], :, xs[:, None]], 2, 0)

    return unskew(Cr), unskew(Cd)
