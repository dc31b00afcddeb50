"""DeltaProduct: "DeltaProduct: Improving State-Tracking in Linear RNNs via Householder
Products" (Siems, Carstensen, Zela, Hutter, Pontil, Grazzi, 2025), and DeltaNet, its
``n_h = 1`` case ("Parallelizing Linear Transformers with the Delta Rule over Sequence
Length", Yang, Wang, Zhang, Shen, Kim, 2024).

Per head the state ``S`` is a ``Dk × Dv`` matrix. Token ``t`` takes ``n_h`` steps of the
delta rule (``scans.delta_rule``; DeltaProduct eq. 3)::

    S ← exp(g_t) S                                                 (forget gate, once per token)
    S ← (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S + β_{t,j} k_{t,j} v_{t,j}ᵀ    j = 1..n_h
    o_t = Sᵀ q_t

so the transition of a token is a product of ``n_h`` generalized Householder matrices.
The layer around it (fla-org/flash-linear-attention ``GatedDeltaProduct``)::

    q_t = SiLU(conv(W_q x))_t                     (H, Dk), L2-normalized per head, × Dk^-1/2
    k_t = SiLU(conv(W_k x))_t                     (n_h, H, Dk) per token, L2-normalized per head
    v_t = SiLU(conv(W_v x))_t                     (n_h, H, Dv)
    β_t = sigmoid(W_β x_t)                        (n_h, H), × 2 with allow_neg_eigval
    g_t = −exp(A_log) · softplus(W_a x_t + dt_bias)   (H,), ≤ 0, with use_forget_gate
    y_t = W_o [RMSNorm_head(o_t) · w ⊙ SiLU(W_g x_t)]  (the gate only with use_output_gate)

``conv`` is a causal depthwise short convolution (``common.ShortConv``, kernel
``conv_size``, no bias), one per projection; without it (``use_short_conv=False``)
``q, k, v`` are ``SiLU`` of the projections. Layout: the outputs of ``W_k`` and ``W_v``
per token are ``(n_h, H, D)`` and those of ``W_β`` ``(n_h, H)`` (step slowest), as in
fla's ``rearrange(k, '... t (n h d) -> ... (t n) h d')``: step ``j`` of token ``t`` is
micro-step ``t·n_h + j`` of the interleaved sequence. The L2 norm is ``x / √(‖x‖² +
1e-6)`` (fla's ``l2norm``).

With unit keys every factor ``I − β k kᵀ`` has eigenvalues ``{1, 1 − β}``: ``β ∈ [0, 1]``
keeps them in ``[0, 1]``; ``allow_neg_eigval=True`` gives ``β ∈ [0, 2]`` and eigenvalues
in ``[−1, 1]``, the "[−1, 1]" variant of "Unlocking State-Tracking in Linear RNNs Through
Negative Eigenvalues" (Grazzi, Siems, Zela, Franke, Hutter, Pontil, 2025), which is what
lets one layer track permutations (the S3 word problem needs ``n_h = 2``). The forget gate
is Gated DeltaNet's ("Gated Delta Networks: Improving Mamba2 with Delta Rule", Yang,
Kautz, Hatamizadeh, 2025).

Initialization as fla's: every linear map xavier-uniform with gain ``2^-2.5``
(``GatedDeltaProduct._initialize_weights``), ``A ~ U(0, 16)``, ``A_log = log A``,
``dt`` log-uniform in ``[1e-3, 1e-1]`` floored at ``1e-4`` and ``dt_bias = softplus⁻¹(dt)``
(``A_log`` and ``dt_bias`` are rank 1, so the optimizer gives them no weight decay, as fla
does); the short convolutions as torch's ``Conv1d``. One difference: the norm weight
``w`` is per head and channel (``H·Dv`` values), fla shares one of ``Dv`` across heads
(equal at initialization).

The recurrent form (``init_state``, ``step``) keeps :class:`DeltaProductState`: the
delta state and the last ``conv_size − 1`` inputs of each short convolution, constant
size, ``O(n_h·H·Dk·Dv)`` per token. Projections run in the activation dtype; from the
normalizations to the scan everything is float32 (float64 for float64 inputs).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .. import scans
from ..scans.delta import DEFAULT_CHUNK_SIZE, METHODS
from ..ssm.timescale import log_uniform_log_dt
from .base import Mixer, register
from .options import POSITIVE
from .common import Dense, RMSNorm, ShortConv, check_positive_int, expand_to

L2_EPS = 1e-6  # fla's l2norm: x / sqrt(‖x‖² + eps)
LINEAR_GAIN = 2 ** -2.5  # fla GatedDeltaProduct._initialize_weights: xavier_uniform(gain=2^-2.5)
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4  # fla's (hard-coded) dt_bias initialization
A_MAX = 16.0  # A ~ U(0, 16)


def l2_normalize(x: jax.Array, eps: float = L2_EPS) -> jax.Array:
    """``x / √(‖x‖² + eps)`` over the last axis (finite, with finite gradients, at 0)."""
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def _linear(in_features: int, out_features: int, rngs: nnx.Rngs) -> Dense:
    init = nnx.initializers.variance_scaling(LINEAR_GAIN ** 2, "fan_avg", "uniform")  # xavier_uniform(gain)
    return Dense(in_features, out_features, use_bias=False, kernel_init=init, rngs=rngs)


def _dt_bias_init(key, heads: int) -> jax.Array:
    dt = jnp.maximum(jnp.exp(log_uniform_log_dt(key, (heads,), DT_MIN, DT_MAX)), DT_FLOOR)
    return dt + jnp.log(-jnp.expm1(-dt))  # softplus⁻¹(dt)


class DeltaProductState(NamedTuple):
    """Recurrent state (float32): the delta state ``recurrent (B, H, Dk, Dv)`` and the
    short-convolution caches, the last ``conv_size − 1`` inputs of each convolution,
    oldest first: ``conv_q (B, K−1, H·Dk)``, ``conv_k (B, K−1, n_h·H·Dk)``,
    ``conv_v (B, K−1, n_h·H·Dv)`` (None without short convolutions)."""

    recurrent: jax.Array
    conv_q: jax.Array | None
    conv_k: jax.Array | None
    conv_v: jax.Array | None


@register("deltaproduct", example_options={"num_heads": 2, "n_householder": 2})
class DeltaProduct(Mixer):
    """DeltaProduct mixer (causal), ``(batch, length, d_model)`` to the same shape.

    Options (fla ``GatedDeltaProduct`` layer defaults unless noted):
      num_heads: heads ``H`` (4; fla: 6 at hidden size 2048).
      head_dim: key size per head ``Dk`` (default ``d_model // num_heads``; fla: 256).
      expand_v: value size per head ``Dv = head_dim · expand_v`` (1 for small models;
        fla: 2).
      n_householder: Householder steps per token ``n_h`` (2).
      allow_neg_eigval: ``β ∈ [0, 2]`` (eigenvalues in ``[−1, 1]``) instead of ``[0, 1]`` (True).
      use_forget_gate: the gate ``g_t`` (True).
      use_short_conv, conv_size: causal short convolutions on q, k, v (True, 4).
      use_output_gate: ``SiLU(W_g x)`` after the output norm (True).
      norm_eps: output RMSNorm epsilon (1e-5).
      method, chunk_size: passed to ``scans.delta_rule`` (``chunk_size`` counts
        micro-steps: a chunk holds ``chunk_size // n_h`` tokens).

    Parameters (Dense kernels ``(in, out)``): ``q_proj (d_model, H·Dk)``, ``k_proj (d_model,
    n_h·H·Dk)``, ``v_proj (d_model, n_h·H·Dv)``, ``b_proj (d_model, n_h·H)``; with the forget
    gate ``a_proj (d_model, H)``, ``A_log (H,)``, ``dt_bias (H,)``; with short convolutions
    ``q_conv``, ``k_conv``, ``v_conv`` (``weight (conv_size, width)``); with the output gate
    ``g_proj (d_model, H·Dv)``; ``norm.scale (H·Dv,)``, ``o_proj (H·Dv, d_model)``.
    """

    option_choices = {"method": METHODS}
    option_ranges = {"norm_eps": POSITIVE}

    causal = True

    def __init__(self, d_model: int, *, num_heads: int = 4, head_dim: int | None = None, expand_v: int = 1,
                 n_householder: int = 2, allow_neg_eigval: bool = True, use_forget_gate: bool = True,
                 use_short_conv: bool = True, conv_size: int = 4, use_output_gate: bool = True,
                 norm_eps: float = 1e-5, method: str = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE,
                 rngs: nnx.Rngs):
        for name, value in (("num_heads", num_heads), ("expand_v", expand_v), ("n_householder", n_householder),
                            ("conv_size", conv_size), ("chunk_size", chunk_size)):
            check_positive_int(name, value)
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads} (or pass head_dim)")
            head_dim = d_model // num_heads
        check_positive_int("head_dim", head_dim)

        self.d_model, self.num_heads, self.n_householder = d_model, num_heads, n_householder
        self.key_dim, self.value_dim = head_dim, head_dim * expand_v
        self.allow_neg_eigval, self.method, self.chunk_size = allow_neg_eigval, method, chunk_size
        H, n, Dk, Dv = num_heads, n_householder, self.key_dim, self.value_dim
        self.q_proj = _linear(d_model, H * Dk, rngs)
        self.k_proj = _linear(d_model, n * H * Dk, rngs)
        self.v_proj = _linear(d_model, n * H * Dv, rngs)
        self.b_proj = _linear(d_model, n * H, rngs)
        if use_forget_gate:
            self.a_proj = _linear(d_model, H, rngs)
            A = jax.random.uniform(rngs.params(), (H,), jnp.float32, 0.0, A_MAX)
            self.A_log = nnx.Param(jnp.log(jnp.maximum(A, jnp.finfo(jnp.float32).tiny)))
            self.dt_bias = nnx.Param(_dt_bias_init(rngs.params(), H))
        else:
            self.a_proj = self.A_log = self.dt_bias = None
        if use_short_conv:
            self.q_conv = ShortConv(H * Dk, conv_size, rngs=rngs)
            self.k_conv = ShortConv(n * H * Dk, conv_size, rngs=rngs)
            self.v_conv = ShortConv(n * H * Dv, conv_size, rngs=rngs)
        else:
            self.q_conv = self.k_conv = self.v_conv = None
        self.g_proj = _linear(d_model, H * Dv, rngs) if use_output_gate else None
        self.norm = RMSNorm(H * Dv, groups=H, eps=norm_eps)
        self.o_proj = _linear(H * Dv, d_model, rngs)

    def _convs(self):
        return (self.q_conv, self.k_conv, self.v_conv)

    def _projections(self, x):
        """``(W_q x, W_k x, W_v x)``, the inputs of the short convolutions."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def _coefficients(self, x, q, k, v):
        """Scan inputs from ``x (B, L, d_model)`` and the activated ``q, k, v (B, L, width)``:
        ``q (B, L, H, Dk)`` (normalized, scaled), ``k (B, L, H, n_h, Dk)`` (normalized),
        ``v (B, L, H, n_h, Dv)``, ``β (B, L, H, n_h)``, ``g (B, L, H)`` or None."""
        B, L = x.shape[:2]
        H, n, Dk, Dv = self.num_heads, self.n_householder, self.key_dim, self.value_dim
        dtype = jnp.promote_types(x.dtype, jnp.float32)
        per_step = lambda y, d: jnp.swapaxes(y.astype(dtype).reshape((B, L, n, H) + d), 2, 3)  # (n, H) -> (H, n)
        q = l2_normalize(q.astype(dtype).reshape(B, L, H, Dk)) * jnp.asarray(Dk ** -0.5, dtype)
        k = l2_normalize(per_step(k, (Dk,)))
        v = per_step(v, (Dv,))
        beta = jax.nn.sigmoid(per_step(self.b_proj(x), ()))
        if self.allow_neg_eigval:
            beta = 2 * beta
        g = None
        if self.a_proj is not None:
            a = self.a_proj(x).astype(dtype) + expand_to(self.dt_bias[...].astype(dtype), 3)
            g = -expand_to(jnp.exp(self.A_log[...].astype(dtype)), 3) * jax.nn.softplus(a)
        return q, k, v, beta, g

    def _output(self, o, x):
        """``W_o [RMSNorm_head(o) · w (⊙ SiLU(W_g x))]``; ``o (B, L, H, Dv)``."""
        o = o.reshape(o.shape[:2] + (self.num_heads * self.value_dim,)).astype(x.dtype)
        gate = None if self.g_proj is None else self.g_proj(x)
        return self.o_proj(self.norm(o, gate=gate))

    def coefficients(self, x):
        """The inputs of ``scans.delta_rule`` for a sequence ``x (B, L, d_model)`` (from zero
        conv history): ``q (B, L, H, Dk)`` (unit norm · Dk^-1/2), ``k (B, L, H, n_h, Dk)``
        (unit norm), ``v (B, L, H, n_h, Dv)``, ``β (B, L, H, n_h)`` and ``g (B, L, H)`` or
        None, in float32 (float64 for float64 inputs)."""
        projections = self._projections(x)
        if self.q_conv is not None:
            projections = [conv(p) for conv, p in zip(self._convs(), projections)]
        return self._coefficients(x, *(jax.nn.silu(p) for p in projections))

    def forward(self, x):
        q, k, v, beta, g = self.coefficients(x)
        o, _ = scans.delta_rule(q, k, v, beta, g, method=self.method, chunk_size=self.chunk_size)
        return self._output(o, x)

    def init_state(self, batch_size: int) -> DeltaProductState:
        recurrent = jnp.zeros((batch_size, self.num_heads, self.key_dim, self.value_dim), jnp.float32)
        if self.q_conv is None:
            return DeltaProductState(recurrent, None, None, None)
        return DeltaProductState(recurrent, *(conv.initial_cache(batch_size) for conv in self._convs()))

    def forward_step(self, x_t, state: DeltaProductState):
        projections = self._projections(x_t)
        caches = (state.conv_q, state.conv_k, state.conv_v)
        if self.q_conv is not None:
            stepped = [conv.step(p, cache) for conv, p, cache in zip(self._convs(), projections, caches)]
            projections, caches = zip(*stepped)
        x = x_t[:, None]
        q, k, v, beta, g = self._coefficients(x, *(jax.nn.silu(p[:, None]) for p in projections))
        o, recurrent = scans.delta_rule(q, k, v, beta, g, state.recurrent, method="sequential")
        return self._output(o, x)[:, 0], DeltaProductState(recurrent, *caches)


@register("deltanet", example_options={"num_heads": 2})
class DeltaNet(DeltaProduct):
    """DeltaNet mixer: the same layer with fla's ``DeltaNet`` defaults, ``n_householder=1``
    (one delta-rule step per token), no forget gate, ``allow_neg_eigval=False`` (``β ∈
    [0, 1]``) and no output gate (fla's ``use_gate=False``). ``allow_neg_eigval=True`` is
    the "[−1, 1]" DeltaNet of Grazzi et al. (2025); ``use_forget_gate=True`` makes it Gated
    DeltaNet. Options and parameters as :class:`DeltaProduct`."""

    def __init__(self, d_model: int, *, num_heads: int = 4, head_dim: int | None = None, expand_v: int = 1,
                 n_householder: int = 1, allow_neg_eigval: bool = False, use_forget_gate: bool = False,
                 use_short_conv: bool = True, conv_size: int = 4, use_output_gate: bool = False,
                 norm_eps: float = 1e-5, method: str = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE,
                 rngs: nnx.Rngs):
        super().__init__(d_model, num_heads=num_heads, head_dim=head_dim, expand_v=expand_v,
                         n_householder=n_householder, allow_neg_eigval=allow_neg_eigval,
                         use_forget_gate=use_forget_gate, use_short_conv=use_short_conv, conv_size=conv_size,
                         use_output_gate=use_output_gate, norm_eps=norm_eps, method=method,
                         chunk_size=chunk_size, rngs=rngs)
