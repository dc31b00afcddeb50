"""Routing attention: "Efficient Content-Based Sparse Attention with Routing Transformers"
(Roy, Saffar, Vaswani, Grangier, TACL 2021).

Heads are split between *local* heads (sliding-window attention) and *routing* heads,
concatenated and projected: ``y = W_o concat(local_heads, routing_heads)``. A routing
head clusters its queries and keys with an online k-means and attends only within a
cluster (paper §4):

    q̂ = norm(q),  k̂ = norm(k)              layer-norm without parameters (per head)
    c(x̂) = argmin_c ‖x̂ − μ_c‖²              nearest of the head's centroids μ ∈ R^{k×d_h}
    o_t = softmax_{s ∈ S(t)}(q_t·k_s / √d_h) v_s

Queries and keys share one projection by default in the causal mixer (``k = q``, as in
the paper's causal models); attention itself uses the raw ``q``, ``k``. Cluster choices
are discrete, so they are made in float32 (from a float32 projection when activations
are bfloat16): mixed precision changes values, never which tokens meet.

**Two mixers, two choices of S(t).**

- ``routing_bidirectional`` (not causal): the paper's balanced routing. Each centroid
  takes its ``w = ⌈L / k⌉`` nearest queries and its ``w`` nearest keys; attention runs
  within each such cluster; outputs are scattered back to their positions and
  averaged over the clusters that picked the token (tokens picked by none get zero
  from the routing heads). Which tokens a cluster keeps depends on the whole
  sequence, so this form is not causal (the paper's top-w routing is not causal
  either: a future token can push a past key out of a cluster).
- ``routing`` (causal, strictly): S(t) = the ``window`` most recent tokens ``s ≤ t``
  (``t`` itself included) with ``c(q_s) = c(q_t)``. A token's cluster depends on that
  token alone (centroids are fixed during a forward pass), so output ``t`` depends on
  inputs ``≤ t`` only. Computed by a sort on ``(cluster, position)``: every cluster
  becomes a contiguous run ordered by position, so the admissible keys of a query are
  exactly the same-cluster entries among the ``window`` sorted entries ending at
  itself — a banded attention over the sorted order with a same-cluster mask
  (``common.local_attention`` with segment ids), then the inverse permutation. This
  needs shared query/key (a query's keys are then the members of its own run), so
  ``shared_qk=False`` is rejected for the causal mixer.

Cost per routing head: ``O(L·k·d_h)`` for the assignment, ``O(L log L)`` for the sort
or top-w, ``O(L·w·d_h)`` for the attention; no ``L × L`` matrix is ever built. Local
heads see ``t − window < s ≤ t`` (causal) or ``|s − t| < window`` (bidirectional).

**Number of clusters.** ``num_clusters=k`` fixes ``k``; the centroid variable then
holds exactly ``k`` centroids per routing head. ``num_clusters=None`` (default) uses
``k(L) = clip(round(√L), 1, max_clusters)`` at call time (the paper's ``k ≈ √L``,
which balances ``L·k`` against ``L²/k``); the variable holds ``max_clusters``
centroids and a call of length ``L`` uses (and updates) the first ``k(L)``. Since
``k(L)`` depends on the total length, ``y[:, :t]`` of ``x[:, :t]`` differs from the
first ``t`` outputs for ``x`` when ``k(t) ≠ k(L)``; within one call the mixer is
strictly causal. ``init_state(batch, length=L)`` builds a cache for ``k(L)`` clusters,
so ``step`` reproduces a length-``L`` forward (without ``length``: ``num_clusters`` or
``max_clusters``). For autoregressive generation fix ``num_clusters``.

**Centroids are not parameters.** They live in a ``Centroids`` variable (an
``nnx.Variable`` subclass, not ``nnx.Param``), so ``nnx.Optimizer(..., wrt=nnx.Param)``
and gradients over ``nnx.Param`` never touch them, and every use is under
``stop_gradient`` (their gradient is zero even if asked for). In training mode
(``deterministic=False``, the default; ``model.train()``) each forward pass updates
the centroids it used, after computing its output, by an exponential moving average
of the normalized vectors assigned to them (queries, and keys if not shared; batch
and positions pooled): ``μ_c ← λ μ_c + (1 − λ) mean{x̂ : c(x̂) = c}`` with
``λ = ema_decay = 0.999``; a centroid with no assigned vector stays. ``model.eval()``
sets ``deterministic=True`` and freezes them; ``step`` never changes them. The
update is a state mutation: run training-mode calls eagerly or under nnx transforms
(``nnx.jit``, ``nnx.grad``, ``nnx.value_and_grad``), which carry it back to the
module; under a raw ``jax.grad`` of a closure over the module's non-Param state, nnx
refuses the mutation (``TraceContextError``), as it does for ``BatchNorm``.

**Auxiliary loss (training mode).** Each training-mode forward pass sows the
commitment loss ``β · mean((x̂ − sg(μ_{c(x̂)}))²)`` (``β = commitment = 1e-4``; mean
over vectors and features; its gradient reaches the projections only) with
``self.sow(nnx.Intermediate, "aux_loss", value)``. **The training loop must add every
``aux_loss`` intermediate to the task loss**, e.g.::

    def loss_fn(model, x, target):
        y, intermediates = nnx.capture(model, nnx.Intermediate)(x)
        aux = sum(jax.tree.leaves(intermediates))   # here every intermediate is an "aux_loss"
        return task_loss(y, target) + aux

(``nnx.capture`` collects what was sown; without it, pop ``nnx.Intermediate`` state
after the call). In eval mode nothing is sown.

**Step** (causal mixer only) works over a fixed-size cache (``RoutingCache``): a ring
buffer of the last ``window`` keys/values of the local heads and, per routing head and
per cluster, a ring buffer of the last ``window`` keys/values assigned to that cluster
with the count of tokens it has received; the token's own key is written before it
attends, so ``step`` equals the parallel form token by token.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .base import Mixer, register
from .options import NON_NEGATIVE, Interval
from .common import Dense, expand_to, local_attention, masked_softmax

_NORM_EPS = 1e-6


class Centroids(nnx.Variable):
    """k-means centroids of the routing heads: state updated by EMA, never by gradients."""


class RoutingCache(NamedTuple):
    """Decoding cache of the causal routing mixer (all float32).

    position: ``(B,)`` tokens seen so far (an exact count up to 2^24).
    local_keys, local_values: ``(B, local_heads, window, head_dim)`` ring buffer, slot ``t mod window``.
    cluster_keys, cluster_values: ``(B, routing_heads, k, window, head_dim)``, one ring
      buffer per cluster, slot ``n mod window`` for the ``n``-th token of that cluster.
    cluster_counts: ``(B, routing_heads, k)`` tokens assigned to each cluster so far.
    """

    position: jax.Array
    local_keys: jax.Array
    local_values: jax.Array
    cluster_keys: jax.Array
    cluster_values: jax.Array
    cluster_counts: jax.Array


def _normalize(x: jax.Array) -> jax.Array:
    """Layer norm without parameters over the last axis, in float32."""
    x = x.astype(jnp.float32)
    centered = x - jnp.mean(x, axis=-1, keepdims=True)
    return centered * jax.lax.rsqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + _NORM_EPS)


def _affinity(x_hat: jax.Array, centroids: jax.Array) -> jax.Array:
    """``-½‖x̂ − μ_c‖²``: ``x_hat`` ``(B, L, H, d)``, ``centroids`` ``(H, k, d)`` -> ``(B, L, H, k)``."""
    dots = jnp.einsum("blhd,hkd->blhk", x_hat, centroids)
    half_sq_x = 0.5 * jnp.sum(x_hat * x_hat, axis=-1, keepdims=True)
    half_sq_mu = 0.5 * jnp.sum(centroids * centroids, axis=-1)[None, None]
    return dots - half_sq_x - half_sq_mu


def _attend_cache(q: jax.Array, keys: jax.Array, values: jax.Array, valid: jax.Array,
                  scale: float) -> jax.Array:
    """One query per head against cached keys: q ``(B, H, d)``, keys ``(B, H, W, d)``, valid ``(B, ·, W)``."""
    logits = jnp.einsum("bhd,bhwd->bhw", q, keys.astype(q.dtype), preferred_element_type=jnp.float32) * scale
    weights = masked_softmax(logits, valid)
    out = jnp.einsum("bhw,bhwd->bhd", weights.astype(q.dtype), values.astype(q.dtype),
                     preferred_element_type=jnp.float32)
    return out.astype(q.dtype)


# The examples run in eval mode (frozen centroids): the conformance suite compares calls
# of one mixer as a function, and a training-mode call moves the centroids it uses.
EXAMPLE_OPTIONS = {"num_heads": 2, "window": 8, "num_clusters": 4, "deterministic": True}


@register("routing", example_options=EXAMPLE_OPTIONS)
class Routing(Mixer):
    """Causal routing attention (local heads + strictly causal routing heads) with a cache for ``step``.

    Args:
      d_model: model width.
      num_heads: total heads; ``head_dim`` defaults to ``d_model // num_heads``.
      local_heads: heads of sliding-window attention (default ``num_heads // 2``); the
        other ``num_heads - local_heads`` heads route.
      window: keys per query: the local band, and in the causal mixer the most recent
        same-cluster keys of a routing head.
      num_clusters: fixed number of clusters ``k``, or ``None`` for ``round(√L)`` per call.
      max_clusters: centroids kept when ``num_clusters`` is ``None`` (cap on ``k(L)``).
      shared_qk: keys equal queries (default: ``True`` for the causal mixer, which
        requires it, ``False`` for the bidirectional one).
      commitment: weight ``β`` of the sown commitment loss.
      ema_decay: ``λ`` of the centroid moving average.
      deterministic: freeze the centroids (set by ``model.eval()`` / ``model.train()``).
    """

    option_ranges = {"local_heads": NON_NEGATIVE, "commitment": NON_NEGATIVE, "ema_decay": Interval(0, 1)}
    causal = True
    # routing sorts and clusters the whole sequence: no sequence-parallel form
    supports_sequence_parallel = False

    def __init__(self, d_model: int, *, num_heads: int = 4, head_dim: int | None = None,
                 local_heads: int | None = None, window: int = 64, num_clusters: int | None = None,
                 max_clusters: int = 128, shared_qk: bool | None = None, commitment: float = 1e-4,
                 ema_decay: float = 0.999, deterministic: bool = False, use_bias: bool = True,
                 rngs: nnx.Rngs):
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads} "
                                 "(or pass head_dim)")
            head_dim = d_model // num_heads
        local_heads = num_heads // 2 if local_heads is None else local_heads
        if not 0 <= local_heads <= num_heads:
            raise ValueError(f"local_heads must be in [0, num_heads={num_heads}]; got {local_heads}")
        if window < 1:
            raise ValueError(f"window must be ≥ 1; got {window}")
        if num_clusters is not None and num_clusters < 1:
            raise ValueError(f"num_clusters must be ≥ 1 or None; got {num_clusters}")
        if max_clusters < 1:
            raise ValueError(f"max_clusters must be ≥ 1; got {max_clusters}")
        shared_qk = self.causal if shared_qk is None else shared_qk
        if self.causal and not shared_qk:
            raise ValueError("the causal routing mixer needs shared_qk=True (a query's admissible keys "
                             "are then the earlier members of its own cluster)")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, head_dim
        self.local_heads, self.routing_heads = local_heads, num_heads - local_heads
        self.window, self.num_clusters, self.max_clusters = window, num_clusters, max_clusters
        self.shared_qk, self.commitment, self.ema_decay = shared_qk, commitment, ema_decay
        self.deterministic = deterministic
        self.scale = 1.0 / math.sqrt(head_dim)
        width = num_heads * head_dim
        self.query = Dense(d_model, width, use_bias=use_bias, rngs=rngs)
        self.key = None if shared_qk else Dense(d_model, width, use_bias=use_bias, rngs=rngs)
        self.value = Dense(d_model, width, use_bias=use_bias, rngs=rngs)
        self.out = Dense(width, d_model, use_bias=use_bias, rngs=rngs)
        stored = num_clusters if num_clusters is not None else max_clusters
        init = jax.random.normal(rngs.params(), (self.routing_heads, stored, head_dim), jnp.float32)
        self.centroids = Centroids(_normalize(init))

    def clusters_for(self, length: int) -> int:
        """Number of clusters used for a sequence of ``length`` tokens."""
        if self.num_clusters is not None:
            return self.num_clusters
        return int(min(max(round(math.sqrt(length)), 1), self.max_clusters))

    # -- parallel form -----------------------------------------------------------------

    def _qkv(self, x):
        heads = x.shape[:-1] + (self.num_heads, self.head_dim)
        q = self.query(x).reshape(heads)
        k = q if self.key is None else self.key(x).reshape(heads)
        return q, k, self.value(x).reshape(heads)

    def forward(self, x):
        batch, length, _ = x.shape
        q, k, v = self._qkv(x)
        split = self.local_heads
        parts = []
        if self.local_heads:
            parts.append(local_attention(q[:, :, :split], k[:, :, :split], v[:, :, :split],
                                         window=self.window, causal=self.causal, scale=self.scale))
        if self.routing_heads:
            parts.append(self._routing(x, q[:, :, split:], k[:, :, split:], v[:, :, split:]))
        o = jnp.concatenate(parts, axis=2)
        return self.out(o.reshape(batch, length, self.num_heads * self.head_dim))

    def _routing_projection(self, dense: Dense, x, projected):
        """The routing heads' part of ``dense(x)`` in float32, ``(B, L, H_r, d)``.

        Cluster choices are discrete: they are made from a float32 projection so that
        bfloat16 activations change values but not which tokens meet. For float32
        activations this is the slice of ``projected`` (no second matmul).
        """
        if x.dtype == jnp.float32:
            return projected
        columns = slice(self.local_heads * self.head_dim, None)
        y = jnp.matmul(x.astype(jnp.float32), dense.kernel[...][:, columns])
        if dense.bias is not None:
            y = y + expand_to(dense.bias[...][columns], y.ndim)
        return y.reshape(x.shape[:-1] + (self.routing_heads, self.head_dim))

    def _routing(self, x, q, k, v):
        """Routing heads: q, k, v ``(B, L, H_r, d)`` -> ``(B, L, H_r, d)`` (training: sow loss, move centroids)."""
        num = self.clusters_for(q.shape[1])
        centroids = jax.lax.stop_gradient(self.centroids[...][:, :num])
        q_hat = _normalize(self._routing_projection(self.query, x, q))
        q_affinity = _affinity(q_hat, centroids)
        if self.shared_qk:
            k_hat, k_affinity = q_hat, q_affinity
        else:
            k_hat = _normalize(self._routing_projection(self.key, x, k))
            k_affinity = _affinity(k_hat, centroids)
        q_cluster = jnp.argmax(q_affinity, axis=-1)
        if self.causal:
            out = self._causal_routing(q, v, q_cluster)
        else:
            out = self._balanced_routing(q, k, v, q_affinity, k_affinity)
        if self.shared_qk:
            vectors, clusters = q_hat, q_cluster
        else:
            vectors = jnp.concatenate([q_hat, k_hat], axis=1)
            clusters = jnp.concatenate([q_cluster, jnp.argmax(k_affinity, axis=-1)], axis=1)
        self._commit(vectors, clusters, centroids)
        return out

    def _causal_routing(self, qk, v, cluster):
        """Sort by (cluster, position); banded same-cluster attention; unsort."""
        length = qk.shape[1]
        order = jnp.argsort(cluster * length + jnp.arange(length)[None, :, None], axis=1)   # (B, L, H_r)

        def gather(x):
            return jnp.take_along_axis(x, order[..., None], axis=1)

        sorted_qk = gather(qk)
        out = local_attention(sorted_qk, sorted_qk, gather(v), window=self.window, causal=True,
                              segment_ids=jnp.take_along_axis(cluster, order, axis=1), scale=self.scale)
        return jnp.take_along_axis(out, jnp.argsort(order, axis=1)[..., None], axis=1)

    def _balanced_routing(self, q, k, v, q_affinity, k_affinity):
        """Each centroid picks its ``⌈L/k⌉`` nearest queries and keys; scatter-mean back."""
        batch, length, heads, dim = q.shape
        num = q_affinity.shape[-1]
        size = -(-length // num)

        def pick(affinity):  # (B, L, H, k) -> (B, H, k·w) token indices
            _, index = jax.lax.top_k(jnp.transpose(affinity, (0, 2, 3, 1)), size)
            return index.reshape(batch, heads, num * size)

        def gather(x, index):  # (B, L, H, d) -> (B, H, k, w, d)
            picked = jnp.take_along_axis(jnp.swapaxes(x, 1, 2), index[..., None], axis=2)
            return picked.reshape(batch, heads, num, size, dim)

        q_index = pick(q_affinity)
        k_index = q_index if self.shared_qk else pick(k_affinity)
        logits = jnp.einsum("bhcqd,bhckd->bhcqk", gather(q, q_index), gather(k, k_index),
                            preferred_element_type=jnp.float32) * self.scale
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhcqk,bhckd->bhcqd", weights.astype(v.dtype), gather(v, k_index),
                         preferred_element_type=jnp.float32)
        b = jnp.arange(batch)[:, None, None]
        h = jnp.arange(heads)[None, :, None]
        total = jnp.zeros((batch, heads, length, dim), jnp.float32).at[b, h, q_index].add(
            out.reshape(batch, heads, num * size, dim))
        count = jnp.zeros((batch, heads, length), jnp.float32).at[b, h, q_index].add(1.0)
        mean = total / jnp.maximum(count, 1.0)[..., None]
        return jnp.swapaxes(mean, 1, 2).astype(q.dtype)

    def _commit(self, vectors, clusters, centroids):
        """Training mode only: sow the commitment loss and move the used centroids by EMA.

        vectors ``(B, N, H_r, d)`` float32 normalized, clusters ``(B, N, H_r)``, centroids ``(H_r, k, d)``.
        """
        if self.deterministic:
            return
        assigned = centroids[jnp.arange(self.routing_heads)[None, None, :], clusters]
        self.sow(nnx.Intermediate, "aux_loss", self.commitment * jnp.mean(jnp.square(vectors - assigned)))
        num = centroids.shape[1]
        vectors = jax.lax.stop_gradient(vectors)
        members = jax.nn.one_hot(clusters, num, dtype=jnp.float32)                     # (B, N, H_r, k)
        sums = jnp.einsum("bnhk,bnhd->hkd", members, vectors)
        counts = jnp.sum(members, axis=(0, 1))[..., None]                                # (H_r, k, 1)
        moved = self.ema_decay * centroids + (1.0 - self.ema_decay) * sums / jnp.maximum(counts, 1.0)
        updated = jnp.where(counts > 0, moved, centroids)
        self.centroids[...] = jnp.concatenate([updated, self.centroids[...][:, num:]], axis=1)

    # -- recurrent form -----------------------------------------------------------------

    def init_state(self, batch_size: int, length: int | None = None) -> RoutingCache:
        """Empty cache; ``length`` picks ``k(length)`` clusters when ``num_clusters`` is ``None``."""
        if not self.causal:
            return super().init_state(batch_size)
        if length is not None:
            num = self.clusters_for(length)
        else:
            num = self.num_clusters if self.num_clusters is not None else self.max_clusters
        local = (batch_size, self.local_heads, self.window, self.head_dim)
        routed = (batch_size, self.routing_heads, num, self.window, self.head_dim)
        zeros = lambda shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
        return RoutingCache(zeros((batch_size,)), zeros(local), zeros(local), zeros(routed), zeros(routed),
                            zeros(routed[:3]))

    def forward_step(self, x_t, state: RoutingCache):
        batch = x_t.shape[0]
        q, k, v = (a[:, 0] for a in self._qkv(x_t[:, None]))                             # (B, H, d)
        split, window = self.local_heads, self.window
        position = state.position.astype(jnp.int32)
        slots = jnp.arange(window)
        parts = []

        write = (slots[None, :] == (position % window)[:, None])[:, None, :, None]     # (B, 1, W, 1)
        local_keys = jnp.where(write, k[:, :split, None].astype(jnp.float32), state.local_keys)
        local_values = jnp.where(write, v[:, :split, None].astype(jnp.float32), state.local_values)
        if self.local_heads:
            valid = (slots[None, :] <= position[:, None])[:, None, :]                   # (B, 1, W)
            parts.append(_attend_cache(q[:, :split], local_keys, local_values, valid, self.scale))

        cluster_keys, cluster_values = state.cluster_keys, state.cluster_values
        counts = state.cluster_counts.astype(jnp.int32)
        if self.routing_heads:
            num = counts.shape[-1]
            centroids = self.centroids[...][:, :num]
            q_r, k_r, v_r = q[:, split:], k[:, split:], v[:, split:]
            q_hat = _normalize(self._routing_projection(self.query, x_t[:, None], q_r[:, None]))
            cluster = jnp.argmax(_affinity(q_hat, centroids)[:, 0], axis=-1)                    # (B, H_r)
            seen = jnp.take_along_axis(counts, cluster[..., None], axis=2)[..., 0]               # (B, H_r)
            hit = jnp.arange(num)[None, None, :] == cluster[..., None]                           # (B, H_r, k)
            write = hit[..., None] & (slots[None, None, None, :] == (seen % window)[..., None, None])
            write = write[..., None]                                                             # (B, H_r, k, W, 1)
            cluster_keys = jnp.where(write, k_r[:, :, None, None].astype(jnp.float32), cluster_keys)
            cluster_values = jnp.where(write, v_r[:, :, None, None].astype(jnp.float32), cluster_values)
            own = cluster[:, :, None, None, None]

            def own_buffer(buffer):
                return jnp.take_along_axis(buffer, own, axis=2)[:, :, 0]                       # (B, H_r, W, d)

            valid = slots[None, None, :] <= seen[..., None]                                      # (B, H_r, W)
            parts.append(_attend_cache(q_r, own_buffer(cluster_keys), own_buffer(cluster_values),
                                       valid, self.scale))
            counts = counts + hit.astype(jnp.int32)

        o = jnp.concatenate(parts, axis=1)
        y = self.out(o.reshape(batch, self.num_heads * self.head_dim))
        state = RoutingCache((position + 1).astype(jnp.float32), local_keys, local_values,
                             cluster_keys, cluster_values, counts.astype(jnp.float32))
        return y, state


@register("routing_bidirectional", example_options=EXAMPLE_OPTIONS)
class RoutingBidirectional(Routing):
    """Non-causal routing attention: balanced top-w clusters and two-sided local windows."""

    causal = False
