"""Routing attention against explicit dense attention, its cache, and its online k-means.

The references below build the full (L × L) masks on purpose: they say in the plainest
form which keys each query may see, which the mixer computes without such a matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seqmodels.layers import routing
from seqmodels.layers.routing import Centroids, Routing, RoutingBidirectional

D_MODEL, NUM_HEADS, HEAD_DIM = 24, 4, 6


@nnx.jit
def call(mixer, x):
    return mixer(x)


@nnx.jit
def call_and_capture(mixer, x):
    return nnx.capture(mixer, nnx.Intermediate)(x)


def inputs(length, *, batch=2, seed=1, dtype=jnp.float32):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, length, D_MODEL), dtype)


def heads(mixer, x):
    """q, k, v as ``(B, L, H, d)`` from the mixer's own projections."""
    shape = x.shape[:-1] + (mixer.num_heads, mixer.head_dim)
    q = mixer.query(x).reshape(shape)
    k = q if mixer.key is None else mixer.key(x).reshape(shape)
    return q, k, mixer.value(x).reshape(shape)


def dense_attention(mixer, x, mask):
    """Softmax attention of every head under an explicit boolean mask ``(B, H, t, s)``."""
    q, k, v = heads(mixer, x)
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(mixer.head_dim)
    weights = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)
    o = jnp.einsum("bhts,bshd->bthd", weights, v)
    return o


def project(mixer, o):
    batch, length = o.shape[:2]
    return mixer.out(o.reshape(batch, length, mixer.num_heads * mixer.head_dim))


@nnx.jit
def masked_reference(mixer, x, mask):
    return project(mixer, dense_attention(mixer, x, mask))


def clusters(mixer, x, which="query"):
    """Nearest-centroid cluster of every routing head's normalized query (or key): ``(B, L, H_r)``."""
    q, k, _ = heads(mixer, x)
    vectors = routing._normalize((q if which == "query" else k)[:, :, mixer.local_heads:])
    centroids = mixer.centroids[...][:, :mixer.clusters_for(x.shape[1])]
    distance = jnp.sum(jnp.square(vectors[:, :, :, None] - centroids[None, None]), axis=-1)
    return jnp.argmin(distance, axis=-1)


@nnx.jit
def strict_causal_reference(mixer, x):
    """Local heads: ``t - window < s ≤ t``; routing heads: the ``window`` latest same-cluster ``s ≤ t``."""
    length, window = x.shape[1], mixer.window
    t = jnp.arange(length)[:, None]
    s = jnp.arange(length)[None, :]
    local = jnp.broadcast_to((s <= t) & (t - s < window), (x.shape[0], mixer.local_heads, length, length))
    c = jnp.swapaxes(clusters(mixer, x), 1, 2)                                  # (B, H_r, L)
    members = jax.nn.one_hot(c, mixer.clusters_for(length), dtype=jnp.int32)     # (B, H_r, L, k)
    rank = jnp.sum(jnp.cumsum(members, axis=2) * members, axis=-1)               # index within own cluster
    same = c[..., :, None] == c[..., None, :]
    recent = rank[..., :, None] - rank[..., None, :] < window
    routed = same & (s <= t)[None, None] & recent
    return project(mixer, dense_attention(mixer, x, jnp.concatenate([local, routed], axis=1)))


@nnx.jit
def balanced_reference(mixer, x):
    """Local heads: ``|s - t| < window``; routing heads: mean over the clusters whose top-w holds ``t``."""
    length, window = x.shape[1], mixer.window
    num = mixer.clusters_for(length)
    size = -(-length // num)
    t = jnp.arange(length)[:, None]
    s = jnp.arange(length)[None, :]
    local_mask = jnp.broadcast_to(jnp.abs(t - s) < window, (x.shape[0], mixer.num_heads, length, length))
    local = dense_attention(mixer, x, local_mask)[:, :, :mixer.local_heads]

    def membership(which):  # (B, H_r, k, L): token is among the cluster's w nearest
        q, k, _ = heads(mixer, x)
        vectors = routing._normalize((q if which == "query" else k)[:, :, mixer.local_heads:])
        centroids = mixer.centroids[...][:, :num]
        distance = jnp.sum(jnp.square(vectors[:, :, :, None] - centroids[None, None]), axis=-1)
        _, index = jax.lax.top_k(-jnp.transpose(distance, (0, 2, 3, 1)), size)
        return jnp.sum(jax.nn.one_hot(index, length, dtype=jnp.int32), axis=-2) > 0

    in_q, in_k = membership("query"), membership("key")
    per_cluster = []
    for c in range(num):
        mask = jnp.broadcast_to(in_k[:, :, c, None, :], in_k.shape[:2] + (length, length))
        full = jnp.concatenate([local_mask[:, :mixer.local_heads], mask], axis=1)
        per_cluster.append(dense_attention(mixer, x, full)[:, :, mixer.local_heads:])
    stacked = jnp.stack(per_cluster, axis=2)                                      # (B, L, k, H_r, d)
    pick = jnp.transpose(in_q, (0, 3, 2, 1)).astype(jnp.float32)[..., None]       # (B, L, k, H_r, 1)
    routed = jnp.sum(stacked * pick, axis=2) / jnp.maximum(jnp.sum(pick, axis=2), 1.0)
    return project(mixer, jnp.concatenate([local, routed], axis=2))


def run_steps(mixer, x, state):
    step = nnx.jit(lambda m, x_t, st: m.step(x_t, st))
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = step(mixer, x[:, t], state)
        outputs.append(y_t)
    return jnp.stack(outputs, axis=1), state


# -- equality with full attention ---------------------------------------------------------

@pytest.mark.parametrize("local_heads", [0, 2])
def test_one_cluster_and_long_window_is_full_causal_attention(local_heads):
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, local_heads=local_heads, window=64, num_clusters=1,
                    deterministic=True, rngs=nnx.Rngs(0))
    x = inputs(50)
    causal = jnp.tril(jnp.ones((50, 50), bool))[None, None]
    expected = masked_reference(mixer, x, causal)
    np.testing.assert_allclose(call(mixer, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("local_heads", [0, 2])
def test_one_cluster_bidirectional_is_full_attention(local_heads):
    mixer = RoutingBidirectional(D_MODEL, num_heads=NUM_HEADS, local_heads=local_heads, window=64,
                                 num_clusters=1, deterministic=True, rngs=nnx.Rngs(0))
    assert mixer.key is not None, "bidirectional default: separate query and key"
    x = inputs(50)
    expected = masked_reference(mixer, x, jnp.ones((1, 1, 50, 50), bool))
    np.testing.assert_allclose(call(mixer, x), expected, rtol=1e-5, atol=1e-5)


# -- equality with explicit sparse masks --------------------------------------------------

@pytest.mark.parametrize("num_clusters,window", [(3, 4), (None, 5)])
def test_causal_routing_equals_explicit_strict_mask(num_clusters, window):
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=window, num_clusters=num_clusters,
                    deterministic=True, rngs=nnx.Rngs(2))
    x = inputs(45)
    c = clusters(mixer, x)
    assert len(np.unique(np.asarray(c))) > 1, "the test needs several clusters in use"
    np.testing.assert_allclose(call(mixer, x), strict_causal_reference(mixer, x), rtol=1e-5, atol=1e-5)


def test_balanced_routing_equals_explicit_clusters():
    mixer = RoutingBidirectional(D_MODEL, num_heads=NUM_HEADS, window=6, num_clusters=4,
                                 deterministic=True, rngs=nnx.Rngs(3))
    x = inputs(30)
    np.testing.assert_allclose(call(mixer, x), balanced_reference(mixer, x), rtol=1e-5, atol=1e-5)


def test_l_by_l_matrix_is_never_built():
    length = 301
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=8, num_clusters=5, deterministic=True,
                    rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(mixer, nnx.Param, ...)

    def loss(params, x):
        return jnp.sum(nnx.merge(graphdef, params, rest)(x))

    shapes = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            shapes.extend(v.aval.shape for v in eqn.outvars if hasattr(v.aval, "shape"))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(jax.grad(loss))(params, inputs(length, batch=1)).jaxpr)
    assert shapes and not [s for s in shapes if sum(d >= length for d in s) >= 2]


# -- strict causality and the cache --------------------------------------------------------

def test_future_tokens_never_change_the_past():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=3, num_clusters=2, deterministic=True,
                    rngs=nnx.Rngs(0))
    x = inputs(60)
    y = call(mixer, x)
    for t in (1, 17, 41):
        x2 = x.at[:, t:].set(inputs(60, seed=t)[:, t:])
        np.testing.assert_allclose(call(mixer, x2)[:, :t], y[:, :t], rtol=0, atol=1e-6)


def test_step_with_clusters_from_length_equals_parallel():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, rngs=nnx.Rngs(0), deterministic=True)
    x = inputs(40)
    state = mixer.init_state(2, length=40)
    assert state.cluster_counts.shape == (2, 2, mixer.clusters_for(40)) == (2, 2, 6)
    y_steps, final = run_steps(mixer, x, state)
    np.testing.assert_allclose(y_steps, call(mixer, x), rtol=0, atol=1e-5)
    assert jax.tree.map(jnp.shape, final) == jax.tree.map(jnp.shape, state)
    assert float(jnp.sum(final.cluster_counts)) == 2 * 2 * 40


def test_step_never_moves_centroids_even_in_training_mode():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, rngs=nnx.Rngs(0))
    before = mixer.centroids[...]
    run_steps(mixer, inputs(5), mixer.init_state(2))
    np.testing.assert_array_equal(mixer.centroids[...], before)


# -- the online k-means ------------------------------------------------------------------

def test_centroids_move_by_ema_in_training_mode_only():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, rngs=nnx.Rngs(0))
    x = inputs(33)
    before = mixer.centroids[...]
    mixer.eval()
    assert mixer.deterministic
    y_eval = call(mixer, x)
    np.testing.assert_array_equal(mixer.centroids[...], before)
    assert not call_and_capture(mixer, x)[1], "nothing is sown in eval mode"

    mixer.train()
    y_train, _ = call_and_capture(mixer, x)
    np.testing.assert_array_equal(y_train, y_eval)      # the update follows the output
    q, _, _ = heads(mixer, x)
    vectors = routing._normalize(q[:, :, mixer.local_heads:])
    members = jax.nn.one_hot(clusters(mixer, x), 3)                                  # (B, L, H_r, k)
    counts = jnp.sum(members, axis=(0, 1))[..., None]
    means = jnp.einsum("blhk,blhd->hkd", members, vectors) / jnp.maximum(counts, 1.0)
    expected = jnp.where(counts > 0, 0.999 * before + 0.001 * means, before)
    assert float(jnp.max(jnp.abs(mixer.centroids[...] - before))) > 1e-5
    np.testing.assert_allclose(mixer.centroids[...], expected, rtol=1e-6, atol=1e-6)


def test_centroids_are_not_parameters_and_get_no_gradient():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, rngs=nnx.Rngs(0))
    assert isinstance(mixer.centroids, Centroids) and not isinstance(mixer.centroids, nnx.Param)
    assert "centroids" not in nnx.state(mixer, nnx.Param)
    x = inputs(21)

    def loss(model):
        y, intermediates = nnx.capture(model, nnx.Intermediate)(x)
        return jnp.mean(jnp.square(y)) + sum(jax.tree.leaves(intermediates))

    mixer.eval()
    before = mixer.centroids[...]
    grads = nnx.jit(nnx.grad(loss))(mixer)
    assert "centroids" not in grads
    np.testing.assert_array_equal(mixer.centroids[...], before)

    mixer.train()
    centroid_grads = nnx.jit(nnx.grad(loss, argnums=nnx.DiffState(0, Centroids)))(mixer)
    assert float(jnp.max(jnp.abs(centroid_grads["centroids"][...]))) == 0.0
    assert float(jnp.max(jnp.abs(mixer.centroids[...] - before))) > 0, "nnx.grad carries the update back"


def test_commitment_loss_is_sown_and_trains_the_projections():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, rngs=nnx.Rngs(0))
    x = inputs(21)
    q, _, _ = heads(mixer, x)
    vectors = routing._normalize(q[:, :, mixer.local_heads:])
    assigned = mixer.centroids[...][jnp.arange(2)[None, None, :], clusters(mixer, x)]
    expected = 1e-4 * jnp.mean(jnp.square(vectors - assigned))

    _, intermediates = call_and_capture(mixer, x)
    (aux,) = jax.tree.leaves(intermediates["aux_loss"])
    np.testing.assert_allclose(aux, expected, rtol=1e-5)

    def aux_loss(model):
        _, intermediates = nnx.capture(model, nnx.Intermediate)(x)
        return sum(jax.tree.leaves(intermediates))

    grads = nnx.jit(nnx.grad(aux_loss))(mixer)
    assert float(jnp.max(jnp.abs(grads["query"]["kernel"][...]))) > 0
    assert float(jnp.max(jnp.abs(grads["value"]["kernel"][...]))) == 0


def test_bidirectional_updates_from_queries_and_keys():
    mixer = RoutingBidirectional(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, rngs=nnx.Rngs(0))
    before = mixer.centroids[...]
    _, intermediates = call_and_capture(mixer, inputs(21))
    assert float(sum(jax.tree.leaves(intermediates["aux_loss"]))) > 0
    assert float(jnp.max(jnp.abs(mixer.centroids[...] - before))) > 1e-5
    with pytest.raises(NotImplementedError, match="not causal"):
        mixer.init_state(2)


# -- options ------------------------------------------------------------------------------

def test_cluster_count_follows_sqrt_length_up_to_the_cap():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, max_clusters=32, rngs=nnx.Rngs(0))
    assert mixer.centroids[...].shape == (2, 32, HEAD_DIM)
    assert [mixer.clusters_for(n) for n in (1, 2, 50, 1024, 4096)] == [1, 1, 7, 32, 32]
    fixed = Routing(D_MODEL, num_heads=NUM_HEADS, num_clusters=5, rngs=nnx.Rngs(0))
    assert fixed.centroids[...].shape == (2, 5, HEAD_DIM) and fixed.clusters_for(4096) == 5


def test_bfloat16_routing_decisions_match_float32():
    mixer = RoutingBidirectional(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=4,
                                 deterministic=True, rngs=nnx.Rngs(0))
    x16 = inputs(64, dtype=jnp.bfloat16)
    y16, y32 = call(mixer, x16).astype(jnp.float32), call(mixer, x16.astype(jnp.float32))
    assert float(jnp.max(jnp.abs(y16 - y32)) / jnp.max(jnp.abs(y32))) < 3e-2


def test_invalid_options():
    with pytest.raises(ValueError, match="shared_qk=True"):
        Routing(D_MODEL, shared_qk=False, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="local_heads"):
        Routing(D_MODEL, num_heads=4, local_heads=5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="window"):
        Routing(D_MODEL, window=0, rngs=nnx.Rngs(0))
