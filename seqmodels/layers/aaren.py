"""Aaren: "Attention as an RNN" (Feng, Tung, Hajimirsadeghi, Ahmed, Bengio, Mori, 2024).

Each head attends causally with one *learned* query token ``q_h`` (not a function of
the input) over keys and values projected from the input:

    s_{t,h} = scale · q_h · k_{t,h},       k_t = W_k x_t,  v_t = W_v x_t
    o_{t,h} = Σ_{i≤t} exp(s_{i,h}) v_{i,h} / Σ_{i≤t} exp(s_{i,h})
    y_t     = W_o concat_h(o_{t,h})

All prefix outputs come from one parallel prefix scan with the associative operator
on ``(max, normalizer, weighted sum)`` (``scans.softmax_scan``); the recurrent form
keeps exactly that triple per head, so streaming memory is constant in length.
The paper writes the score without 1/√d; we default to ``scale = 1/√head_dim`` as in
standard attention and expose ``qk_scale``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from .. import scans
from .base import Mixer, register
from .options import POSITIVE
from .common import Dense, expand_to


@register("aaren", example_options={"num_heads": 2})
class Aaren(Mixer):
    """Multi-head Aaren mixer. State: ``scans.SoftmaxState`` with ``(B, H)``, ``(B, H)``, ``(B, H, head_dim)``."""

    option_choices = {"method": scans.METHODS}
    option_ranges = {"qk_scale": POSITIVE}

    causal = True

    def __init__(self, d_model: int, *, num_heads: int = 4, head_dim: int | None = None,
                 qk_scale: float | None = None, use_bias: bool = True, method: str = "auto",
                 rngs: nnx.Rngs):
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads} "
                                 "(or pass head_dim)")
            head_dim = d_model // num_heads
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, head_dim
        self.qk_scale = 1.0 / math.sqrt(head_dim) if qk_scale is None else float(qk_scale)
        self.method = method
        width = num_heads * head_dim
        self.key = Dense(d_model, width, use_bias=use_bias, rngs=rngs)
        self.value = Dense(d_model, width, use_bias=use_bias, rngs=rngs)
        self.query = nnx.Param(jax.random.normal(rngs.params(), (num_heads, head_dim), jnp.float32))
        self.out = Dense(width, d_model, use_bias=use_bias, rngs=rngs)

    def _scores_values(self, x):
        heads = x.shape[:-1] + (self.num_heads, self.head_dim)
        k = self.key(x).reshape(heads)
        v = self.value(x).reshape(heads)
        q = expand_to(self.query[...].astype(x.dtype), k.ndim)
        scores = jnp.sum(k * q, axis=-1) * jnp.asarray(self.qk_scale, x.dtype)
        return scores, v

    def _project(self, o):
        return self.out(o.reshape(o.shape[:-2] + (self.num_heads * self.head_dim,)))

    def forward(self, x):
        scores, v = self._scores_values(x)
        o, _ = scans.softmax_scan(scores, v, method=self.method)
        return self._project(o)

    def init_state(self, batch_size: int) -> scans.SoftmaxState:
        heads = (batch_size, self.num_heads)
        return scans.SoftmaxState(jnp.full(heads, -jnp.inf, jnp.float32), jnp.zeros(heads, jnp.float32),
                                  jnp.zeros(heads + (self.head_dim,), jnp.float32))

    def forward_step(self, x_t, state):
        scores, v = self._scores_values(x_t[:, None])
        o, state = scans.softmax_scan(scores, v, state, method="sequential")
        return self._project(o[:, 0]), state
