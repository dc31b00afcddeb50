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

``grid_scan`` returns the states of every cell, ``(B, X, Y, ..., N)`` twice: with pLSTM's
matrix states that is ``B·X·Y·H·Dk·Dv·N`` floats per edge (2 GiB at B = 8, 64 × 64,
one head of 128 × 128), and its backward pass keeps several such arrays.
``plstm_grid_scan`` is pLSTM's whole 2-D read-out in bounded memory instead: the
wavefront with ``S ⊗ k vᵀ`` formed and the marks read inside each step, the
orientations one after another, and a backward pass rematerialized by segments of
diagonals (its docstring). It is a fused wavefront, not the paper's log-depth stacked
form (upstream ``pLSTM2D_jax`` builds gating matrices between all cells of a
meta-cell, quadratic in the meta-cell's size): the wavefront keeps the float rounding
of the plain recurrence and any transition size N at ``O(X + Y)`` sequential steps.

The naive float64 cell-by-cell loop is ``seqmodels.scans.reference.grid_scan``.
"""

from __future__ import annotations

import math

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


def plstm_grid_scan(q: Float[Array, "B X Y H Dk"], k: Float[Array, "B X Y H Dk"], v: Float[Array, "B X Y H Dv"],
                    source_r: Float[Array, "*O B X Y H N"], source_d: Float[Array, "*O B X Y H N"],
                    T_rl: Float[Array, "*O B X Y H N N"] | None, T_ru: Float[Array, "*O B X Y H N N"] | None,
                    T_dl: Float[Array, "*O B X Y H N N"] | None, T_du: Float[Array, "*O B X Y H N N"] | None,
                    mark_l: Float[Array, "*O B X Y H N"], mark_u: Float[Array, "*O B X Y H N"], *,
                    reverse=(False, False), segment_size: int | None = None) -> Float[Array, "B X Y H Dv"]:
    """pLSTM 2-D's propagated output, in memory bounded by a few anti-diagonals of states.

    With per-head states ``Cr, Cd ∈ R^{Dk×Dv×N}`` following the grid recurrence above,
    ``b_r = S_r ⊗ k vᵀ``, ``b_d = S_d ⊗ k vᵀ`` and zero borders, it returns what each cell
    reads from its incoming edges::

        h(x, y) = Σ_i M_l[i] Cr(x-1, y)[·,·,i]ᵀ q  +  Σ_i M_u[i] Cd(x, y-1)[·,·,i]ᵀ q

    (no query scaling, no direct term: the caller adds those), summed over orientations
    when ``reverse`` lists several. It equals ``grid_scan(..., exclusive=True)`` followed
    by that read-out, but never holds a state per cell: the wavefront over
    anti-diagonals forms ``k vᵀ`` and reads ``h`` inside each step, so the forward pass
    keeps one diagonal of states ``(B, X, H, Dk, Dv, N)`` at a time. The backward pass
    is bounded by rematerialization (``jax.checkpoint``) on three levels:

    * one orientation at a time: orientations run in a ``lax.map`` whose body (the whole
      wavefront) keeps nothing but its inputs between the forward and backward pass;
    * segments of ``segment_size`` diagonals (default ``⌈√(X + Y - 1)⌉``): the backward
      pass recomputes an orientation's wavefront keeping the states at segment boundaries,
      then one segment at a time;
    * steps: a recomputed segment keeps only the states entering each step.

    Peak memory is about ``(X + Y - 1) / segment_size + segment_size`` diagonals of
    ``(Cr, Cd)``, whatever the number of orientations; the price is about three forward
    passes per backward pass.

    Args:
      q, k: ``(B, X, Y, H, Dk)``; v: ``(B, X, Y, H, Dv)``, shared by the orientations.
      source_r, source_d, mark_l, mark_u: ``(B, X, Y, H, N)``, or ``(O, B, X, Y, H, N)`` with
        one entry per orientation.
      T_rl, T_ru, T_dl, T_du: ``(B, X, Y, H, N, N)`` (``(O, ...)`` likewise) or None (zero;
        pLSTM's D-mode has one).
      reverse: ``(rx, ry)``, the orientation as in ``grid_scan``; or a tuple of ``O`` such
        pairs, one per entry of the gates' leading axis.
      segment_size: diagonals per rematerialized segment (a positive int) or None.

    Returns ``h``: ``(B, X, Y, H, Dv)`` in the promoted dtype of the inputs.
    """
    stacked = len(reverse) > 0 and isinstance(reverse[0], (tuple, list))
    pairs = tuple(reverse) if stacked else (reverse,)
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"reverse must be a pair (reverse_x, reverse_y) or a tuple of such pairs; "
                             f"got {reverse!r}")
    pairs = tuple((bool(rx), bool(ry)) for rx, ry in pairs)
    for name, arr in (("q", q), ("k", k), ("v", v)):
        _checks.check_floating(name, arr)
        _checks.check_ndim(name, arr, 5, "(batch, X, Y, heads, features)")
    B, X, Y, H, Dk = q.shape
    _checks.check_shape("k", k, (B, X, Y, H, Dk))
    _checks.check_shape("v", v, (B, X, Y, H, None))
    lead = (len(pairs),) if stacked else ()
    _checks.check_floating("source_r", source_r)
    _checks.check_shape("source_r", source_r, lead + (B, X, Y, H, None))
    N = source_r.shape[-1]
    gates = {"source_r": source_r, "source_d": source_d, "mark_l": mark_l, "mark_u": mark_u}
    transitions = {"T_rl": T_rl, "T_ru": T_ru, "T_dl": T_dl, "T_du": T_du}
    for name, arr in gates.items():
        _checks.check_floating(name, arr)
        _checks.check_shape(name, arr, lead + (B, X, Y, H, N))
    for name, T in transitions.items():
        if T is not None:
            _checks.check_floating(name, T)
            _checks.check_shape(name, T, lead + (B, X, Y, H, N, N))
    if segment_size is not None and (isinstance(segment_size, bool) or not isinstance(segment_size, int)
                                     or segment_size < 1):
        raise ValueError(f"segment_size must be a positive int or None; got {segment_size!r}")
    present = [a for a in (q, k, v, *gates.values(), *transitions.values()) if a is not None]
    out_dtype, acc = jnp.result_type(*present), _checks.accumulation_dtype(*present)

    D = X + Y - 1
    size = min(D, segment_size or math.isqrt(D - 1) + 1)            # default ⌈√D⌉
    segments = -(-D // size)
    padded = segments * size            # the diagonals past X + Y - 1 hold no cell: masked like the rest
    valid = _diagonals(X, Y, padded)[2].reshape((segments, size, X))

    def skewed(a, flip):  # (B, X, Y, ...) -> (segments, size, B, X, ...) on the skewed layout
        a = _skew(jnp.asarray(a, acc), X, Y, padded, flip)
        return a.reshape((segments, size) + a.shape[1:])

    shared = {"q": q, "k": k, "v": v}
    own = {name: (a if stacked else a[None]) for name, a in {**gates, **transitions}.items() if a is not None}

    def propagated(inp, terms, b):  # Σ T C over the present transitions (on C's last axis), then + b
        parts = [jnp.einsum("...ij,...dvj->...dvi", inp[name], C, precision=_HIGHEST)
                 for name, C in terms if name in inp]
        return sum(parts[1:], parts[0]) + b if parts else b

    def read(q_, mark, C):
        return jnp.einsum("...d,...i,...dvi->...v", q_, mark, C, precision=_HIGHEST)

    def step(carry, xs):
        (Cr_prev, Cd_prev), (inp, keep) = carry, xs
        cl = _shift(Cr_prev, 1)          # Cr(x-1, y): slot x-1 of the previous diagonal
        cu = Cd_prev                     # Cd(x, y-1): slot x of the previous diagonal
        h = read(inp["q"], inp["mark_l"], cl) + read(inp["q"], inp["mark_u"], cu)
        kv = inp["k"][..., :, None, None] * inp["v"][..., None, :, None]
        Cr = propagated(inp, (("T_rl", cl), ("T_ru", cu)), kv * inp["source_r"][..., None, None, :])
        Cd = propagated(inp, (("T_du", cu), ("T_dl", cl)), kv * inp["source_d"][..., None, None, :])
        return (_keep(keep, Cr), _keep(keep, Cd)), h

    def segment(carry, xs):
        return jax.lax.scan(jax.checkpoint(step, prevent_cse=False), carry, xs)

    @jax.checkpoint
    def wavefront(orientation):  # skews this orientation's inputs itself: only one orientation's copies
        flip, gates_j = orientation
        inp = {name: skewed(a, flip) for name, a in {**shared, **gates_j}.items()}
        zero = jnp.zeros((B, X, H, Dk, v.shape[-1], N), acc)
        _, h = jax.lax.scan(jax.checkpoint(segment, prevent_cse=False), (zero, zero), (inp, valid))
        return h

    h = jax.lax.map(wavefront, (jnp.asarray(pairs), own))      # (O, segments, size, B, X, H, Dv)
    h = h.reshape((len(pairs), padded) + h.shape[3:])
    return sum(_flip(_unskew(h[j], X, Y), *pair) for j, pair in enumerate(pairs)).astype(out_dtype)


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


def _diagonals(X, Y, D):
    """The skewed layout of ``D ≥ X + Y - 1`` anti-diagonals: slot ``(d, x)`` holds cell
    ``(x, d - x)``. Returns ``(xs (X,), ys (D, X) clipped into the grid, valid (D, X))``."""
    xs = jnp.arange(X)
    ys = jnp.arange(D)[:, None] - xs[None, :]
    return xs, jnp.clip(ys, 0, Y - 1), (ys >= 0) & (ys < Y)


def _skew(a, X, Y, D, flip=None):
    """``(B', X, Y, ...)`` (X, Y may be broadcast) -> ``(D, B', X, ...)``, time-major; slots
    that are not cells hold copies of clipped cells (callers mask them). ``flip``: a pair
    of (possibly traced) bools, skew ``a`` flipped along x / y (``_flip``) instead."""
    xs, ys, _ = _diagonals(X, Y, D)
    if flip is not None:
        xs, ys = jnp.where(flip[0], X - 1 - xs, xs), jnp.where(flip[1], Y - 1 - ys, ys)
    a = jnp.broadcast_to(a, a.shape[:1] + (X, Y) + a.shape[3:])
    return jnp.moveaxis(a[:, xs[None, :], ys], 1, 0)


def _unskew(a, X, Y):
    """``(D, B, X, ...)`` -> ``(B, X, Y, ...)``: cell ``(x, y)`` is slot ``(x + y, x)``."""
    xs = jnp.arange(X)[:, None]
    return jnp.moveaxis(a[xs + jnp.arange(Y)[None, :], :, xs], 2, 0)


def _keep(valid, a):
    """``a (B, X, ...)`` with the slots of one diagonal that are not cells (``valid (X,)``) zeroed."""
    return jnp.where(valid.reshape((1,) + valid.shape + (1,) * (a.ndim - 2)), a, jnp.zeros((), a.dtype))


def _wavefront(b_r, b_d, T_rl, T_ru, T_dl, T_du):
    """``lax.scan`` over anti-diagonals ``d = x + y`` on a skewed layout ``(B, X+Y-1, X, ...)``."""
    X, Y = b_r.shape[1:3]
    D = X + Y - 1
    valid = _diagonals(X, Y, D)[2]
    inputs = {"b_r": _skew(b_r, X, Y, D), "b_d": _skew(b_d, X, Y, D), "valid": valid}
    inputs.update({n: _skew(T, X, Y, D) for n, T in (("T_rl", T_rl), ("T_ru", T_ru), ("T_dl", T_dl),
                                                     ("T_du", T_du)) if T is not None})

    def term(inp, name, h):
        return _matvec(inp[name], h) if name in inp else jnp.zeros_like(h)

    def step(carry, inp):
        Cr_prev, Cd_prev = carry
        cl = _shift(Cr_prev, 1)          # Cr(x-1, y): slot x-1 of the previous diagonal
        cu = Cd_prev                     # Cd(x, y-1): slot x of the previous diagonal
        Cr = term(inp, "T_rl", cl) + term(inp, "T_ru", cu) + inp["b_r"]
        Cd = term(inp, "T_du", cu) + term(inp, "T_dl", cl) + inp["b_d"]
        Cr, Cd = _keep(inp["valid"], Cr), _keep(inp["valid"], Cd)
        return (Cr, Cd), (Cr, Cd)

    zero = jnp.zeros(b_r.shape[:1] + (X,) + b_r.shape[3:], b_r.dtype)
    _, (Cr, Cd) = jax.lax.scan(step, (zero, zero), inputs)
    return _unskew(Cr, X, Y), _unskew(Cd, X, Y)
