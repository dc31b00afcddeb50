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
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from .. import scans
from ..scans.linear_attention import DEFAULT_CHUNK_SIZE
from .base import Mixer, register
from .common import Dense, RMSNorm, check_positive_int, depthwise_conv1d, expand_to


def _compute_dtype(x):
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def _shift_later(y):
    """``y[:, t] -> y[:, t - 1]`` along axis 1; the first step gets 0."""
    return jnp.concatenate([jnp.zeros_like(y[:, :1]), y[:, :-1]], axis=1)


def _to_heads(m, groups: int, heads: int):
    """``(b, L, G·N) -> (b, L, heads, N)``: a group's vector is shared by its ``heads / G`` heads."""
    b, L, width = m.shape
    return jnp.repeat(m.reshape(b, L, groups, width // groups), heads // groups, axis=2)


def quasiseparable_mix(x, dt, B_fwd, C_fwd, B_bwd, C_bwd, *, dt_bias, A_log, D, W_D, headdim: int,
                       ngroups: int = 1, method: str = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Hydra's quasiseparable matrix mixer ``y = M x`` (see the module docstring).

    Args:
      x: ``(b, L, H·P)`` inputs, ``H`` heads of ``P = headdim`` channels.
      dt: ``(b, L, 2H)`` raw step sizes: forward heads first, then backward.
      B_fwd, C_fwd, B_bwd, C_bwd: ``(b, L, G·N)``, ``G = ngroups`` groups of ``N`` states.
      dt_bias: ``(H,)`` added to both directions' ``dt`` before softplus.
      A_log: ``(H,)``, ``A = -exp(A_log)`` shared by both directions.
      D: ``(H,)`` static part of the diagonal.
      W_D: ``(H·P, H)`` data-dependent part of the diagonal, ``x_i W_D``.
      method, chunk_size: passed to ``scans.linear_attention``.

    Returns ``(b, L, H·P)`` in the compute dtype (float32, or float64 for float64 inputs).
    """
    if jnp.ndim(x) != 3 or x.shape[-1] % headdim:
        raise ValueError(f"x must be (batch, length, heads·headdim) with headdim={headdim}; got {jnp.shape(x)}")
    b, L, width = x.shape
    H = width // headdim
    if jnp.shape(dt) != (b, L, 2 * H):
        raise ValueError(f"dt must be (batch, length, 2·heads) = {(b, L, 2 * H)}; got {jnp.shape(dt)}")
    for name, m in (("B_fwd", B_fwd), ("C_fwd", C_fwd), ("B_bwd", B_bwd), ("C_bwd", C_bwd)):
        if jnp.ndim(m) != 3 or m.shape[:2] != (b, L) or m.shape[-1] % ngroups or H % ngroups:
            raise ValueError(f"{name} must be (batch, length, ngroups·d_state) with batch, length = {(b, L)} "
                             f"and ngroups={ngroups} dividing heads={H}; got {jnp.shape(m)}")
    dtype = _compute_dtype(x)
    xh = x.astype(dtype).reshape(b, L, H, headdim)
    delta = jax.nn.softplus(dt.astype(dtype) + expand_to(jnp.tile(dt_bias.astype(dtype), 2), 3))
    A = -jnp.exp(A_log.astype(dtype))
    flip = lambda a: jnp.flip(a, axis=1)
    heads = lambda m: _to_heads(m.astype(dtype), ngroups, H)
    # Both directions in one scan: the backward one runs forward over the reversed sequence.
    q = jnp.concatenate([heads(C_fwd), flip(heads(C_bwd))], axis=0)
    k = jnp.concatenate([heads(B_fwd), flip(heads(B_bwd))], axis=0)
    delta = jnp.concatenate([delta[..., :H], flip(delta[..., H:])], axis=0)       # (2b, L, H)
    v = jnp.concatenate([xh, flip(xh)], axis=0) * delta[..., None]
    o, _ = scans.linear_attention(q, k, v, delta * expand_to(A, 3), method=method, chunk_size=chunk_size)
    o = _shift_later(o)
    diagonal = expand_to(D.astype(dtype), 3) + jnp.matmul(xh.reshape(b, L, width), W_D.astype(dtype))
    y = o[:b] + flip(o[b:]) + xh * diagonal[..., None]
    return y.reshape(b, L, width)


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
    (``scans.linear_attention``).

    Parameters (layouts: Dense kernels are ``(in, out)``): ``in_proj (d_model, 2·d_inner
    + 4·G·N + 2·H)`` with outputs ``[z | x | B_f | C_f | B_b | C_b | dt_f | dt_b]``,
    ``conv_weight (d_conv, d_inner + 4·G·N)``, ``conv_bias``, ``dt_bias (H,)``,
    ``A_log (H,)`` (init 0: ``A = -1``), ``D (H,)`` (init 1), ``fc_D (d_inner, H)``,
    ``norm.scale (d_inner,)``, ``out_proj (d_inner, d_model)``.
    """

    causal = False

    def __init__(self, d_model: int, *, d_state: int = 64, d_conv: int = 7, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, bias: bool = False, conv_bias: bool = True,
                 method: str = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE, rngs: nnx.Rngs):
        for name, value in (("d_state", d_state), ("d_conv", d_conv), ("expand", expand),
                            ("headdim", headdim), ("ngroups", ngroups)):
            check_positive_int(name, value)
        if d_conv % 2 == 0:
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
        conv_dim = d_inner + 4 * ngroups * d_state
        self.in_proj = Dense(d_model, d_inner + conv_dim + 2 * heads, use_bias=bias, rngs=rngs)
        bound = 1.0 / math.sqrt(d_conv)  # torch Conv1d's default (fan_in = d_conv per channel)
        self.conv_weight = nnx.Param(jax.random.uniform(rngs.params(), (d_conv, conv_dim), jnp.float32,
                                                        -bound, bound))
        self.conv_bias = (nnx.Param(jax.random.uniform(rngs.params(), (conv_dim,), jnp.float32, -bound, bound))
                          if conv_bias else None)
        self.dt_bias = nnx.Param(_dt_bias_init(rngs.params(), heads, dt_min, dt_max, dt_init_floor))
        self.A_log = nnx.Param(jnp.zeros((heads,), jnp.float32))
        self.D = nnx.Param(jnp.ones((heads,), jnp.float32))
        self.fc_D = Dense(d_inner, heads, use_bias=False, rngs=rngs)
        self.norm = RMSNorm(d_inner, groups=ngroups, eps=1e-5)
        self.out_proj = Dense(d_inner, d_model, use_bias=bias, rngs=rngs)

    def forward(self, u):
        d_inner, gn = self.d_inner, self.ngroups * self.d_state
        zxbcdt = self.in_proj(u)
        z, xbc, dt = jnp.split(zxbcdt, [d_inner, 2 * d_inner + 4 * gn], axis=-1)
        bias = None if self.conv_bias is None else self.conv_bias[...]
        xbc = jax.nn.silu(depthwise_conv1d(xbc, self.conv_weight[...], bias, causal=False))
        x, B_f, C_f, B_b, C_b = jnp.split(xbc, [d_inner + i * gn for i in range(4)], axis=-1)
        y = quasiseparable_mix(x, dt, B_f, C_f, B_b, C_b, dt_bias=self.dt_bias[...], A_log=self.A_log[...],
                               D=self.D[...], W_D=self.fc_D.kernel[...], headdim=self.headdim,
                               ngroups=self.ngroups, method=self.method, chunk_size=self.chunk_size)
        return self.out_proj(self.norm(y.astype(u.dtype), gate=z))
