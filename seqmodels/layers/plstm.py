"""pLSTM: "pLSTM: parallelizable Linear Source Transition Mark networks" (Pöppel,
Freinschlag, Schmied, Lin, Hochreiter, 2025, arXiv 2506.11997).

Per head, with query/key ``q, k ∈ R^Dk``, value ``v ∈ R^Dv`` and a state
``C ∈ R^{Dk×Dv×N}`` (``N = J_T``, the transition dimension; the other J's are 1):

1-D (``plstm``, causal), §3 / upstream ``pLSTM1D``::

    C_t = T_t C_{t-1} + S_t ⊗ (k_t v_tᵀ)                         T_t: N×N, S_t: N
    h_t = s · ( Σ_i M_t[i] C_{t-1}[·,·,i]ᵀ q_t + D_t (q_t·k_t) v_t )    s = Dk^{-1/2}

The output reads the *previous* state (an exclusive scan) plus the direct term: the
transition acts while passing through a node. It runs through ``scans.plstm_scan``,
chunkwise: a gating matrix per chunk and one carried state per chunk boundary.

2-D (``plstm2d``, images ``(B, X, Y, d)``): every cell has a right state ``Cr`` and a
down state ``Cd`` (``scans.grid_scan``; the layer runs ``scans.plstm_grid_scan``, which
reads ``h`` inside the wavefront and never stores a state per cell)::

    Cr(x,y) = T_rl Cr(x-1,y) + T_ru Cd(x,y-1) + S_r ⊗ kvᵀ
    Cd(x,y) = T_du Cd(x,y-1) + T_dl Cr(x-1,y) + S_d ⊗ kvᵀ
    h(x,y)  = s · ( q·M_l Cr(x-1,y) + q·M_u Cd(x,y-1) + D (q·k) v )

* P-mode (directed propagation): one source S and transition T per cell and a learned
  orientation ``o = σ(b_o + 0.5·W_o x / d_model) ∈ (0, 1)`` (``b_o`` spread over the heads
  as ``linspace(-2, 2)``, upstream's init; 0, no preferred direction, for a single head);
  ``S_r = o S``, ``T_rl = T_ru = o T``, ``M_l = M_u = M``, and the down parts by
  ``pmode_split``:

  - ``"upstream"`` (default; upstream's fused and non-fused layers,
    ``plstm_2d_layer_fused.py``): ``S_d = 1 - o S``, ``T_dl = T_du = 1 - o T``. For
    ``0 ≤ o T ≤ 1`` the transitions leaving an incoming edge sum to exactly 1 (mass is
    conserved; ``o`` sets a propagation angle). Upstream's ``1 -`` is elementwise, which
    is a split only for scalar transitions: ``transition_dim`` must be 1.
  - ``"scaled"``: ``S_d = (1 - o) S``, ``T_dl = T_du = (1 - o) T``: the transitions
    leaving an edge sum in norm to ``‖T‖ < 1`` for any ``transition_dim`` and for
    negative eigenvalues -- a contractive P-mode where the upstream split is not
    defined (N > 1) or not bounded (``λ < 0``). It damps propagation along y by ``1 - o``
    per step instead of ``≈ 1``.

  Coupled: a wavefront over anti-diagonals (``scans.plstm_grid_scan``).
* D-mode (diffusive distribution): independent ``S_r, S_d, T_rl, T_du, M_l, M_u`` and one
  cross transition ``T_×``; chirality "L" sets ``T_ru = T_×, T_dl = 0`` ("R": the reverse),
  so every pair of cells is joined by one path and the grid scan factorizes into a
  scan along y, then one along x (``method="factorized"``; the default fused wavefront
  runs D-mode like P-mode, with the absent transition left out).
* Four orientations (identity, flip x, flip y, flip both: orientation ``j`` reverses
  x if ``j & 1`` and y if ``j & 2``) with their own gates; their propagated terms are
  summed and the direct term added once (upstream's fused layer). Unlike upstream's
  non-fused layer, the y flip is really applied (there ``(j >> 2) % 2`` is always 0).

Gates (upstream ``source_mark_layer`` / ``longrange_transition_layer``, with the biases
of upstream's vision configuration): S, M = ``σ(b + W x)`` with ``b = -4`` (options
``source_bias``, ``mark_bias``; upstream's library default is -5), ``W`` starting at
zero so that they may learn to depend on the input; the direct gate is bias-only,
``D = σ(b_D)`` with ``b_D = -6`` (``direct_bias``). ``λ = tanh(5·(b_λ + W_λ x))`` with
``b_λ = 1``; ``T = U_out diag(λ) U_in`` with ``U = exp(skew(A))``, ``A = b_U + W_U x``,
``b_U = I`` (so ``U = I`` at init) -- orthogonal, hence ``‖T‖₂ = max|λ| < 1``. Outputs
go through a per-head RMSNorm (eps 1e-5) and an output projection (SmallInit, no bias).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from .. import scans
from .base import Mixer, register
from .options import POSITIVE
from .common import Dense, RMSNorm, check_positive_int, expand_to

_HIGHEST = jax.lax.Precision.HIGHEST
ORIENTATIONS = 4
# orientation j reverses x if j & 1 and y if j & 2
ORIENTATION_REVERSES = tuple((bool(j & 1), bool(j & 2)) for j in range(ORIENTATIONS))
PMODE_SPLITS = ("upstream", "scaled")
# plstm_2d's algorithms: the bounded-memory fused wavefront, or grid_scan's states then the read-out
PLSTM2D_METHODS = ("auto", "fused", "factorized", "wavefront")


# --------------------------------------------------------------------------- cores


def _outer_source(source, k, v):
    """``S ⊗ k vᵀ``: ``(..., N)``, ``(..., Dk)``, ``(..., Dv)`` -> ``(..., Dk, Dv, N)``."""
    return (k[..., :, None, None] * v[..., None, :, None]) * source[..., None, None, :]


def _mark_term(q, mark, C):
    """``Σ_{d,i} q[d] M[i] C[d, v, i]``: ``(..., Dk)``, ``(..., N)``, ``(..., Dk, Dv, N)`` -> ``(..., Dv)``."""
    return jnp.einsum("...d,...i,...dvi->...v", q, mark, C, precision=_HIGHEST)


def _direct_term(q, k, v, direct):
    """``D (q·k) v``: ``(..., Dk)`` twice, ``(..., Dv)``, ``(...)`` -> ``(..., Dv)``."""
    qk = jnp.sum(q * k, axis=-1)
    return (direct * qk)[..., None] * v


def _qk_scale(q, qk_scale):
    return 1.0 / math.sqrt(q.shape[-1]) if qk_scale is None else qk_scale


def plstm_1d(q, k, v, source, transition, mark, direct, initial_state=None, *, qk_scale=None,
             method="auto"):
    """The 1-D pLSTM recurrence (module docstring), all heads at once, through
    ``scans.plstm_scan`` (chunkwise: memory ``O(L·chunk)`` plus one state per chunk).

    Args:
      q, k: ``(B, L, H, Dk)``; v: ``(B, L, H, Dv)``.
      source: ``(B, L, H, N)``; transition: ``(B, L, H, N, N)``; mark: ``(B, L, H, N)``;
      direct: ``(B, L, H)``.
      initial_state: ``C_{-1}``, ``(B, H, Dk, Dv, N)``; zeros if None.
      qk_scale: ``s``; ``Dk^{-1/2}`` if None.
      method: passed to the scan.

    Returns ``(h, C_last)``: ``(B, L, H, Dv)`` and the state after the last step
    ``(B, H, Dk, Dv, N)`` (float32 or wider).
    """
    q = q * jnp.asarray(_qk_scale(q, qk_scale), q.dtype)
    return scans.plstm_scan(q, k, v, source, transition, mark, direct, initial_state, method=method)


def plstm_2d(q, k, v, source_r, source_d, T_rl, T_ru, T_dl, T_du, mark_l, mark_u, direct=None, *,
             reverse=(False, False), qk_scale=None, method="auto", segment_size=None):
    """The 2-D pLSTM grid recurrence (module docstring), all heads, summed over orientations.

    Args:
      q, k: ``(B, X, Y, H, Dk)``; v: ``(B, X, Y, H, Dv)``.
      source_r, source_d, mark_l, mark_u: ``(B, X, Y, H, N)``.
      T_rl, T_ru, T_dl, T_du: ``(B, X, Y, H, N, N)`` or None (zero; D-mode).
      direct: ``(B, X, Y, H)``, or None to leave the direct term out.
      reverse: ``(rx, ry)``: the orientation, see ``scans.grid_scan``; or a tuple of ``O``
        such pairs, the gates then with a leading axis of ``O`` orientations whose
        propagated terms are summed (the direct term is added once).
      method: one of ``PLSTM2D_METHODS``. ``"fused"`` (and ``"auto"``):
        ``scans.plstm_grid_scan``, the read-out inside the wavefront and a rematerialized
        backward pass, memory of a few diagonals of states, one orientation at a time;
        ``"wavefront"`` / ``"factorized"``: ``scans.grid_scan``'s states on every cell's
        incoming edges, ``(B, X, Y, H, Dk, Dv, N)`` twice per orientation, then the
        read-out (memory of every cell's state, several times over in the backward pass;
        kept as the plain composition of the two steps, and as the fast path for tiny
        grids).
      segment_size: diagonals per rematerialized segment of ``"fused"`` (None: ``⌈√(X+Y-1)⌉``).

    Returns ``h``: ``(B, X, Y, H, Dv)``.
    """
    if method not in PLSTM2D_METHODS:
        raise ValueError(f"method must be one of {PLSTM2D_METHODS}; got {method!r}")
    gates = (source_r, source_d, T_rl, T_ru, T_dl, T_du, mark_l, mark_u)
    if method in ("auto", "fused"):
        h = scans.plstm_grid_scan(q, k, v, *gates, reverse=reverse, segment_size=segment_size)
    else:
        stacked = len(reverse) > 0 and isinstance(reverse[0], (tuple, list))
        orientations = [(pair, [None if g is None else g[j] for g in gates]) for j, pair in enumerate(reverse)] \
            if stacked else [(reverse, gates)]
        h = 0.0
        for pair, (S_r, S_d, *Ts, M_l, M_u) in orientations:
            (c_left, c_up), _ = scans.grid_scan(
                _outer_source(S_r, k, v), _outer_source(S_d, k, v),
                *(None if T is None else T[..., None, None, :, :] for T in Ts),    # (B, X, Y, H, 1, 1, N, N)
                reverse=pair, exclusive=True, method=method)
            h = h + _mark_term(q, M_l, c_left) + _mark_term(q, M_u, c_up)
    if direct is not None:
        h = h + _direct_term(q, k, v, direct)
    return h * _qk_scale(q, qk_scale)


# --------------------------------------------------------------------------- gates


class _Gate(nnx.Module):
    """``σ(b + c · W x)`` per head and slot: ``W`` starts at 0, ``b`` constant (or given), ``c`` a
    fixed scale; ``input_dependent=False`` leaves ``W`` out (a bias-only gate, broadcast over
    the positions of ``x``). Computed in float32, or float64 for float64 inputs."""

    def __init__(self, d_model: int, shape: tuple[int, ...], bias, *, input_scale: float = 1.0,
                 input_dependent: bool = True):
        self.shape, self.input_scale = shape, input_scale
        self.kernel = nnx.Param(jnp.zeros((d_model, math.prod(shape)), jnp.float32)) if input_dependent else None
        self.bias = nnx.Param(jnp.broadcast_to(jnp.asarray(bias, jnp.float32), shape))

    def logits(self, x):
        bias = self.bias[...]
        if self.kernel is None:
            return jnp.broadcast_to(bias, x.shape[:-1] + self.shape)
        wx = jnp.matmul(x.astype(jnp.promote_types(x.dtype, jnp.float32)), self.kernel[...])
        wx = wx.reshape(wx.shape[:-1] + self.shape)
        return expand_to(bias, wx.ndim) + self.input_scale * wx

    def __call__(self, x):
        return jax.nn.sigmoid(self.logits(x))


def _check_biases(**biases) -> tuple[float, ...]:
    """Each bias as a float if it is a finite real number; else ``ValueError`` naming it."""
    for name, value in biases.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return tuple(float(value) for value in biases.values())


ORTHOGONAL_BLOCK = 4096  # matrices per block of exp(skew(A))


def _orthogonal(A):
    """``exp(skew(A))`` for ``A (..., N, N)``: orthogonal. ``expm`` evaluates every Padé
    branch at once, so it runs in blocks of ``ORTHOGONAL_BLOCK`` matrices, each
    rematerialized in the backward pass: the gradient then keeps only ``A`` (otherwise
    every intermediate per token: 3.3 GiB at B = 8, L = 16k, 4 heads, N = 4)."""
    skew = 0.5 * (A - jnp.swapaxes(A, -1, -2))
    flat = skew.reshape((-1,) + skew.shape[-2:])
    block = max(1, min(ORTHOGONAL_BLOCK, flat.shape[0]))
    return jax.lax.map(jax.checkpoint(jax.scipy.linalg.expm), flat, batch_size=block).reshape(skew.shape)


class _Transition(nnx.Module):
    """``T = U_out diag(λ) U_in`` per head: ``(..., d) -> (..., heads, N, N)``, ``‖T‖₂ < 1``."""

    def __init__(self, d_model: int, heads: int, N: int):
        self.N = N
        self.eigen = _Gate(d_model, (heads, N), 1.0)
        eye = jnp.eye(N, dtype=jnp.float32)
        self.rotation = _Gate(d_model, (2, heads, N, N), eye) if N > 1 else None

    def __call__(self, x):
        lam = jnp.tanh(5.0 * self.eigen.logits(x))                      # (..., heads, N)
        if self.N == 1:
            return lam[..., None]
        A = self.rotation.logits(x)                                     # (..., 2, heads, N, N)
        U = _orthogonal(A)
        U_out, U_in = U[..., 0, :, :, :], U[..., 1, :, :, :]
        return jnp.matmul(U_out, lam[..., :, None] * U_in, precision=_HIGHEST)


class _Heads(nnx.Module):
    """Query/key/value projections, the per-head RMSNorm and the output projection."""

    def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs):
        check_positive_int("num_heads", num_heads)
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.query = Dense(d_model, d_model, rngs=rngs)
        self.key = Dense(d_model, d_model, rngs=rngs)
        self.value = Dense(d_model, d_model, rngs=rngs)
        self.norm = RMSNorm(d_model, groups=num_heads, eps=1e-5)
        small_init = nnx.initializers.normal(stddev=math.sqrt(2.0 / (5.0 * d_model)))
        self.out = Dense(d_model, d_model, use_bias=False, kernel_init=small_init, rngs=rngs)

    def qkv(self, x):
        shape = x.shape[:-1] + (self.num_heads, self.head_dim)
        return tuple(proj(x).reshape(shape) for proj in (self.query, self.key, self.value))

    def output(self, h, dtype):
        h = h.reshape(h.shape[:-2] + (self.num_heads * self.head_dim,))
        return self.out(self.norm(h).astype(dtype))


# --------------------------------------------------------------------------- layers


@register("plstm", example_options={"num_heads": 2, "transition_dim": 2})
class PLSTM(Mixer):
    """Causal 1-D pLSTM. State: ``C`` of shape ``(batch, heads, Dk, Dv, transition_dim)``, float32."""

    option_choices = {"method": scans.METHODS}
    option_ranges = {"qk_scale": POSITIVE}
    causal = True

    def __init__(self, d_model: int, *, num_heads: int = 4, transition_dim: int = 4,
                 source_bias: float = -4.0, mark_bias: float = -4.0, direct_bias: float = -6.0,
                 qk_scale: float | None = None, method: str = "auto", rngs: nnx.Rngs):
        self.d_model = d_model
        self.transition_dim = check_positive_int("transition_dim", transition_dim)
        source_bias, mark_bias, direct_bias = _check_biases(source_bias=source_bias, mark_bias=mark_bias,
                                                            direct_bias=direct_bias)
        self.qk_scale, self.method = qk_scale, method
        self.heads = _Heads(d_model, num_heads, rngs=rngs)
        H, N = num_heads, transition_dim
        self.source = _Gate(d_model, (H, N), source_bias)
        self.transition = _Transition(d_model, H, N)
        self.mark = _Gate(d_model, (H, N), mark_bias)
        self.direct = _Gate(d_model, (H,), direct_bias, input_dependent=False)

    def _run(self, x, state, method):
        q, k, v = self.heads.qkv(x)
        h, state = plstm_1d(q, k, v, self.source(x), self.transition(x), self.mark(x), self.direct(x),
                            state, qk_scale=self.qk_scale, method=method)
        return self.heads.output(h, x.dtype), state

    def forward(self, x):
        return self._run(x, None, self.method)[0]

    def init_state(self, batch_size: int):
        Dh = self.heads.head_dim
        return jnp.zeros((batch_size, self.heads.num_heads, Dh, Dh, self.transition_dim), jnp.float32)

    def forward_step(self, x_t, state):
        y, state = self._run(x_t[:, None], state, "sequential")
        return y[:, 0], state


@register("plstm2d", example_options={"num_heads": 2})
class PLSTM2D(Mixer):
    """2-D pLSTM over images ``(batch, X, Y, d)``, P-mode or D-mode, four orientations."""

    option_choices = {"mode": ("P", "D"), "chirality": ("L", "R"), "pmode_split": PMODE_SPLITS,
                      "method": PLSTM2D_METHODS}
    option_ranges = {"qk_scale": POSITIVE}
    causal = False
    spatial_ndim = 2

    def __init__(self, d_model: int, *, num_heads: int = 1, transition_dim: int = 1, mode: str = "P",
                 chirality: str = "L", pmode_split: str = "upstream", orientation_scale: float = 0.5,
                 source_bias: float = -4.0, mark_bias: float = -4.0, direct_bias: float = -6.0,
                 qk_scale: float | None = None, method: str = "auto", segment_size: int | None = None,
                 rngs: nnx.Rngs):
        self.d_model = d_model
        self.transition_dim = check_positive_int("transition_dim", transition_dim)
        if mode == "P" and pmode_split == "upstream" and transition_dim != 1:
            raise ValueError(f"pmode_split='upstream' (S_d = 1 - o S, T_d = 1 - o T, elementwise) needs "
                             f"transition_dim=1; got transition_dim={transition_dim} (use pmode_split='scaled')")
        source_bias, mark_bias, direct_bias = _check_biases(source_bias=source_bias, mark_bias=mark_bias,
                                                            direct_bias=direct_bias)
        self.mode, self.chirality, self.pmode_split = mode, chirality, pmode_split
        self.orientation_scale = orientation_scale
        self.qk_scale, self.method, self.segment_size = qk_scale, method, segment_size
        self.heads = _Heads(d_model, num_heads, rngs=rngs)
        H, N, O = num_heads, transition_dim, ORIENTATIONS
        self.direct = _Gate(d_model, (H,), direct_bias, input_dependent=False)
        if mode == "P":
            self.source = _Gate(d_model, (O, H, N), source_bias)
            self.transition = _Transition(d_model, O * H, N)
            self.mark = _Gate(d_model, (O, H, N), mark_bias)
            self.orientation = _Gate(d_model, (O, H), jnp.linspace(-2.0, 2.0, H) if H > 1 else jnp.zeros((1,)),
                                     input_scale=orientation_scale / d_model)
        else:
            self.source = _Gate(d_model, (2, O, H, N), source_bias)
            self.transition = _Transition(d_model, 3 * O * H, N)
            self.mark = _Gate(d_model, (2, O, H, N), mark_bias)

    def _orientation_gates(self, x):
        """Per orientation: ``(S_r, S_d, T_rl, T_ru, T_dl, T_du, M_l, M_u)`` in ``plstm_2d``'s shapes."""
        H, N, O = self.heads.num_heads, self.transition_dim, ORIENTATIONS
        mark = self.mark(x)                                            # (..., O, H, N); D: (..., 2, O, H, N)
        T = self.transition(x)
        gates = []
        if self.mode == "P":
            S = self.source(x)                                                   # (..., O, H, N)
            T = T.reshape(T.shape[:-3] + (O, H, N, N))
            o = self.orientation(x)                                              # (..., O, H)
            for j in range(O):
                S_r, S_d = self._split(o[..., j, :, None], S[..., j, :, :])
                T_r, T_d = self._split(o[..., j, :, None, None], T[..., j, :, :, :])
                gates.append((S_r, S_d, T_r, T_r, T_d, T_d, mark[..., j, :, :], mark[..., j, :, :]))
        else:
            S = self.source(x)                                                   # (..., 2, O, H, N)
            T = T.reshape(T.shape[:-3] + (3, O, H, N, N))
            for j in range(O):
                T_rl, T_du, T_cross = (T[..., i, j, :, :, :] for i in range(3))
                T_ru, T_dl = (T_cross, None) if self.chirality == "L" else (None, T_cross)
                gates.append((S[..., 0, j, :, :], S[..., 1, j, :, :], T_rl, T_ru, T_dl, T_du,
                              mark[..., 0, j, :, :], mark[..., 1, j, :, :]))
        return gates

    def _split(self, o, gate):
        """P-mode's ``(right, down)`` parts of a source or transition for orientation ``o``."""
        right = o * gate
        return right, (1.0 - right if self.pmode_split == "upstream" else (1.0 - o) * gate)

    def forward(self, x):
        q, k, v = self.heads.qkv(x)
        gates = [None if parts[0] is None else jnp.stack(parts)               # (O, ...) per gate
                 for parts in zip(*self._orientation_gates(x))]
        h = plstm_2d(q, k, v, *gates, self.direct(x), reverse=ORIENTATION_REVERSES, qk_scale=self.qk_scale,
                     method=self.method, segment_size=self.segment_size)
        return self.heads.output(h, x.dtype)
