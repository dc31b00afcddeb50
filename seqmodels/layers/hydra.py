"""Hydra: "Hydra: Bidirectional State Space Models Through Generalized Matrix Mixers"
(Hwang, Lahoti, Dao, Gu, 2024; goombalab/hydra ``hydra/modules/hydra.py``).

Hydra mixes a sequence with an N-quasiseparable matrix ``M`` (``y = M x`` per head):
its strictly lower and strictly upper triangles are two semiseparable (Mamba-2 SSD)
matrices and its diagonal is free and data dependent (§3, eq. for ``QS(X)``)::

    M_ij = (C^f_{i-1} · B^f_j) δ^f_j exp(A Σ_{k=j+1}^{i-1} δ^f_k)     i > j   (forward SSD, shifted)
    M_ij = (C^b_{i+1} · B^b_j) δ^b_j exp(A Σ_{k=i+1}^{j-1} δ^b_k)     i < j   (backward SSD, shifted)
    M_ii = D + (x_i W_Dᵀ)                                               (per head)

It is evaluated as the paper's ``shift(SS(X)) + flip(shift(SS(flip(X)))) + DX``: one SSD
scan forward and one on the reversed sequence (both run as a single batched call of
``scans.linear_attention`` with a per-head scalar decay: ``q = C``, ``k = B``,
``v = δ·x``, ``log_decay = δ·A``), each output shifted one step later (the first
position gets 0), the backward one flipped back, plus the diagonal term.

The layer around it (Hydra block)::

    [z | xBC | dt] = u W_inᵀ
    xBC = SiLU(depthwise_conv(xBC))          kernel d_conv, symmetric ("same") padding: non-causal
    [x | B_f | C_f | B_b | C_b] = xBC        B, C: ngroups groups of d_state, shared by the heads of a group
    δ_f = softplus(dt[:H] + dt_bias),  δ_b = softplus(dt[H:] + dt_bias),  A = -exp(A_log)
    y = quasiseparable_mix(...)              above; x and A shared by both directions
    out = (RMSNorm(y) · w · SiLU(z)) W_outᵀ  gated RMSNorm, normalized before the gate

There is no recurrent form (``causal = False``). Inputs are whole sequences: padding
leaks into the backward scan (and the conv), so variable lengths need separate calls
or masking by the caller. The SSD part computes in float32 (float64 for float64
inputs); projections run in the activation dtype.

Two baselines of the paper's comparisons (a causal SSM, and "Add", one of the heuristic
ways of combining a forward and a backward SSM in its ablation) share this layer:

* ``combine="add"``: ``SS(X) + flip(SS(flip(X))) + DX`` — the same two SSD scans, summed
  without the shift, with a static per-head ``D`` (no ``fc_D``). Its diagonal
  ``δ^f_i C^f_i·B^f_i + δ^b_i C^b_i·B^b_i + D`` is tied to the off-diagonal
  parametrization; Hydra's is free. (Here the two SSMs share the input projection of
  ``x``, ``z`` and the conv, as Hydra's do; the paper's heuristic combines two SSM layers.)
* ``hydra_causal`` (a separate, causal mixer): the forward half only, i.e. the lower
  triangle and free diagonal of ``M`` (``shift(SS(X)) + DX`` with ``D_i = D + x_i W_Dᵀ``),
  with a causal conv; its ``step`` keeps the conv window, the SSD state and the previous
  SSD output (for the shift). Mamba-2's SSD block ("Transformers are SSMs", Dao & Gu,
  2024) is the same without the shift and with a static ``D``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .. import scans
from ..scans.linear_attention import DEFAULT_CHUNK_SIZE
from .base import Mixer, register
from .options import POSITIVE
from .common import Dense, RMSNorm, check_positive_int, depthwise_conv1d, expand_to

COMBINES = ("quasiseparable", "add")


def _compute_dtype(x):
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def _shift_later(y):
    """``y[:, t] -> y[:, t - 1]`` along axis 1; the first step gets 0."""
    return jnp.concatenate([jnp.zeros_like(y[:, :1]), y[:, :-1]], axis=1)


def _to_heads(m, groups: int, heads: int):
    """``(b, L, G·N) -> (b, L, heads, N)``: a group's vector is shared by its ``heads / G`` heads."""
    b, L, width = m.shape
    return jnp.repeat(m.reshape(b, L, groups, width // groups), heads // groups, axis=2)


def _check_mix_args(x, dt, projections, *, headdim: int, ngroups: int, directions: int):
    """Shapes of a mixer's inputs; returns ``(b, L, H)``."""
    if jnp.ndim(x) != 3 or x.shape[-1] % headdim:
        raise ValueError(f"x must be (batch, length, heads·headdim) with headdim={headdim}; got {jnp.shape(x)}")
    b, L, width = x.shape
    H = width // headdim
    if jnp.shape(dt) != (b, L, directions * H):
        raise ValueError(f"dt must be (batch, length, {'2·' if directions == 2 else ''}heads) = "
                         f"{(b, L, directions * H)}; got {jnp.shape(dt)}")
    for name, m in projections.items():
        if jnp.ndim(m) != 3 or m.shape[:2] != (b, L) or m.shape[-1] % ngroups or H % ngroups:
            raise ValueError(f"{name} must be (batch, length, ngroups·d_state) with batch, length = {(b, L)} "
                             f"and ngroups={ngroups} dividing heads={H}; got {jnp.shape(m)}")
    return b, L, H


def _ssd(xh, delta, A, B, C, s0=None, *, method: str, chunk_size: int):
    """Mamba-2's SSD per head: ``h_t = exp(δ_t A) h_{t-1} + δ_t B_t x_tᵀ``, ``o_t = h_tᵀ C_t``.

    ``xh (b, L, H, P)``, ``delta (b, L, H)``, ``A (H,)``, ``B, C (b, L, H, N)``, ``s0 (b, H, N, P)``;
    returns ``(o (b, L, H, P), h_L)`` from ``scans.linear_attention``.
    """
    return scans.linear_attention(C, B, xh * delta[..., None], delta * expand_to(A, 3), s0,
                                  method=method, chunk_size=chunk_size)


def _diagonal(xh, D, W_D, dtype):
    """``D + x_i W_D`` per head (``W_D=None``: the static ``D``), broadcast to ``xh (b, L, H, P)``."""
    b, L, H, P = xh.shape
    diagonal = expand_to(D.astype(dtype), 3)
    if W_D is not None:
        diagonal = diagonal + jnp.matmul(xh.reshape(b, L, H * P), W_D.astype(dtype))
    return xh * diagonal[..., None]


def quasiseparable_mix(x, dt, B_fwd, C_fwd, B_bwd, C_bwd, *, dt_bias, A_log, D, W_D, headdim: int,
                       ngroups: int = 1, shift: bool = True, method: str = "auto",
                       chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Hydra's quasiseparable matrix mixer ``y = M x`` (see the module docstring).

    Args:
      x: ``(b, L, H·P)`` inputs, ``H`` heads of ``P = headdim`` channels.
      dt: ``(b, L, 2H)`` raw step sizes: forward heads first, then backward.
      B_fwd, C_fwd, B_bwd, C_bwd: ``(b, L, G·N)``, ``G = ngroups`` groups of ``N`` states.
      dt_bias: ``(H,)`` added to both directions' ``dt`` before softplus.
      A_log: ``(H,)``, ``A = -exp(A_log)`` shared by both directions.
      D: ``(H,)`` static part of the diagonal.
      W_D: ``(H·P, H)`` data-dependent part of the diagonal, ``x_i W_D``; ``None`` for
        the static diagonal ``D`` alone.
      shift: shift both SSD outputs one step (Hydra); ``shift=False, W_D=None`` is the
        "Add" combination ``SS(X) + flip(SS(flip(X))) + DX``.
      method, chunk_size: passed to ``scans.linear_attention``.

    Returns ``(b, L, H·P)`` in the compute dtype (float32, or float64 for float64 inputs).
    """
    b, L, H = _check_mix_args(x, dt, {"B_fwd": B_fwd, "C_fwd": C_fwd, "B_bwd": B_bwd, "C_bwd": C_bwd},
                              headdim=headdim, ngroups=ngroups, directions=2)
    dtype = _compute_dtype(x)
    xh = x.astype(dtype).reshape(b, L, H, headdim)
    delta = jax.nn.softplus(dt.astype(dtype) + expand_to(jnp.tile(dt_bias.astype(dtype), 2), 3))
    A = -jnp.exp(A_log.astype(dtype))
    flip = lambda a: jnp.flip(a, axis=1)
    heads = lambda m: _to_heads(m.astype(dtype), ngroups, H)
    # Both directions in one scan: the backward one runs forward over the reversed sequence.
    o, _ = _ssd(jnp.concatenate([xh, flip(xh)], axis=0),
                jnp.concatenate([delta[..., :H], flip(delta[..., H:])], axis=0), A,
                jnp.concatenate([heads(B_fwd), flip(heads(B_bwd))], axis=0),
                jnp.concatenate([heads(C_fwd), flip(heads(C_bwd))], axis=0), method=method, chunk_size=chunk_size)
    if shift:
        o = _shift_later(o)
    y = o[:b] + flip(o[b:]) + _diagonal(xh, D, W_D, dtype)
    return y.reshape(b, L, H * headdim)


class CausalMixState(NamedTuple):
    """Carry of :func:`causal_quasiseparable_mix` (compute dtype): the SSD state
    ``ssd (b, H, N, P)`` after the last step and that step's SSD output ``previous (b, H, P)``
    (what the shift hands to the next position)."""

    ssd: jax.Array
    previous: jax.Array


def causal_quasiseparable_mix(x, dt, B, C, *, dt_bias, A_log, D, W_D, headdim: int, ngroups: int = 1,
                              state: CausalMixState | None = None, method: str = "auto",
                              chunk_size: int = DEFAULT_CHUNK_SIZE):
    """The lower triangle and diagonal of Hydra's matrix: ``y = shift(SS(X)) + DX``.

    ``M_ij = (C_{i-1}·B_j) δ_j exp(A Σ_{k=j+1}^{i-1} δ_k)`` for ``i > j``,
    ``M_ii = D + x_i W_Dᵀ``, 0 above the diagonal.

    Args:
      x: ``(b, L, H·P)``; dt: ``(b, L, H)`` raw step sizes; B, C: ``(b, L, G·N)``.
      dt_bias, A_log, D: ``(H,)``; W_D: ``(H·P, H)`` or ``None`` (static diagonal).
      state: a :class:`CausalMixState` to continue from (zeros if ``None``).

    Returns ``(y (b, L, H·P), state)`` in the compute dtype; running a sequence in
    pieces, each from the previous piece's state, gives the outputs of one call.
    """
    b, L, H = _check_mix_args(x, dt, {"B": B, "C": C}, headdim=headdim, ngroups=ngroups, directions=1)
    dtype = _compute_dtype(x)
    N = B.shape[-1] // ngroups
    if state is None:
        state = CausalMixState(jnp.zeros((b, H, N, headdim), dtype), jnp.zeros((b, H, headdim), dtype))
    xh = x.astype(dtype).reshape(b, L, H, headdim)
    delta = jax.nn.softplus(dt.astype(dtype) + expand_to(dt_bias.astype(dtype), 3))
    A = -jnp.exp(A_log.astype(dtype))
    heads = lambda m: _to_heads(m.astype(dtype), ngroups, H)
    o, ssd = _ssd(xh, delta, A, heads(B), heads(C), state.ssd.astype(dtype), method=method, chunk_size=chunk_size)
    shifted = jnp.concatenate([state.previous.astype(dtype)[:, None], o[:, :-1]], axis=1)
    y = shifted + _diagonal(xh, D, W_D, dtype)
    return y.reshape(b, L, H * headdim), CausalMixState(ssd, o[:, -1])


def _dt_bias_init(key, heads: int, dt_min: float, dt_max: float, dt_init_floor: float):
    """Inverse softplus of step sizes log-uniform in ``[dt_min, dt_max]`` (Mamba-2's init)."""
    u = jax.random.uniform(key, (heads,), jnp.float32)
    dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = jnp.maximum(dt, dt_init_floor)
    return dt + jnp.log(-jnp.expm1(-dt))


@register("hydra", example_options={"d_state": 8, "headdim": 8, "d_conv": 3})
class Hydra(Mixer):
    """The Hydra block (bidirectional, non-causal).

    Options (paper defaults): ``d_state=64`` (N per group), ``d_conv=7`` (odd),
    ``expand=2`` (``d_inner = expand·d_model``), ``headdim=64``, ``ngroups=1``,
    ``dt_min=1e-3``, ``dt_max=0.1``, ``dt_init_floor=1e-4``, ``bias=False`` (in/out
    projections), ``conv_bias=True``; ``method`` and ``chunk_size`` choose the SSD scan
    (``scans.linear_attention``); ``combine="quasiseparable"`` (Hydra) or ``"add"`` (the
    "Add" baseline: no shift, static ``D``, no ``fc_D``; see the module docstring).

    Parameters (layouts: Dense kernels are ``(in, out)``): ``in_proj (d_model, 2·d_inner
    + 4·G·N + 2·H)`` with outputs ``[z | x | B_f | C_f | B_b | C_b | dt_f | dt_b]``,
    ``conv_weight (d_conv, d_inner + 4·G·N)``, ``conv_bias``, ``dt_bias (H,)``,
    ``A_log (H,)`` (init 0: ``A = -1``), ``D (H,)`` (init 1), ``fc_D (d_inner, H)``,
    ``norm.scale (d_inner,)``, ``out_proj (d_inner, d_model)``.
    """

    option_choices = {"combine": COMBINES, "method": scans.LINEAR_ATTENTION_METHODS}
    option_ranges = {"dt_min": POSITIVE, "dt_max": POSITIVE, "dt_init_floor": POSITIVE}

    causal = False
    directions = 2  # SSD scans per layer (the in-projection holds B, C and dt for each)

    def __init__(self, d_model: int, *, d_state: int = 64, d_conv: int = 7, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, bias: bool = False, conv_bias: bool = True,
                 combine: str = "quasiseparable", method: str = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE,
                 rngs: nnx.Rngs):
        self.combine = combine
        self._build(d_model, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim, ngroups=ngroups,
                    dt_min=dt_min, dt_max=dt_max, dt_init_floor=dt_init_floor, bias=bias, conv_bias=conv_bias,
                    free_diagonal=combine == "quasiseparable", method=method, chunk_size=chunk_size, rngs=rngs)

    def _build(self, d_model, *, d_state, d_conv, expand, headdim, ngroups, dt_min, dt_max, dt_init_floor,
               bias, conv_bias, free_diagonal, method, chunk_size, rngs):
        """Check the options and create the parameters (``directions`` sets of ``B, C, dt``)."""
        for name, value in (("d_state", d_state), ("d_conv", d_conv), ("expand", expand),
                            ("headdim", headdim), ("ngroups", ngroups)):
            check_positive_int(name, value)
        if not self.causal and d_conv % 2 == 0:
            raise ValueError(f"d_conv must be odd (symmetric padding); got {d_conv}")
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"expand·d_model = {d_inner} must be divisible by headdim={headdim}")
        heads = d_inner // headdim
        if heads % ngroups:
            raise ValueError(f"the number of heads {heads} must be divisible by ngroups={ngroups}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model, self.d_inner, self.d_state, self.headdim = d_model, d_inner, d_state, headdim
        self.heads, self.ngroups, self.method, self.chunk_size = heads, ngroups, method, chunk_size
        self.d_conv = d_conv
        conv_dim = d_inner + 2 * self.directions * ngroups * d_state
        self.in_proj = Dense(d_model, d_inner + conv_dim + self.directions * heads, use_bias=bias, rngs=rngs)
        bound = 1.0 / math.sqrt(d_conv)  # torch Conv1d's default (fan_in = d_conv per channel)
        self.conv_weight = nnx.Param(jax.random.uniform(rngs.params(), (d_conv, conv_dim), jnp.float32,
                                                        -bound, bound))
        self.conv_bias = (nnx.Param(jax.random.uniform(rngs.params(), (conv_dim,), jnp.float32, -bound, bound))
                          if conv_bias else None)
        self.dt_bias = nnx.Param(_dt_bias_init(rngs.params(), heads, dt_min, dt_max, dt_init_floor))
        self.A_log = nnx.Param(jnp.zeros((heads,), jnp.float32))
        self.D = nnx.Param(jnp.ones((heads,), jnp.float32))
        self.fc_D = Dense(d_inner, heads, use_bias=False, rngs=rngs) if free_diagonal else None
        self.norm = RMSNorm(d_inner, groups=ngroups, eps=1e-5)
        self.out_proj = Dense(d_inner, d_model, use_bias=bias, rngs=rngs)

    def _project(self, u):
        """``u -> (z, xBC, dt)``: the in-projection split (``xBC`` before the conv)."""
        d_inner, bc = self.d_inner, 2 * self.directions * self.ngroups * self.d_state
        return jnp.split(self.in_proj(u), [d_inner, 2 * d_inner + bc], axis=-1)

    def _conv(self, xbc):
        """SiLU of the depthwise conv (centred, or causal for the causal mixer) over axis 1."""
        bias = None if self.conv_bias is None else self.conv_bias[...]
        return jax.nn.silu(depthwise_conv1d(xbc, self.conv_weight[...], bias, causal=self.causal))

    def _mix_options(self):
        W_D = None if self.fc_D is None else self.fc_D.kernel[...]
        return dict(dt_bias=self.dt_bias[...], A_log=self.A_log[...], D=self.D[...], W_D=W_D,
                    headdim=self.headdim, ngroups=self.ngroups, method=self.method, chunk_size=self.chunk_size)

    def _output(self, y, z, dtype):
        return self.out_proj(self.norm(y.astype(dtype), gate=z))

    def forward(self, u):
        z, xbc, dt = self._project(u)
        gn = self.ngroups * self.d_state
        x, B_f, C_f, B_b, C_b = jnp.split(self._conv(xbc), [self.d_inner + i * gn for i in range(4)], axis=-1)
        y = quasiseparable_mix(x, dt, B_f, C_f, B_b, C_b, shift=self.combine == "quasiseparable",
                               **self._mix_options())
        return self._output(y, z, u.dtype)


class HydraCausalState(NamedTuple):
    """Recurrent state of ``hydra_causal`` (float32): the last ``d_conv - 1`` conv inputs
    ``conv (B, d_conv - 1, d_inner + 2·G·N)``, the SSD state ``ssd (B, H, N, P)`` and the
    last SSD output ``previous (B, H, P)``."""

    conv: jax.Array
    ssd: jax.Array
    previous: jax.Array


@register("hydra_causal", example_options={"d_state": 8, "headdim": 8, "d_conv": 3})
class HydraCausal(Hydra):
    """The forward half of Hydra: a causal SSD block with Hydra's shift and free diagonal.

    The same options as ``hydra`` (no ``combine``; ``d_conv`` may be even). Parameters:
    ``in_proj (d_model, 2·d_inner + 2·G·N + H)`` with outputs ``[z | x | B | C | dt]``,
    ``conv_weight (d_conv, d_inner + 2·G·N)``, the rest as in ``hydra``. With twice
    Hydra's ``d_state`` it has Hydra's parameter count up to ``H`` columns of ``dt``
    (and the same state size per position as Hydra's two scans).
    """

    causal = True
    directions = 1

    def __init__(self, d_model: int, *, d_state: int = 64, d_conv: int = 7, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, bias: bool = False, conv_bias: bool = True,
                 method: str = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE, rngs: nnx.Rngs):
        self._build(d_model, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim, ngroups=ngroups,
                    dt_min=dt_min, dt_max=dt_max, dt_init_floor=dt_init_floor, bias=bias, conv_bias=conv_bias,
                    free_diagonal=True, method=method, chunk_size=chunk_size, rngs=rngs)

    def _mix(self, xbc_conv, dt, state):
        x, B, C = jnp.split(xbc_conv, [self.d_inner, self.d_inner + self.ngroups * self.d_state], axis=-1)
        return causal_quasiseparable_mix(x, dt, B, C, state=state, **self._mix_options())

    def forward(self, u):
        z, xbc, dt = self._project(u)
        y, _ = self._mix(self._conv(xbc), dt, None)
        return self._output(y, z, u.dtype)

    def init_state(self, batch_size: int) -> HydraCausalState:
        zeros = lambda *shape: jnp.zeros((batch_size,) + shape, jnp.float32)  # noqa: E731
        return HydraCausalState(zeros(self.d_conv - 1, self.d_inner + 2 * self.ngroups * self.d_state),
                                zeros(self.heads, self.d_state, self.headdim), zeros(self.heads, self.headdim))

    def forward_step(self, u_t, state: HydraCausalState):
        z, xbc, dt = self._project(u_t[:, None])
        window = jnp.concatenate([state.conv.astype(xbc.dtype), xbc], axis=1)        # (B, d_conv, ·)
        y, mixed = self._mix(self._conv(window)[:, -1:], dt, CausalMixState(state.ssd, state.previous))
        out = self._output(y, z, u_t.dtype)[:, 0]
        return out, HydraCausalState(window[:, 1:].astype(jnp.float32), mixed.ssd.astype(jnp.float32),
                                     mixed.previous.astype(jnp.float32))
