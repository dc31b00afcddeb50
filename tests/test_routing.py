"""Routing attention against explicit dense attention, its cache, and its online k-means.

The references below build the full (L × L) masks on purpose, the admissible keys by a
plain loop over every query: they say in the plainest form which keys each query may
see, which the mixer computes without such a matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seqmodels.layers import routing
from seqmodels.layers.routing import Centroids, Routing, RoutingBidirectional
from seqmodels.models import SequenceModel, generate

D_MODEL, NUM_HEADS, HEAD_DIM = 24, 4, 6


@nnx.jit
def call(mixer, x):
    return mixer(x)


@nnx.jit
def call_and_capture(mixer, x):
    return nnx.capture(mixer, nnx.Intermediate)(x)


def inputs(length, *, batch=2, seed=1, dtype=jnp.float32):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, length, D_MODEL), dtype)


def unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def heads(mixer, x):
    """q, k, v as ``(B, L, H, d)``: local heads' keys from the key projection, routing heads' keys
    the unit queries (shared) or the key projection."""
    shape = x.shape[:-1] + (mixer.num_heads, mixer.head_dim)
    q = mixer.query(x).reshape(shape)
    split = mixer.local_heads
    if mixer.shared_qk:
        k_local = mixer.key(x).reshape(x.shape[:-1] + (split, mixer.head_dim)) if split else q[:, :, :0]
        k = jnp.concatenate([k_local, unit(q[:, :, split:])], axis=2)
    else:
        k = mixer.key(x).reshape(shape)
    return q, k, mixer.value(x).reshape(shape)


def assignments(mixer, x, which="query"):
    """Nearest centroid (by dot product of unit vectors) and that dot product: ``(B, L, H_r)`` each."""
    q, k, _ = heads(mixer, x)
    vectors = unit((q if which == "query" or mixer.shared_qk else k)[:, :, mixer.local_heads:])
    dots = jnp.einsum("blhd,hkd->blhk", vectors, mixer.centroids[...])
    return np.asarray(jnp.argmax(dots, axis=-1)), np.asarray(jnp.max(dots, axis=-1))


def best_keys_loop(score, key_cluster, query_cluster, window):
    """``(B, H, L, L)`` mask: for query t, the ``window`` keys s ≤ t of its cluster with the highest
    score, ties to the later key (a sort per query)."""
    batch, length, heads_ = score.shape
    mask = np.zeros((batch, heads_, length, length), bool)
    for b in range(batch):
        for h in range(heads_):
            for t in range(length):
                members = [s for s in range(t + 1) if key_cluster[b, s, h] == query_cluster[b, t, h]]
                for s in sorted(members, key=lambda s: (-score[b, s, h], -s))[:window]:
                    mask[b, h, t, s] = True
    return mask


def without_self(mask):
    """Shared QK: a query does not see itself unless it sees nothing else."""
    length = mask.shape[-1]
    eye = np.eye(length, dtype=bool)
    others = mask & ~eye
    return others | (mask & ~others.any(-1, keepdims=True))


def dense_attention(mixer, x, mask):
    """Softmax attention of every head under an explicit boolean mask ``(B, H, t, s)``."""
    q, k, v = heads(mixer, x)
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(mixer.head_dim)
    weights = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)
    weights = jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, 0.0)
    return jnp.einsum("bhts,bshd->bthd", weights, v)


def project(mixer, o):
    batch, length = o.shape[:2]
    return mixer.out(o.reshape(batch, length, mixer.num_heads * mixer.head_dim))


def causal_reference(mixer, x):
    """Local heads: ``t - window < s ≤ t``; routing heads: the admission rule, by a loop."""
    length, window = x.shape[1], mixer.window
    t, s = np.arange(length)[:, None], np.arange(length)[None, :]
    local = np.broadcast_to((s <= t) & (t - s < window), (x.shape[0], mixer.local_heads, length, length))
    q_cluster, q_score = assignments(mixer, x)
    k_cluster, k_score = assignments(mixer, x, "key")
    score = k_score if mixer.admission == "content" else np.zeros_like(k_score)
    routed = best_keys_loop(score, k_cluster, q_cluster, window)
    if mixer.shared_qk:
        routed = without_self(routed)
    return project(mixer, dense_attention(mixer, x, np.concatenate([local, routed], axis=1)))


def run_steps(mixer, x, state):
    step = nnx.jit(lambda m, x_t, st: m.step(x_t, st))
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = step(mixer, x[:, t], state)
        outputs.append(y_t)
    return jnp.stack(outputs, axis=1), state


# -- the admission rule ---------------------------------------------------------------------

@pytest.mark.parametrize("length,window,num_clusters", [(37, 4, 3), (16, 16, 2), (45, 5, 1), (9, 20, 4)])
def test_best_keys_equal_a_sort_per_query(length, window, num_clusters):
    rng = np.random.default_rng(length)
    shape = (2, length, 3)
    score = np.round(rng.normal(size=shape), 1).astype(np.float32)      # rounded: ties occur
    key_cluster = rng.integers(0, num_clusters, shape)
    query_cluster = rng.integers(0, num_clusters, shape)
    positions = np.asarray(routing._best_keys(jnp.asarray(score), jnp.asarray(key_cluster),
                                              jnp.asarray(query_cluster), num_clusters, window))
    got = np.zeros((2, 3, length, length), bool)
    for b, t, h, j in zip(*np.nonzero(positions >= 0)):
        got[b, h, t, positions[b, t, h, j]] = True
    assert (positions >= 0).sum() == got.sum(), "no key twice"
    np.testing.assert_array_equal(got, best_keys_loop(score, key_cluster, query_cluster, window))


def test_content_rule_keeps_a_key_that_recency_drops():
    """A planted cluster: one key close to the centroid, then a crowd of others; ``window`` 4."""
    length, window = 30, 4
    score = np.full((1, length, 1), 0.2, np.float32)
    score[0, 3] = 0.9                                                   # the "fact"
    cluster = np.zeros((1, length, 1), int)
    args = (jnp.asarray(cluster), jnp.asarray(cluster), 1, window)
    content = np.asarray(routing._best_keys(jnp.asarray(score), *args))[0, -1, 0]
    recency = np.asarray(routing._best_keys(jnp.zeros_like(jnp.asarray(score)), *args))[0, -1, 0]
    assert 3 in content and 3 not in recency
    assert sorted(recency) == list(range(length - window, length))


@pytest.mark.parametrize("admission", ["content", "recency"])
@pytest.mark.parametrize("shared_qk", [True, False])
def test_causal_routing_equals_explicit_mask(admission, shared_qk):
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, admission=admission,
                    shared_qk=shared_qk, deterministic=True, rngs=nnx.Rngs(2))
    x = inputs(29)
    assert len(np.unique(assignments(mixer, x)[0])) > 1, "the test needs several clusters in use"
    np.testing.assert_allclose(call(mixer, x), causal_reference(mixer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("admission,shared_qk", [("content", True), ("recency", False)])
def test_admitted_keys_are_the_rule_of_the_forward_pass(admission, shared_qk):
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, local_heads=1, window=4, num_clusters=3, admission=admission,
                    shared_qk=shared_qk, deterministic=True, rngs=nnx.Rngs(2))
    x = inputs(23)
    positions = np.asarray(mixer.admitted_keys(x))
    assert positions.shape == (x.shape[0], 23, NUM_HEADS - 1, 4) and positions.dtype == np.int32
    got = np.zeros((x.shape[0], NUM_HEADS - 1, 23, 23), bool)
    for b, t, h, j in zip(*np.nonzero(positions >= 0)):
        got[b, h, t, positions[b, t, h, j]] = True
    q_cluster, _ = assignments(mixer, x)
    k_cluster, k_score = assignments(mixer, x, "key")
    expected = best_keys_loop(k_score if admission == "content" else np.zeros_like(k_score), k_cluster,
                              q_cluster, 4)
    np.testing.assert_array_equal(got, without_self(expected) if shared_qk else expected)
    with pytest.raises(ValueError, match="admission 'content' or 'recency'"):
        Routing(D_MODEL, num_heads=NUM_HEADS, admission="paper", rngs=nnx.Rngs(0)).admitted_keys(x)


# -- shared QK, local keys, self ----------------------------------------------------------

def test_local_heads_have_their_own_keys():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, local_heads=2, window=64, num_clusters=1,
                    deterministic=True, rngs=nnx.Rngs(0))
    assert mixer.shared_qk and mixer.key.kernel[...].shape == (D_MODEL, 2 * HEAD_DIM)
    x = inputs(20)
    q = mixer.query(x)[..., :2 * HEAD_DIM]
    assert float(jnp.max(jnp.abs(mixer.key(x) - q))) > 0.1
    bidirectional = RoutingBidirectional(D_MODEL, num_heads=NUM_HEADS, rngs=nnx.Rngs(0))
    assert not bidirectional.shared_qk and bidirectional.key.kernel[...].shape == (D_MODEL, NUM_HEADS * HEAD_DIM)


@pytest.mark.parametrize("local_heads", [0, 2])
def test_one_cluster_long_window_is_causal_attention_without_self(local_heads):
    """Shared QK: keys are unit queries; a token sees itself only at t = 0, where nothing else is."""
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, local_heads=local_heads, window=64, num_clusters=1,
                    deterministic=True, rngs=nnx.Rngs(0))
    x = inputs(40)
    causal = np.tril(np.ones((40, 40), bool))
    routed = causal & ~np.eye(40, dtype=bool)
    routed[0, 0] = True
    mask = np.concatenate([np.broadcast_to(causal, (2, local_heads, 40, 40)),
                           np.broadcast_to(routed, (2, NUM_HEADS - local_heads, 40, 40))], axis=1)
    np.testing.assert_allclose(call(mixer, x), project(mixer, dense_attention(mixer, x, mask)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("local_heads", [0, 2])
def test_one_cluster_bidirectional_is_full_attention(local_heads):
    mixer = RoutingBidirectional(D_MODEL, num_heads=NUM_HEADS, local_heads=local_heads, window=64,
                                 num_clusters=1, deterministic=True, rngs=nnx.Rngs(0))
    x = inputs(30)
    expected = project(mixer, dense_attention(mixer, x, np.ones((1, 1, 30, 30), bool)))
    np.testing.assert_allclose(call(mixer, x), expected, rtol=1e-5, atol=1e-5)


def balanced_reference(mixer, x):
    """The paper's top-w: per cluster its ``window`` nearest queries and keys (causal: s ≤ t, self
    masked when shared), each query averaged over the clusters that picked it."""
    length, window = x.shape[1], mixer.window
    t, s = np.arange(length)[:, None], np.arange(length)[None, :]
    band = (s <= t) & (t - s < window) if mixer.causal else np.abs(t - s) < window
    local = dense_attention(mixer, x, np.broadcast_to(band, (1, 1, length, length)))[:, :, :mixer.local_heads]
    q, k, _ = heads(mixer, x)

    def picked(vectors):  # (B, H_r, k, L) token among the cluster's `window` nearest
        dots = jnp.einsum("blhd,hkd->bhkl", unit(vectors[:, :, mixer.local_heads:]), mixer.centroids[...])
        _, index = jax.lax.top_k(dots, window)
        return np.asarray(jnp.sum(jax.nn.one_hot(index, length, dtype=jnp.int32), axis=-2) > 0)

    in_q = picked(q)
    in_k = in_q if mixer.shared_qk else picked(k)
    outs, counts = 0.0, 0.0
    for c in range(mixer.num_clusters):
        mask = in_q[:, :, c, :, None] & in_k[:, :, c, None, :]
        if mixer.causal:
            mask = mask & (s <= t)
        if mixer.shared_qk:
            mask = without_self(mask)
        full = np.concatenate([np.broadcast_to(band, mask.shape[:1] + (mixer.local_heads,) + mask.shape[2:]),
                               mask], axis=1)
        chosen = np.swapaxes(in_q[:, :, c], 1, 2)[..., None]                        # (B, L, H_r, 1)
        outs = outs + dense_attention(mixer, x, full)[:, :, mixer.local_heads:] * chosen
        counts = counts + chosen
    routed = outs / np.maximum(counts, 1)
    return project(mixer, jnp.concatenate([local, routed], axis=2))


@pytest.mark.parametrize("causal", [True, False])
def test_paper_admission_equals_balanced_top_w(causal):
    cls = Routing if causal else RoutingBidirectional
    options = {"admission": "paper"} if causal else {}
    mixer = cls(D_MODEL, num_heads=NUM_HEADS, window=6, num_clusters=4, deterministic=True,
                rngs=nnx.Rngs(3), **options)
    x = inputs(21)
    np.testing.assert_allclose(call(mixer, x), balanced_reference(mixer, x), rtol=1e-5, atol=1e-5)


def test_paper_admission_step_is_the_content_cache_not_the_parallel_form():
    kwargs = dict(num_heads=NUM_HEADS, window=3, num_clusters=3, deterministic=True)
    paper = Routing(D_MODEL, admission="paper", rngs=nnx.Rngs(0), **kwargs)
    content = Routing(D_MODEL, rngs=nnx.Rngs(0), **kwargs)
    x = inputs(24)
    y_paper, _ = run_steps(paper, x, paper.init_state(2))
    y_content, _ = run_steps(content, x, content.init_state(2))
    np.testing.assert_allclose(y_paper, y_content, rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(y_paper - call(paper, x)))) > 1e-3


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


# -- strict causality, the cache, generation, non-finite values ------------------------------

@pytest.mark.parametrize("admission", ["content", "recency"])
def test_future_tokens_never_change_the_past(admission):
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=3, num_clusters=2, admission=admission,
                    deterministic=True, rngs=nnx.Rngs(0))
    x = inputs(40)
    y = call(mixer, x)
    for t in (1, 17, 31):
        x2 = x.at[:, t:].set(inputs(40, seed=t)[:, t:])
        np.testing.assert_allclose(call(mixer, x2)[:, :t], y[:, :t], rtol=0, atol=1e-6)


@pytest.mark.parametrize("admission", ["content", "recency"])
def test_step_equals_parallel(admission):
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, admission=admission,
                    shared_qk=admission == "content", deterministic=True, rngs=nnx.Rngs(0))
    x = inputs(27)
    state = mixer.init_state(2)
    y_steps, final = run_steps(mixer, x, state)
    np.testing.assert_allclose(y_steps, call(mixer, x), rtol=0, atol=1e-5)
    assert jax.tree.map(jnp.shape, final) == jax.tree.map(jnp.shape, state)
    assert int(jnp.sum(final.cluster_positions >= 0)) <= 2 * 2 * 3 * 4


def test_generation_with_default_options_equals_the_parallel_forward():
    model = SequenceModel("routing", d_model=16, n_layers=2, vocab_size=11, output_dim=11, rngs=nnx.Rngs(0))
    model.eval()
    prompt = jax.random.randint(jax.random.PRNGKey(0), (2, 5), 0, 11)
    tokens = generate(model, prompt, num_tokens=70)                   # longer than the default window
    logits = nnx.jit(lambda m, x: m(x))(model, tokens)
    np.testing.assert_array_equal(jnp.argmax(logits[:, 4:-1], axis=-1), tokens[:, 5:])
    step = nnx.jit(lambda m, x_t, st: m.step(x_t, st))
    state, outputs = model.init_state(2), []
    for t in range(tokens.shape[1]):
        y_t, state = step(model, tokens[:, t], state)
        outputs.append(y_t)
    np.testing.assert_allclose(jnp.stack(outputs, axis=1), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("admission", ["content", "recency"])
@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_a_non_finite_input_never_reaches_earlier_outputs(admission, bad):
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=2, admission=admission,
                    deterministic=True, rngs=nnx.Rngs(0))
    x = inputs(30).at[:, 13, 5].set(bad)
    y = call(mixer, x)
    assert bool(jnp.all(jnp.isfinite(y[:, :13])))
    assert not bool(jnp.any(jnp.isfinite(y[:, 13])))
    clean = call(mixer, inputs(30))
    np.testing.assert_allclose(y[:, :13], clean[:, :13], rtol=0, atol=1e-6)


def test_step_never_moves_centroids_even_in_training_mode():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, rngs=nnx.Rngs(0))
    before = mixer.centroids[...]
    run_steps(mixer, inputs(5), mixer.init_state(2))
    np.testing.assert_array_equal(mixer.centroids[...], before)


# -- the online spherical k-means ---------------------------------------------------------

def test_centroids_move_by_spherical_ema_in_training_mode_only():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, rngs=nnx.Rngs(0))
    x = inputs(33)
    before = mixer.centroids[...]
    np.testing.assert_allclose(jnp.linalg.norm(before, axis=-1), 1.0, rtol=1e-6)
    mixer.eval()
    y_eval = call(mixer, x)
    np.testing.assert_array_equal(mixer.centroids[...], before)
    assert not call_and_capture(mixer, x)[1], "nothing is sown in eval mode"

    mixer.train()
    clusters, _ = assignments(mixer, x)
    y_train, _ = call_and_capture(mixer, x)
    np.testing.assert_array_equal(y_train, y_eval)      # the update follows the output
    q, _, _ = heads(mixer, x)
    members = jax.nn.one_hot(clusters, 3)                                             # (B, L, H_r, k)
    sums = jnp.einsum("blhk,blhd->hkd", members, unit(q[:, :, mixer.local_heads:]))
    counts = jnp.sum(members, axis=(0, 1))[..., None]
    expected = jnp.where(counts > 0, unit(0.999 * before + 0.001 * unit(sums)), before)
    after = mixer.centroids[...]
    assert float(jnp.max(jnp.abs(after - before))) > 1e-5
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(after, axis=-1), 1.0, rtol=1e-6)


def test_kmeans_from_data_finds_planted_directions():
    directions = unit(jax.random.normal(jax.random.PRNGKey(0), (3, 8)))
    which = jnp.arange(4 * 30) % 3
    noise = 0.05 * jax.random.normal(jax.random.PRNGKey(1), (4 * 30, 8))
    vectors = unit(directions[which] + noise).reshape(4, 30, 1, 8)
    centroids = routing._kmeans_from_data(vectors, 3)[0]                                  # (k, d)
    cosines = np.asarray(centroids @ directions.T)
    assert np.all(np.max(cosines, axis=0) > 0.99), cosines                                # every direction found


def test_data_initialization_happens_once_and_is_state():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, init_from_data=True,
                    rngs=nnx.Rngs(0))
    random_init = mixer.centroids[...]
    assert "centroids_from_data" in nnx.state(mixer, Centroids) and not bool(mixer.centroids_from_data[...])
    mixer.eval()
    call(mixer, inputs(21))
    assert not bool(mixer.centroids_from_data[...]), "eval mode does not initialize"
    mixer.train()
    x = inputs(21)
    q, _, _ = heads(mixer, x)
    expected = routing._kmeans_from_data(unit(q[:, :, mixer.local_heads:]), 3)
    call_and_capture(mixer, x)
    assert bool(mixer.centroids_from_data[...])
    first = mixer.centroids[...]
    assert float(jnp.max(jnp.abs(first - random_init))) > 0.1
    # after the initialization, this call's EMA step moved the centroids by at most 1 - λ
    np.testing.assert_allclose(first, expected, atol=5e-3)
    call_and_capture(mixer, inputs(21, seed=5))
    assert float(jnp.max(jnp.abs(mixer.centroids[...] - first))) < 5e-3, "no second initialization"


def test_centroids_are_not_parameters_and_get_no_gradient():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, rngs=nnx.Rngs(0))
    assert isinstance(mixer.centroids, Centroids) and not isinstance(mixer.centroids, nnx.Param)
    assert "centroids" not in nnx.state(mixer, nnx.Param)
    x = inputs(21)

    def loss(model):
        y, intermediates = nnx.capture(model, nnx.Intermediate)(x)
        return jnp.mean(jnp.square(y)) + sum(jax.tree.leaves(intermediates))

    mixer.train()
    before = mixer.centroids[...]
    centroid_grads = nnx.jit(nnx.grad(loss, argnums=nnx.DiffState(0, Centroids)))(mixer)
    assert float(jnp.max(jnp.abs(centroid_grads["centroids"][...]))) == 0.0
    assert float(jnp.max(jnp.abs(mixer.centroids[...] - before))) > 0, "nnx.grad carries the update back"


def test_commitment_loss_is_sown_and_trains_the_projections():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, window=4, num_clusters=3, rngs=nnx.Rngs(0))
    x = inputs(21)
    q, _, _ = heads(mixer, x)
    clusters, _ = assignments(mixer, x)
    assigned = mixer.centroids[...][jnp.arange(2)[None, None, :], clusters]
    expected = 1e-4 * jnp.mean(jnp.square(unit(q[:, :, mixer.local_heads:]) - assigned))

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

def test_cluster_count_is_fixed_at_construction():
    mixer = Routing(D_MODEL, num_heads=NUM_HEADS, rngs=nnx.Rngs(0))
    assert mixer.num_clusters == 8 and mixer.centroids[...].shape == (2, 8, HEAD_DIM)
    assert mixer.init_state(3).cluster_keys.shape == (3, 2, 8, 64, HEAD_DIM)


def test_bfloat16_routing_decisions_match_float32():
    mixer = RoutingBidirectional(D_MODEL, num_heads=NUM_HEADS, window=16, num_clusters=4,
                                 deterministic=True, rngs=nnx.Rngs(0))
    x16 = inputs(64, dtype=jnp.bfloat16)
    y16, y32 = call(mixer, x16).astype(jnp.float32), call(mixer, x16.astype(jnp.float32))
    assert float(jnp.max(jnp.abs(y16 - y32)) / jnp.max(jnp.abs(y32))) < 3e-2


def test_invalid_options():
    with pytest.raises(ValueError, match="admission"):
        Routing(D_MODEL, admission="latest", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="admission"):
        RoutingBidirectional(D_MODEL, admission="content", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="local_heads"):
        Routing(D_MODEL, num_heads=4, local_heads=5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="window"):
        Routing(D_MODEL, window=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_clusters"):
        Routing(D_MODEL, num_clusters=0, rngs=nnx.Rngs(0))
