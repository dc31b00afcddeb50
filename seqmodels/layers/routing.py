"""Routing attention: "Efficient Content-Based Sparse Attention with Routing Transformers"
(Roy, Saffar, Vaswani, Grangier, TACL 2021).

Heads are split between *local* heads (sliding-window attention) and *routing* heads,
concatenated and projected: ``y = W_o concat(local_heads, routing_heads)``. Every head
has its own query, value and (for local heads always) key projection. A routing head
clusters its queries and keys with an online spherical k-means and attends only within
a cluster (paper §4):

    r̂ = r / ‖r‖                               routing vectors: unit-norm queries (keys)
    c(r̂) = argmax_c r̂·μ_c                    nearest of the head's unit centroids μ ∈ R^{k×d_h}
    o_t = softmax_{s ∈ S(t)}(q_t·k_s / √d_h) v_s

With ``shared_qk`` (the default of the causal mixer, as in the paper's causal models)
a routing head's keys are its unit-normalized queries, ``k_s = q̂_s``, and a query does
not attend to itself unless it has no other admissible key (the official codes' shared-QK
convention); local heads keep their own keys either way. Cluster choices are discrete,
so they are made in float32 (from a float32 projection when activations are bfloat16):
mixed precision changes values, never which tokens meet.

**Admission: who meets whom.** ``admission`` chooses ``S(t)``:

- ``"content"`` (default of the causal mixer): ``S(t)`` = the ``window`` best keys
  ``s ≤ t`` of the query's cluster, best meaning closest to the cluster's centroid
  (highest ``k̂_s·μ_c``; ties go to the later key). This is the paper's balanced routing
  (each centroid keeps its ``w`` nearest members) restricted to the prefix, which is
  what Google's decoder does by setting future tokens' centroid distances to 1e9: the
  same criterion, never the future. A key's score depends on that key alone
  (centroids are fixed during a forward pass), so ``S(t)`` depends on inputs ``≤ t``
  only: the mixer is strictly causal, and ``step`` (which keeps, per cluster, the
  ``window`` best keys seen so far) equals the parallel form token by token. Unlike
  recency, a crowded cluster cannot push a key out by sheer numbers: a key leaves
  ``S(t)`` only when ``window`` keys closer to the centroid arrive.
- ``"recency"``: the ``window`` most recent keys ``s ≤ t`` of the query's cluster (the
  same algorithm with a constant score). In a cluster that holds most tokens, a key is
  gone after ``window`` more members arrive, whatever its content; kept for comparison.
- ``"paper"`` (the only choice of the bidirectional mixer): the paper's balanced top-w
  over the whole sequence: each centroid takes its ``window`` nearest queries and its
  ``window`` nearest keys, attention runs within each such cluster (causal mixer:
  keys ``s ≤ t`` only), outputs are scattered back and averaged over the clusters that
  picked the token (tokens picked by none get zero from the routing heads). Which keys
  a cluster keeps depends on the whole sequence, so in the causal mixer this form is
  **not** prefix invariant, and its ``step`` (the ``"content"`` cache, i.e. the
  decoder's rule) **differs** from its parallel form; use it for the paper's training
  numbers, not for generation.

**Parallel algorithm of the causal admissions** (``_best_keys``). Cut the sequence into
blocks of ``window`` positions. For every block and cluster, keep the cluster's
``window`` best keys of all *earlier* blocks: a prefix over blocks, computed in
``⌈log₂(L/w)⌉`` doubling rounds, each merging two candidate lists by ``top_k`` (a
running best-``w`` list is associative). A query's ``S(t)`` is then the best ``window``
among that list and the same-cluster keys of its own block up to ``t``: ``2w``
candidates. Ties follow one order everywhere (``top_k`` keeps the lower index among
equals, and candidates are laid out latest first), so the step cache picks the same keys.

Cost per routing head: ``O(L·k·d_h)`` for the assignment, ``O(L·k·log(L/w))`` for the
best-key lists (``O(L log L)`` for ``"paper"``'s top-w), ``O(L·w·d_h)`` for the
attention; no ``L × L`` matrix is ever built. Local heads see ``t − window < s ≤ t``
(causal) or ``|s − t| < window`` (bidirectional).

**Number of clusters.** ``num_clusters`` (default 8, the paper's Wikitext-103 setting of
8 clusters) is fixed at construction: the centroid variable holds exactly that many per
routing head, and calls of every length and the ``step`` cache use them all, so
generation reproduces the parallel forward with default options.

**Non-finite inputs** (causal mixer). A NaN or inf at position ``t`` reaches only the
outputs that give it weight: later positions whose window or ``S(t')`` holds ``t``.
Keys and values no query admits are zeroed before the weighted sum (``0 · NaN`` would
be NaN), and local heads mark exactly the rows whose band holds a non-finite key or value.

**Centroids are not parameters.** They live in a ``Centroids`` variable (an
``nnx.Variable`` subclass, not ``nnx.Param``), so ``nnx.Optimizer(..., wrt=nnx.Param)``
and gradients over ``nnx.Param`` never touch them, and every use is under
``stop_gradient``. They start as random unit vectors or, with ``init_from_data=True``,
from the first training-mode batch: evenly spaced routing
vectors of that batch refined by 10 spherical k-means iterations (assign by dot
product, centroid = normalized sum of its members, an empty cluster keeps its
centroid), done once; a ``Centroids`` flag records it, so a checkpoint carries it. In
training mode (``deterministic=False``, the default; ``model.train()``) each forward
pass then moves the centroids it used, after computing its output, towards the
normalized mean of the routing vectors assigned to them (queries, and keys if not
shared; batch and positions pooled) and renormalizes (spherical k-means):
``μ_c ← normalize(λ μ_c + (1 − λ) normalize(Σ_{c(r̂)=c} r̂))`` with
``λ = ema_decay = 0.999``; a centroid with no assigned vector stays. ``model.eval()``
sets ``deterministic=True`` and freezes them; ``step`` never changes them. The update
is a state mutation: run training-mode calls eagerly or under nnx transforms
(``nnx.jit``, ``nnx.grad``, ``nnx.value_and_grad``), which carry it back to the
module; under a raw ``jax.grad`` of a closure over the module's non-Param state, nnx
refuses the mutation (``TraceContextError``), as it does for ``BatchNorm``.

**Auxiliary loss (training mode).** Each training-mode forward pass sows the
commitment loss ``β · mean((r̂ − sg(μ_{c(r̂)}))²)`` (``β = commitment = 1e-4``; mean
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
per cluster, the ``window`` best keys/values seen so far with their scores and
positions; the token's own key is admitted before it attends, so ``step`` equals the
parallel form (``"content"``, ``"recency"``) token by token.

Remaining differences from the official codes (lucidrains/routing-transformer,
google-research routing_transformer): no learned memory key/values (``num_mem_kv``; a
query with no admissible key gets zero instead); routing heads use no rotary
embedding; the data initialization samples evenly spaced vectors (lucidrains: random
ones) and the EMA mean is renormalized (lucidrains leaves it unnormalized; Google keeps
unnormalized count/sum averages of layer-normed vectors); the causal mixer's default
admission is the prefix rule above rather than the whole-sequence top-w with a causal
mask (``"paper"``); the centroid update runs in the forward pass of a training-mode
call, not in a backward hook.
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

_NORM_EPS = 1e-12
_INIT_ITERATIONS = 10
ADMISSIONS = ("content", "recency", "paper")


class Centroids(nnx.Variable):
    """k-means state of the routing heads (centroids, data-initialized flag): updated by EMA, never by gradients."""


class RoutingCache(NamedTuple):
    """Decoding cache of the causal routing mixer (all float32).

    position: ``(B,)`` tokens seen so far (an exact count up to 2^24).
    local_keys, local_values: ``(B, local_heads, window, head_dim)`` ring buffer, slot ``t mod window``.
    cluster_keys, cluster_values: ``(B, routing_heads, k, window, head_dim)``: per cluster, its
      ``window`` admitted keys/values.
    cluster_scores, cluster_positions: ``(B, routing_heads, k, window)``: their admission
      scores and positions (empty slots: score ``-inf``, position ``-1``).
    """

    position: jax.Array
    local_keys: jax.Array
    local_values: jax.Array
    cluster_keys: jax.Array
    cluster_values: jax.Array
    cluster_scores: jax.Array
    cluster_positions: jax.Array


def _unit(x: jax.Array) -> jax.Array:
    """``x / ‖x‖`` over the last axis, in float32."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + _NORM_EPS)


def _spherical_means(vectors: jax.Array, clusters: jax.Array, centroids: jax.Array):
    """Normalized member sums: vectors ``(B, N, H, d)``, clusters ``(B, N, H)``, centroids ``(H, k, d)``.

    Returns ``(means, counts)``: ``(H, k, d)`` unit means (a cluster with no member keeps
    its centroid) and ``(H, k, 1)`` member counts.
    """
    members = jax.nn.one_hot(clusters, centroids.shape[1], dtype=jnp.float32)          # (B, N, H, k)
    sums = jnp.einsum("bnhk,bnhd->hkd", members, vectors)
    counts = jnp.sum(members, axis=(0, 1))[..., None]
    return jnp.where(counts > 0, _unit(sums), centroids), counts


def _kmeans_from_data(vectors: jax.Array, num_clusters: int) -> jax.Array:
    """Spherical k-means on unit vectors ``(B, N, H, d)``: evenly spaced seeds, 10 iterations -> ``(H, k, d)``."""
    batch, count, heads, dim = vectors.shape
    pooled = vectors.reshape(1, batch * count, heads, dim)
    seeds = (jnp.arange(num_clusters) * (batch * count)) // num_clusters
    centroids = jnp.swapaxes(pooled[0, seeds], 0, 1)                                    # (H, k, d)
    for _ in range(_INIT_ITERATIONS):
        clusters = jnp.argmax(jnp.einsum("bnhd,hkd->bnhk", pooled, centroids), axis=-1)
        centroids, _ = _spherical_means(pooled, clusters, centroids)
    return centroids


def _mask_self(admitted: jax.Array, is_self: jax.Array) -> jax.Array:
    """Drop the query's own key from ``admitted`` (last axis: keys) unless it is the only one."""
    others = admitted & ~is_self
    return others | (admitted & ~jnp.any(others, axis=-1, keepdims=True))


def _merge_best(scores_a, positions_a, scores_b, positions_b, window: int):
    """The ``window`` best of two candidate lists (last axis); ``a`` holds the later positions.

    Best = highest score; ``top_k`` keeps the lower index among equal scores, so with the
    later list first (and each list latest-first among ties) ties go to the later key.
    """
    scores = jnp.concatenate([scores_a, scores_b], axis=-1)
    positions = jnp.concatenate([positions_a, positions_b], axis=-1)
    best, index = jax.lax.top_k(scores, window)
    return best, jnp.take_along_axis(positions, index, axis=-1)


def _best_keys(key_score, key_cluster, query_cluster, num_clusters: int, window: int) -> jax.Array:
    """Positions of every query's admissible keys under the prefix best-``window`` rule.

    key_score ``(B, L, H)`` float32, key_cluster and query_cluster ``(B, L, H)`` int.
    Returns ``(B, L, H, window)`` int32: for query ``t``, the ``window`` keys ``s ≤ t``
    with ``key_cluster[s] == query_cluster[t]`` of highest score (ties: later ``s``),
    ``-1`` in unused slots.
    """
    batch, length, heads = key_score.shape
    blocks = -(-length // window)
    pad = blocks * window - length

    def to_blocks(x, fill):  # (B, L, H) -> (B, H, n, w)
        x = jnp.pad(jnp.swapaxes(x, 1, 2), [(0, 0), (0, 0), (0, pad)], constant_values=fill)
        return x.reshape(x.shape[:2] + (blocks, window))

    score = to_blocks(key_score, -jnp.inf)
    cluster = to_blocks(key_cluster, -1)
    position = to_blocks(jnp.arange(length)[None, :, None], -1)                           # (1, 1, n, w)
    # per block and cluster its members, latest first: (B, H, n, k, w)
    member = cluster[:, :, :, None, ::-1] == jnp.arange(num_clusters)[None, None, None, :, None]
    block_scores = jnp.where(member, score[:, :, :, None, ::-1], -jnp.inf)
    block_positions = jnp.where(member, position[:, :, :, None, ::-1], -1)

    def shifted(x, by, fill):  # x[:, :, b - by] along the block axis, ``fill`` before block 0
        return jnp.pad(x, [(0, 0), (0, 0), (by, 0), (0, 0), (0, 0)], constant_values=fill)[:, :, :blocks]

    # inclusive prefix over blocks by doubling, then shift: lists of all earlier blocks
    scores, positions, by = block_scores, block_positions, 1
    while by < blocks:
        scores, positions = _merge_best(scores, positions, shifted(scores, by, -jnp.inf),
                                        shifted(positions, by, -1), window)
        by *= 2
    earlier_scores, earlier_positions = shifted(scores, 1, -jnp.inf), shifted(positions, 1, -1)

    # each query: its cluster's list of earlier blocks + its own block's keys up to itself
    q_cluster = to_blocks(query_cluster, -1)                                         # (B, H, n, w)
    row = jnp.arange(blocks)[None, None, :, None] * num_clusters + jnp.maximum(q_cluster, 0)   # (B, H, n, w)

    def per_query(x):  # (B, H, n, k, w) -> (B, H, n, w queries, w)
        flat = x.reshape(batch, heads, blocks * num_clusters, window)
        picked = jnp.take_along_axis(flat, row.reshape(batch, heads, -1)[..., None], axis=2)
        return picked.reshape(batch, heads, blocks, window, window)

    own = (cluster[:, :, :, None, ::-1] == q_cluster[..., None]) & (
        position[:, :, :, None, ::-1] <= position[..., None])                       # (B, H, n, wq, wk)
    own_scores = jnp.where(own, score[:, :, :, None, ::-1], -jnp.inf)
    own_positions = jnp.where(own, position[:, :, :, None, ::-1], -1)
    _, best = _merge_best(own_scores, own_positions, per_query(earlier_scores),
                          per_query(earlier_positions), window)
    best = best.reshape(batch, heads, blocks * window, window)[:, :, :length]
    return jnp.swapaxes(best, 1, 2).astype(jnp.int32)


def _gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """``x`` ``(B, L, H, d)`` at ``positions`` ``(B, L, H, w)`` (``-1``: zeros) -> ``(B, L, H, w, d)``."""
    batch, length, heads, window = positions.shape
    flat = jnp.swapaxes(jnp.maximum(positions, 0), 1, 2).reshape(batch, heads, length * window, 1)
    picked = jnp.take_along_axis(jnp.swapaxes(x, 1, 2), flat, axis=2)
    picked = jnp.swapaxes(picked.reshape(batch, heads, length, window, -1), 1, 2)
    return jnp.where((positions >= 0)[..., None], picked, 0)


def _attend(q, keys, values, admitted, scale: float):
    """Softmax attention over per-query keys; keys/values no query admits are zeroed first.

    q ``(..., d)``, keys and values ``(..., W, d)``, admitted ``(..., W)``; zeroing keeps
    ``0 · NaN`` of an inadmissible non-finite key or value out of the result.
    """
    keys = jnp.where(admitted[..., None], keys, 0).astype(q.dtype)
    values = jnp.where(admitted[..., None], values, 0).astype(q.dtype)
    logits = jnp.einsum("...d,...wd->...w", q, keys, preferred_element_type=jnp.float32) * scale
    weights = masked_softmax(logits, admitted)
    out = jnp.einsum("...w,...wd->...d", weights.astype(q.dtype), values, preferred_element_type=jnp.float32)
    return out.astype(q.dtype)


def _nonfinite_rows(bad_key: jax.Array, window: int) -> jax.Array:
    """``(B, L, H)``: rows ``t`` of a causal band ``t − window < s ≤ t`` holding a ``bad_key[s]``."""
    count = jnp.cumsum(bad_key.astype(jnp.int32), axis=1)
    before = jnp.pad(count, [(0, 0), (window, 0), (0, 0)])[:, :count.shape[1]]
    return count - before > 0


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
      window: keys per query: the local band, and the admitted keys per cluster.
      num_clusters: k-means clusters ``k`` per routing head, fixed at construction.
      shared_qk: routing heads' keys are their unit-normalized queries (default: ``True``
        for the causal mixer, ``False`` for the bidirectional one); local heads always
        have their own keys.
      admission: ``"content"``, ``"recency"`` or ``"paper"`` (module docstring; default
        ``"content"`` for the causal mixer, ``"paper"``, the only choice, for the bidirectional one).
      init_from_data: initialize the centroids from the first training-mode batch by k-means.
      commitment: weight ``β`` of the sown commitment loss.
      ema_decay: ``λ`` of the centroid moving average.
      deterministic: freeze the centroids (set by ``model.eval()`` / ``model.train()``).
    """

    option_choices = {"admission": ADMISSIONS}
    option_ranges = {"local_heads": NON_NEGATIVE, "commitment": NON_NEGATIVE, "ema_decay": Interval(0, 1)}
    causal = True
    # routing sorts and clusters the whole sequence: no sequence-parallel form
    supports_sequence_parallel = False

    def __init__(self, d_model: int, *, num_heads: int = 4, head_dim: int | None = None,
                 local_heads: int | None = None, window: int = 64, num_clusters: int = 8,
                 shared_qk: bool | None = None, admission: str | None = None, init_from_data: bool = False,
                 commitment: float = 1e-4, ema_decay: float = 0.999, deterministic: bool = False,
                 use_bias: bool = True, rngs: nnx.Rngs):
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads} "
                                 "(or pass head_dim)")
            head_dim = d_model // num_heads
        local_heads = num_heads // 2 if local_heads is None else local_heads
        if not 0 <= local_heads <= num_heads:
            raise ValueError(f"local_heads must be in [0, num_heads={num_heads}]; got {local_heads}")
        admission = ("content" if self.causal else "paper") if admission is None else admission
        allowed = ADMISSIONS if self.causal else ("paper",)
        if admission not in allowed:
            raise ValueError(f"admission must be one of {allowed} for {type(self).__name__}; got {admission!r}")
        shared_qk = self.causal if shared_qk is None else shared_qk
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, head_dim
        self.local_heads, self.routing_heads = local_heads, num_heads - local_heads
        self.window, self.num_clusters, self.admission = window, num_clusters, admission
        self.shared_qk, self.commitment, self.ema_decay = shared_qk, commitment, ema_decay
        self.init_from_data, self.deterministic = init_from_data, deterministic
        self.scale = 1.0 / math.sqrt(head_dim)
        key_heads = local_heads if shared_qk else num_heads
        self.query = Dense(d_model, num_heads * head_dim, use_bias=use_bias, rngs=rngs)
        self.key = Dense(d_model, key_heads * head_dim, use_bias=use_bias, rngs=rngs) if key_heads else None
        self.value = Dense(d_model, num_heads * head_dim, use_bias=use_bias, rngs=rngs)
        self.out = Dense(num_heads * head_dim, d_model, use_bias=use_bias, rngs=rngs)
        if self.routing_heads:  # (a checkpoint cannot hold an empty array)
            init = jax.random.normal(rngs.params(), (self.routing_heads, num_clusters, head_dim), jnp.float32)
            self.centroids = Centroids(_unit(init))
            if init_from_data:
                self.centroids_from_data = Centroids(jnp.asarray(False))

    # -- parallel form -----------------------------------------------------------------

    def _qkv(self, x):
        """q, v ``(..., H, d)``; k ``(..., H_k, d)``: local heads' keys, then routing heads' if not shared."""
        def heads(y):
            return y.reshape(y.shape[:-1] + (-1, self.head_dim))

        k = None if self.key is None else heads(self.key(x))
        return heads(self.query(x)), k, heads(self.value(x))

    def forward(self, x):
        batch, length, _ = x.shape
        q, k, v = self._qkv(x)
        split = self.local_heads
        parts = []
        if self.local_heads:
            parts.append(self._local(q[..., :split, :], k[..., :split, :], v[..., :split, :]))
        if self.routing_heads:
            k_r = None if self.shared_qk else k[..., split:, :]
            parts.append(self._routing(x, q[..., split:, :], k_r, v[..., split:, :]))
        o = jnp.concatenate(parts, axis=2)
        return self.out(o.reshape(batch, length, self.num_heads * self.head_dim))

    def _local(self, q, k, v):
        """Sliding-window heads; causal: a non-finite key/value reaches only the rows whose band holds it."""
        if not self.causal:
            return local_attention(q, k, v, window=self.window, causal=False, scale=self.scale)
        bad = ~jnp.all(jnp.isfinite(k) & jnp.isfinite(v), axis=-1)                      # (B, L, H)
        out = local_attention(q, jnp.where(bad[..., None], 0, k), jnp.where(bad[..., None], 0, v),
                              window=self.window, causal=True, scale=self.scale)
        return jnp.where(_nonfinite_rows(bad, self.window)[..., None], jnp.nan, out).astype(q.dtype)

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
        """Routing heads: q, v ``(B, L, H_r, d)``, k the same or ``None`` (shared) -> ``(B, L, H_r, d)``."""
        q_hat = _unit(self._routing_projection(self.query, x, q))
        if self.shared_qk:
            k, k_hat = q_hat.astype(q.dtype), q_hat
        else:
            k_hat = _unit(self._routing_projection(self.key, x, k))
        vectors = q_hat if self.shared_qk else jnp.concatenate([q_hat, k_hat], axis=1)
        centroids = self._centroids(vectors)
        q_affinity = jnp.einsum("blhd,hkd->blhk", q_hat, centroids)
        k_affinity = q_affinity if self.shared_qk else jnp.einsum("blhd,hkd->blhk", k_hat, centroids)
        q_cluster, k_cluster = jnp.argmax(q_affinity, axis=-1), jnp.argmax(k_affinity, axis=-1)
        if self.admission == "paper":
            out = self._balanced_routing(q, k, v, q_affinity, k_affinity)
        else:
            positions, admitted = self._admitted(q_affinity, k_affinity)
            out = _attend(q, _gather_positions(k, positions), _gather_positions(v, positions), admitted,
                          self.scale)
        clusters = q_cluster if self.shared_qk else jnp.concatenate([q_cluster, k_cluster], axis=1)
        self._commit(vectors, clusters, centroids)
        return out

    def _admitted(self, q_affinity, k_affinity):
        """Causal prefix admission: ``(positions, admitted)``, both ``(B, L, H_r, window)``."""
        q_cluster, k_cluster = jnp.argmax(q_affinity, axis=-1), jnp.argmax(k_affinity, axis=-1)
        score = jnp.max(k_affinity, axis=-1) if self.admission == "content" else jnp.zeros(k_cluster.shape)
        positions = _best_keys(score, k_cluster, q_cluster, self.num_clusters, self.window)
        admitted = positions >= 0
        if self.shared_qk:
            is_self = positions == jnp.arange(positions.shape[1])[None, :, None, None]
            admitted = _mask_self(admitted, is_self)
        return positions, admitted

    def admitted_keys(self, x: jax.Array) -> jax.Array:
        """Who meets whom: the key positions each routing head admits for each query of ``x``.

        ``(B, L, routing_heads, window)`` int32 positions into ``x``'s sequence, ``-1`` where
        a slot is empty, under the present centroids (no update). A diagnostic for causal
        mixers with ``admission="content"`` or ``"recency"``, e.g. the share of questions
        whose fact a head can reach (``benchmarks/routing_recall.py``, notebook 09).
        """
        if not self.causal or self.admission == "paper" or not self.routing_heads:
            raise ValueError(f"admitted_keys: needs a causal routing mixer with routing heads and admission "
                             f"'content' or 'recency'; got causal={self.causal}, admission={self.admission!r}, "
                             f"routing_heads={self.routing_heads}")
        q, k, _ = self._qkv(x)
        split = self.local_heads
        q_hat = _unit(self._routing_projection(self.query, x, q[..., split:, :]))
        k_hat = q_hat if self.shared_qk else _unit(self._routing_projection(self.key, x, k[..., split:, :]))
        centroids = jax.lax.stop_gradient(self.centroids[...])
        q_affinity = jnp.einsum("blhd,hkd->blhk", q_hat, centroids)
        k_affinity = q_affinity if self.shared_qk else jnp.einsum("blhd,hkd->blhk", k_hat, centroids)
        positions, admitted = self._admitted(q_affinity, k_affinity)
        return jnp.where(admitted, positions, -1).astype(jnp.int32)

    def _centroids(self, vectors):
        """The centroids of this call; training mode with ``init_from_data``: k-means on the first batch."""
        centroids = self.centroids[...]
        if self.init_from_data and not self.deterministic:
            fresh = jax.lax.stop_gradient(vectors)
            centroids = jax.lax.cond(self.centroids_from_data[...], lambda: centroids,
                                     lambda: _kmeans_from_data(fresh, self.num_clusters))
            self.centroids[...] = centroids
            self.centroids_from_data[...] = jnp.asarray(True)
        return jax.lax.stop_gradient(centroids)

    def _balanced_routing(self, q, k, v, q_affinity, k_affinity):
        """The paper's top-w: each centroid picks its ``window`` nearest queries and keys; scatter-mean back."""
        batch, length, heads, dim = q.shape
        num = q_affinity.shape[-1]
        size = min(self.window, length)

        def pick(affinity):  # (B, L, H, k) -> (B, H, k, w) token positions
            _, index = jax.lax.top_k(jnp.transpose(affinity, (0, 2, 3, 1)), size)
            return index

        def gather(x, index):  # (B, L, H, d) -> (B, H, k, w, d)
            flat = index.reshape(batch, heads, num * size, 1)
            return jnp.take_along_axis(jnp.swapaxes(x, 1, 2), flat, axis=2).reshape(batch, heads, num, size, dim)

        q_index = pick(q_affinity)
        k_index = q_index if self.shared_qk else pick(k_affinity)
        admitted = jnp.ones((batch, heads, num, size, size), bool)
        if self.causal:
            admitted = k_index[..., None, :] <= q_index[..., :, None]
        if self.shared_qk:
            admitted = _mask_self(admitted, k_index[..., None, :] == q_index[..., :, None])
        out = _attend(gather(q, q_index), gather(k, k_index)[..., None, :, :], gather(v, k_index)[..., None, :, :],
                      admitted, self.scale)                                              # (B, H, k, w, d)
        b = jnp.arange(batch)[:, None, None]
        h = jnp.arange(heads)[None, :, None]
        flat = q_index.reshape(batch, heads, num * size)
        total = jnp.zeros((batch, heads, length, dim), jnp.float32).at[b, h, flat].add(
            out.reshape(batch, heads, num * size, dim).astype(jnp.float32))
        count = jnp.zeros((batch, heads, length), jnp.float32).at[b, h, flat].add(1.0)
        mean = total / jnp.maximum(count, 1.0)[..., None]
        return jnp.swapaxes(mean, 1, 2).astype(q.dtype)

    def _commit(self, vectors, clusters, centroids):
        """Training mode only: sow the commitment loss and move the centroids by spherical EMA.

        vectors ``(B, N, H_r, d)`` float32 unit, clusters ``(B, N, H_r)``, centroids ``(H_r, k, d)``.
        """
        if self.deterministic:
            return
        assigned = centroids[jnp.arange(self.routing_heads)[None, None, :], clusters]
        self.sow(nnx.Intermediate, "aux_loss", self.commitment * jnp.mean(jnp.square(vectors - assigned)))
        means, counts = _spherical_means(jax.lax.stop_gradient(vectors), clusters, centroids)
        moved = _unit(self.ema_decay * centroids + (1.0 - self.ema_decay) * means)
        self.centroids[...] = jnp.where(counts > 0, moved, centroids)

    # -- recurrent form -----------------------------------------------------------------

    def init_state(self, batch_size: int) -> RoutingCache:
        """Empty cache over the layer's ``num_clusters`` clusters."""
        if not self.causal:
            return super().init_state(batch_size)
        local = (batch_size, self.local_heads, self.window, self.head_dim)
        routed = (batch_size, self.routing_heads, self.num_clusters, self.window)
        zeros = lambda shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
        return RoutingCache(zeros((batch_size,)), zeros(local), zeros(local), zeros(routed + (self.head_dim,)),
                            zeros(routed + (self.head_dim,)), jnp.full(routed, -jnp.inf, jnp.float32),
                            jnp.full(routed, -1.0, jnp.float32))

    def forward_step(self, x_t, state: RoutingCache):
        batch = x_t.shape[0]
        q, k, v = (None if a is None else a[:, 0] for a in self._qkv(x_t[:, None]))      # (B, H, d)
        split, window = self.local_heads, self.window
        position = state.position.astype(jnp.int32)
        slots = jnp.arange(window)
        parts = []

        local_keys, local_values = state.local_keys, state.local_values
        if self.local_heads:
            write = (slots[None, :] == (position % window)[:, None])[:, None, :, None]     # (B, 1, W, 1)
            local_keys = jnp.where(write, k[:, :split, None].astype(jnp.float32), local_keys)
            local_values = jnp.where(write, v[:, :split, None].astype(jnp.float32), local_values)
            valid = jnp.broadcast_to((slots[None, :] <= position[:, None])[:, None, :], local_keys.shape[:3])
            parts.append(_attend(q[:, :split], local_keys, local_values, valid, self.scale))

        routed = state[3:]
        if self.routing_heads:
            y_r, routed = self._routing_step(x_t, q[:, split:], None if self.shared_qk else k[:, split:],
                                             v[:, split:], position, routed)
            parts.append(y_r)

        o = jnp.concatenate(parts, axis=1)
        y = self.out(o.reshape(batch, self.num_heads * self.head_dim))
        state = RoutingCache((position + 1).astype(jnp.float32), local_keys, local_values, *routed)
        return y, state

    def _routing_step(self, x_t, q, k, v, position, routed):
        """Admit the token's key into its cluster's best-``window`` list, then attend to the query's cluster."""
        keys, values, scores, positions = routed
        q_hat = _unit(self._routing_projection(self.query, x_t[:, None], q[:, None]))[:, 0]   # (B, H_r, d)
        if self.shared_qk:
            k, k_hat = q_hat.astype(q.dtype), q_hat
        else:
            k_hat = _unit(self._routing_projection(self.key, x_t[:, None], k[:, None]))[:, 0]
        centroids = self.centroids[...]
        q_cluster = jnp.argmax(jnp.einsum("bhd,hkd->bhk", q_hat, centroids), axis=-1)         # (B, H_r)
        k_affinity = jnp.einsum("bhd,hkd->bhk", k_hat, centroids)
        k_cluster = jnp.argmax(k_affinity, axis=-1)
        score = jnp.max(k_affinity, axis=-1) if self.admission != "recency" else jnp.zeros(k_cluster.shape)

        def of_cluster(buffer, cluster):  # (B, H_r, k, W, ...) -> (B, H_r, W, ...)
            index = cluster.reshape(cluster.shape + (1,) * (buffer.ndim - 2))
            return jnp.take_along_axis(buffer, index, axis=2)[:, :, 0]

        # the worst of (the cluster's list + the new key) drops out: lowest score, then earliest
        now = jnp.broadcast_to(position[:, None].astype(jnp.float32), score.shape)
        candidate_scores = jnp.concatenate([score[..., None], of_cluster(scores, k_cluster)], axis=-1)
        candidate_positions = jnp.concatenate([now[..., None], of_cluster(positions, k_cluster)], axis=-1)
        lowest = jnp.min(candidate_scores, axis=-1, keepdims=True)
        worst = jnp.argmin(jnp.where(candidate_scores == lowest, candidate_positions, jnp.inf), axis=-1)
        write = ((jnp.arange(self.num_clusters)[None, None, :] == k_cluster[..., None])[..., None]
                 & (jnp.arange(self.window)[None, None, None, :] == (worst - 1)[..., None, None]))             # (B, H_r, k, W)
        keys = jnp.where(write[..., None], k[:, :, None, None].astype(jnp.float32), keys)
        values = jnp.where(write[..., None], v[:, :, None, None].astype(jnp.float32), values)
        scores = jnp.where(write, score[..., None, None], scores)
        positions = jnp.where(write, now[..., None, None], positions)

        own_positions = of_cluster(positions, q_cluster)
        admitted = own_positions >= 0
        if self.shared_qk:
            admitted = _mask_self(admitted, own_positions == now[..., None])
        out = _attend(q, of_cluster(keys, q_cluster), of_cluster(values, q_cluster), admitted, self.scale)
        return out, (keys, values, scores, positions)


@register("routing_bidirectional", example_options=EXAMPLE_OPTIONS)
class RoutingBidirectional(Routing):
    """Non-causal routing attention: the paper's balanced top-w clusters and two-sided local windows."""

    causal = False
