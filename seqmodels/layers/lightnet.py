"""LightNet: "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with
LightNet" (Qin, Mao, Shen, Li, Zhang, Dai, Zhong, 2024).

The *additive* linear recurrence. Per head, with key features ``j`` (``d_k``) and values
``v`` (``d_v``), ``q = SiLU(W_q x)``, ``k = W_k x``, ``v = W_v x``:

    z_t = log Σ_{s≤t} exp(k_s)                    (per key feature; z_0 = −∞)
    S_t = Σ_{s≤t} exp(k_s) v_sᵀ ⊘ exp(z_t)         (row j: a running softmax of k_{·j} over v)
    o_t = scale · q_tᵀ S_t

Causal form (``"lightnet"``). ``S_t`` is a per-key-feature running softmax; written as a
decayed recurrence (the GLA form) it is

    S_t = diag(exp(g_t)) S_{t−1} + k̃_t v_tᵀ,   g_t = z_{t−1} − z_t ≤ 0,   k̃_t = exp(k_t − z_t) ≤ 1,

(``g_1 = 0``), evaluated by ``scans.linear_attention`` with a per-key-feature log decay
(:func:`lightnet_gate`, :func:`lightnet_causal`); every exponent is ``≤ 0``. With a
reference ``r ≥ k_s`` per key feature, ``e^{k_s − z_t} = e^{k_s − r} e^{r − z_t}`` also
makes it *undecayed* linear attention of ``q ⊙ e^{r − z_t}`` over keys ``e^{k_s − r}``,
whose chunked form is all matmuls (5× faster on CPU): ``method="auto"`` uses it while
the keys' range keeps its factors inside float32 and the GLA form otherwise. The
recurrent state is ``(S, z)`` plus the step count (for MD-LRPE): constant size.

Non-causal form (``"lightnet_bidirectional"``, ``"lightnet2d"``): the softmax of each key
feature runs over *all* positions, ``o_t = scale · q_tᵀ Σ_s softmax_s(k_{·j}) v_sᵀ`` --
one global, max-stabilized, order-free reduction (:func:`lightnet_global`). Images are
mixed in a single pass whatever the flattening order ("you only scan once").

Positional encodings (``layers.positional``): MD-LRPE maps ``q`` and ``k̃`` to
``[x cos a(p), x sin a(p)]`` (the decay is repeated for both halves), MD-TPE adds a
Toeplitz positional term to the input (``x + MdTpe(x)``; the first author's code
applies it once to the embeddings instead).

Output as in fla-org/flash-linear-attention ``LightNetAttention``:
``W_o · (RMSNorm(o) ⊙ SiLU(W_g2 W_g1 x))`` with a low-rank gate and the RMSNorm over the
whole value width. Default sizes follow the first author's code (``d_k = d_v = d_model
/ num_heads``); fla's port uses ``d_k = 128`` (``key_dim=``).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .. import scans
from .base import Mixer, register
from .options import POSITIVE
from .common import Dense, RMSNorm
from .positional import MdLrpe, MdTpe, grid_positions

FeatureMap = Callable[[jax.Array], jax.Array]


def _accumulation_dtype(*xs):
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


# Largest ``max_s k_s − z_t`` for which the referenced form is used: its factors
# ``exp(±50)`` leave float32 ~38 orders of magnitude of headroom on either side.
REFERENCED_RANGE = 50.0


def lightnet_gate(k: jax.Array, z0: jax.Array | None = None):
    """Normalized keys and log decays of the causal form.

    Args:
      k: raw keys ``(B, L, H, Dk)``.
      z0: ``log Σ exp(k_s)`` over earlier steps ``(B, H, Dk)``; ``-inf`` (or None) for none.

    Returns:
      ``(k_tilde, log_decay, z_last)``: ``k̃_t = exp(k_t − z_t)``, ``g_t = z_{t−1} − z_t``
      (0 where there is no earlier step) ``(B, L, H, Dk)``, and ``z_L`` ``(B, H, Dk)``,
      in float32 or wider.
    """
    k, z, first = _log_normalizers(k, z0)
    k_tilde, log_decay = _gate(k, z, first)
    return k_tilde, log_decay, z[:, -1]


def _log_normalizers(k, z0):
    """``(k, z, z_0)`` in the accumulation dtype: ``z_t = log(e^{z_0} + Σ_{s≤t} e^{k_s})``
    ``(B, L, H, Dk)`` and ``z_0`` ``(B, 1, H, Dk)`` (``-inf`` for none)."""
    acc = _accumulation_dtype(k)
    k = k.astype(acc)
    first = jnp.full(k[:, :1].shape, -jnp.inf, acc) if z0 is None else jnp.asarray(z0, acc)[:, None]
    # not lax.cumlogsumexp: XLA's CPU lowering (reduce_window passes) takes 490 ms against 3.5 ms at L = 1024
    z, _ = scans.cumulative_logsumexp(k, first[:, 0])
    return k, z, first


def _gate(k, z, first):
    z_prev = jnp.concatenate([first, z[:, :-1]], axis=1)
    log_decay = jnp.where(jnp.isneginf(z_prev), jnp.zeros_like(z), z_prev - z)
    return jnp.exp(k - z), log_decay


def lightnet_causal(q, k, v, s0=None, z0=None, *, scale: float, feature_map: FeatureMap | None = None,
                    method: str = "auto"):
    """Causal LightNet: ``o_t = scale · q_tᵀ [Σ_{s≤t} e^{k_s} v_sᵀ] ⊘ [Σ_{s≤t} e^{k_s}]``.

    Two exact forms of the same function:

    * gated (GLA): ``scans.linear_attention`` over ``k̃`` with the per-key-feature log
      decays of :func:`lightnet_gate`; every exponent ``≤ 0``, for keys of any range.
    * referenced: with ``r = max(z_0, max_s k_s)`` per key feature (a constant, so no
      gradient flows through it), ``e^{k_s − z_t} = e^{k_s − r} · e^{r − z_t}``: undecayed
      linear attention of ``q ⊙ e^{r − z_t}`` over keys ``e^{k_s − r} ≤ 1``, all matmuls in
      the chunked form (B = 4, L = 1024, H = 8, Dk = 64 with MD-LRPE, Dv = 32 on CPU:
      21 ms against 107 ms for the gated sequential scan, 124 ms gated chunked). Its
      factors stay within float32's range while ``r − z_t ≤`` :data:`REFERENCED_RANGE`.

    ``method="auto"`` takes the referenced form when every ``r − z_t`` is within that
    range (checked at run time, ``lax.cond``) and the gated one otherwise; an explicit
    ``"sequential"`` or ``"chunked"`` runs the gated form with that scan.

    Args:
      q: queries ``(B, L, H, Dk)`` (after SiLU); k: raw keys ``(B, L, H, Dk)``; v: ``(B, L, H, Dv)``.
      s0: normalized state ``(B, H, Dk·r, Dv)`` (``r`` = feature_map's expansion); z0: ``(B, H, Dk)``.
      feature_map: applied to ``q`` and ``k̃`` (e.g. MD-LRPE); it multiplies the key
        features by an integer ``r``, the log decay is repeated ``r`` times to match. It
        must commute with scaling each key feature (``φ(c ⊙ x) = tile(c, r) ⊙ φ(x)``, as
        MD-LRPE does), which the referenced form relies on.
      method: ``"auto"``, or the ``scans.linear_attention`` method of the gated form.

    Returns ``(o (B, L, H, Dv), (S_L, z_L))``.
    """
    k, z, first = _log_normalizers(k, z0)
    q = q * jnp.asarray(scale, q.dtype)
    fm = (lambda x: x) if feature_map is None else feature_map
    expansion = jax.eval_shape(fm, q).shape[-1] // q.shape[-1]
    rows = lambda x: jnp.tile(x, (1,) * (x.ndim - 1) + (expansion,))  # per key feature -> per state row

    def gated(q, k, z, first, s0, gated_method):
        k_tilde, log_decay = _gate(k, z, first)
        return scans.linear_attention(fm(q), fm(k_tilde), v, rows(log_decay), s0, method=gated_method)

    if method != "auto" or k.shape[1] == 0 or (s0 is None) != (z0 is None):
        o, state = gated(q, k, z, first, s0, method)
        return o, (state, z[:, -1])

    r = jax.lax.stop_gradient(jnp.maximum(jnp.max(k, axis=1, keepdims=True), first))  # (B, 1, H, Dk)

    def referenced(q, k, z, first, s0):
        q = q * jnp.exp(r - z).astype(q.dtype)
        n0 = None if s0 is None else s0 * rows(jnp.exp(first - r))[:, 0, :, :, None]
        o, n = scans.linear_attention(fm(q), fm(jnp.exp(k - r)), v, None, n0, method="chunked")
        return o, n * rows(jnp.exp(r - z[:, -1:]))[:, 0, :, :, None]

    within = jnp.max(r - z) <= REFERENCED_RANGE  # False for NaN: the gated form
    o, state = jax.lax.cond(within, referenced, lambda *args: gated(*args, "auto"), q, k, z, first, s0)
    return o, (state, z[:, -1])


def lightnet_global(q, k, v, *, scale: float, feature_map: FeatureMap | None = None):
    """Non-causal LightNet: ``o_t = scale · q_tᵀ Σ_s softmax_s(k_{·j}) v_sᵀ`` over all positions.

    ``q, k``: ``(B, *spatial, H, Dk)``, ``v``: ``(B, *spatial, H, Dv)``. The softmax runs over
    every spatial axis at once (max-subtracted), and the sum over positions is one
    reduction: no scan and no order. Returns ``(B, *spatial, H, Dv)``.
    """
    acc = _accumulation_dtype(q, k, v)
    spatial = tuple(range(1, k.ndim - 2))
    k_tilde = jax.nn.softmax(k.astype(acc), axis=spatial)
    if feature_map is not None:
        q, k_tilde = feature_map(q), feature_map(k_tilde)
    B, H = k.shape[0], k.shape[-2]
    flat = lambda x: x.reshape((B, -1, H, x.shape[-1]))
    kv = jnp.einsum("bnhk,bnhv->bhkv", flat(k_tilde), flat(v.astype(acc)), precision=jax.lax.Precision.HIGHEST)
    o = jnp.einsum("bnhk,bhkv->bnhv", flat(q.astype(acc)), kv, precision=jax.lax.Precision.HIGHEST)
    return (o * jnp.asarray(scale, acc)).reshape(q.shape[:-1] + (v.shape[-1],))


class LightNetState(NamedTuple):
    """Recurrent state of causal LightNet, in the accumulation dtype (float32, or float64 under x64)."""

    recurrent: jax.Array       # S: (B, H, Dk·r, Dv), normalized (r = 2 with MD-LRPE)
    log_normalizer: jax.Array  # z: (B, H, Dk)
    position: jax.Array        # steps so far: (B,)
    tpe: jax.Array | None      # MD-TPE scan state (B, H_tpe, d_model / H_tpe), None without it


class _LightNetBase(Mixer):
    """Projections, positional encodings and the output stage shared by all LightNet forms."""

    option_choices = {"method": scans.LINEAR_ATTENTION_METHODS}
    option_ranges = {"lrpe_base": POSITIVE, "qk_scale": POSITIVE, "norm_eps": POSITIVE}

    def __init__(self, d_model: int, *, num_heads: int = 8, key_dim: int | None = None,
                 gate_low_rank_dim: int = 128, use_lrpe: bool = True, use_tpe: bool = True,
                 lrpe_base: float = 10000.0, qk_scale: float | None = None, norm_eps: float = 1e-5,
                 method: str = "auto", rngs: nnx.Rngs):
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.d_model, self.num_heads = d_model, num_heads
        self.key_dim = d_model // num_heads if key_dim is None else key_dim
        self.value_dim = d_model // num_heads
        self.qk_scale = 1.0 / math.sqrt(self.key_dim) if qk_scale is None else float(qk_scale)
        self.method = method
        self.query = Dense(d_model, num_heads * self.key_dim, use_bias=False, rngs=rngs)
        self.key = Dense(d_model, num_heads * self.key_dim, use_bias=False, rngs=rngs)
        self.value = Dense(d_model, d_model, use_bias=False, rngs=rngs)
        rank = min(gate_low_rank_dim, d_model)
        self.gate_down = Dense(d_model, rank, use_bias=False, rngs=rngs)
        self.gate_up = Dense(rank, d_model, use_bias=False, rngs=rngs)
        self.norm = RMSNorm(d_model, eps=norm_eps)
        self.out = Dense(d_model, d_model, use_bias=False, rngs=rngs)
        self.lrpe = MdLrpe(self.key_dim, spatial_ndim=self.spatial_ndim, base=lrpe_base) if use_lrpe else None
        self.tpe = (MdTpe(d_model, num_heads=num_heads, spatial_ndim=self.spatial_ndim, causal=self.causal,
                          eps=norm_eps, rngs=rngs) if use_tpe else None)

    def heads(self, x):
        """``q = SiLU(W_q x)``, ``k = W_k x``, ``v = W_v x`` split into heads."""
        split = lambda y, d: y.reshape(y.shape[:-1] + (self.num_heads, d))
        q = split(jax.nn.silu(self.query(x)), self.key_dim)
        return q, split(self.key(x), self.key_dim), split(self.value(x), self.value_dim)

    def feature_map(self, positions) -> FeatureMap | None:
        if self.lrpe is None:
            return None
        return lambda x: self.lrpe(x, positions)

    def output(self, o, x):
        """``W_o (RMSNorm(o) ⊙ SiLU(gate(x)))``; ``o``: ``(..., H, Dv)``."""
        o = o.reshape(o.shape[:-2] + (self.d_model,)).astype(x.dtype)
        return self.out(self.norm(o, gate=self.gate_up(self.gate_down(x))))


@register("lightnet", example_options={"num_heads": 2, "gate_low_rank_dim": 4})
class LightNet(_LightNetBase):
    """Causal LightNet over sequences ``(B, L, d_model)``; state: :class:`LightNetState`."""

    causal = True

    def mix(self, x, state: LightNetState | None = None):
        """Inputs after MD-TPE and the recurrence output before the output stage:
        ``(x_in, o (B, L, H, Dv), new_state)``."""
        tpe_state = None
        if self.tpe is not None:
            t, tpe_state = self.tpe.scan(x, None if state is None else state.tpe)
            x = x + t.astype(x.dtype)
        q, k, v = self.heads(x)
        offset = None if state is None else state.position
        positions = grid_positions(x.shape[1:2], offset)
        s0, z0 = (None, None) if state is None else (state.recurrent, state.log_normalizer)
        method = "sequential" if x.shape[1] == 1 else self.method  # one token: a plain step
        o, (S, z) = lightnet_causal(q, k, v, s0, z0, scale=self.qk_scale,
                                    feature_map=self.feature_map(positions), method=method)
        position = (jnp.zeros((x.shape[0],), jnp.float32) if state is None else state.position) + x.shape[1]
        return x, o, LightNetState(S, z, position, tpe_state)

    def forward(self, x):
        x_in, o, _ = self.mix(x)
        return self.output(o, x_in)

    def init_state(self, batch_size: int) -> LightNetState:
        features = self.key_dim * (1 if self.lrpe is None else 2)
        heads = (batch_size, self.num_heads)
        return LightNetState(
            jnp.zeros(heads + (features, self.value_dim), jnp.float32),
            jnp.full(heads + (self.key_dim,), -jnp.inf, jnp.float32),
            jnp.zeros((batch_size,), jnp.float32),
            None if self.tpe is None else self.tpe.initial_state(batch_size),
        )

    def forward_step(self, x_t, state: LightNetState):
        x_in, o, state = self.mix(x_t[:, None], state)
        return self.output(o, x_in)[:, 0], state


@register("lightnet_bidirectional", example_options={"num_heads": 2, "gate_low_rank_dim": 4})
class LightNetBidirectional(_LightNetBase):
    """Non-causal LightNet over sequences ``(B, L, d_model)``: one global reduction."""

    causal = False

    def mix(self, x):
        """``(x_in, o (B, *spatial, H, Dv))``: inputs after MD-TPE and the output before the output stage."""
        if self.tpe is not None:
            x = x + self.tpe(x).astype(x.dtype)
        q, k, v = self.heads(x)
        positions = grid_positions(x.shape[1:-1])
        return x, lightnet_global(q, k, v, scale=self.qk_scale, feature_map=self.feature_map(positions))

    def forward(self, x):
        x_in, o = self.mix(x)
        return self.output(o, x_in)


@register("lightnet2d", example_options={"num_heads": 2, "gate_low_rank_dim": 4})
class LightNet2D(LightNetBidirectional):
    """Non-causal LightNet over images ``(B, H, W, d_model)``; MD-LRPE / MD-TPE use both axes."""

    spatial_ndim = 2
