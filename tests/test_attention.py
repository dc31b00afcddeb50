"""Full softmax attention (the quadratic baseline): against an explicit float64 computation,
RoPE's relativity, the KV-cache step, the bidirectional variant and bad options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import seqmodels.layers as layers
from seqmodels.layers.attention import rotary_embedding

from helpers import assert_close

D_MODEL, HEADS = 16, 2


def make(name="attention", **options):
    return layers.build(name, D_MODEL, rngs=nnx.Rngs(0), num_heads=HEADS, **options)


def rotation_matrix(position: float, head_dim: int, base: float = 10000.0) -> np.ndarray:
    """RoFormer's block-diagonal ``R_{Θ,p}``: 2×2 rotations by ``p θ_i``, ``θ_i = base^{-2i/d}``."""
    R = np.zeros((head_dim, head_dim))
    for i in range(head_dim // 2):
        a = position * base ** (-2 * i / head_dim)
        R[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return R


def explicit_attention(mixer, x, mask, *, rope=True):
    """``W_o concat_h softmax(QKᵀ/√d + M)V`` in float64 numpy from the mixer's weights; mask (L, L) bool."""
    x = np.asarray(x, np.float64)
    B, L, _ = x.shape
    H, d = mixer.num_heads, mixer.head_dim

    def proj(dense):
        return (x @ np.asarray(dense.kernel[...], np.float64) + np.asarray(dense.bias[...], np.float64)
                ).reshape(B, L, H, d)

    q, k, v = proj(mixer.query), proj(mixer.key), proj(mixer.value)
    if rope:
        R = np.stack([rotation_matrix(p, d) for p in range(L)])           # (L, d, d)
        q, k = np.einsum("lij,blhj->blhi", R, q), np.einsum("lij,blhj->blhi", R, k)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d) + np.where(mask, 0.0, -np.inf)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(B, L, H * d)
    return o @ np.asarray(mixer.out.kernel[...], np.float64) + np.asarray(mixer.out.bias[...], np.float64)


def inputs(length, batch=2, seed=0, dtype=jnp.float32):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, length, D_MODEL), dtype)


def causal_mask(length):
    return np.tril(np.ones((length, length), bool))


@pytest.mark.parametrize("name,rope", [("attention", True), ("attention", False),
                                       ("attention_bidirectional", True)])
def test_equals_explicit_float64_attention(x64, name, rope):
    mixer = make(name, rope=rope)
    x = inputs(13, dtype=jnp.float64)
    mask = causal_mask(13) if mixer.causal else np.ones((13, 13), bool)
    y = mixer(x)
    assert y.dtype == jnp.float64
    assert_close(y, explicit_attention(mixer, x, mask, rope=rope), rtol=1e-10)


def test_float32_matches_explicit_attention():
    mixer, x = make(), inputs(29)
    assert_close(mixer(x), explicit_attention(mixer, x, causal_mask(29)), rtol=1e-5)


def test_rope_is_relative(x64):
    """Shifting every position by the same offset leaves all scores q'_t · k'_s unchanged."""
    kq, kk = jax.random.split(jax.random.PRNGKey(1))
    q = jax.random.normal(kq, (1, 11, 2, 8), jnp.float64)
    k = jax.random.normal(kk, (1, 11, 2, 8), jnp.float64)
    positions = jnp.arange(11, dtype=jnp.float64)[None]

    def scores(shift_q, shift_k):
        return jnp.einsum("bqhd,bkhd->bhqk", rotary_embedding(q, positions + shift_q),
                          rotary_embedding(k, positions + shift_k))

    assert_close(scores(1000.0, 1000.0), scores(0.0, 0.0), rtol=1e-10)
    assert_close(scores(37.0, 37.0), scores(0.0, 0.0), rtol=1e-10)
    # a shift of the queries alone changes them: positions are really encoded
    assert float(jnp.max(jnp.abs(scores(3.0, 0.0) - scores(0.0, 0.0)))) > 1e-2
    # the rotation keeps norms and matches RoFormer's block-diagonal matrix
    rotated = rotary_embedding(q, positions)
    assert_close(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-12)
    expected = np.einsum("lij,blhj->blhi", np.stack([rotation_matrix(p, 8) for p in range(11)]), np.asarray(q))
    assert_close(rotated, expected, rtol=1e-12)


def run_steps(mixer, x):
    graphdef, state = nnx.split(mixer)
    step = jax.jit(lambda s, x_t, cache: nnx.merge(graphdef, s).step(x_t, cache))
    cache, ys = mixer.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y_t, cache = step(state, x[:, t], cache)
        ys.append(y_t)
    return jnp.stack(ys, axis=1), cache


def test_step_with_rope_equals_parallel():
    mixer, x = make(max_length=32), inputs(21)
    y_steps, cache = run_steps(mixer, x)
    assert_close(y_steps, mixer(x), rtol=1e-5)
    np.testing.assert_array_equal(cache.position, [21.0, 21.0])
    assert cache.keys.shape == (2, 32, HEADS, D_MODEL // HEADS) and cache.keys.dtype == jnp.float32


def test_step_past_max_length_is_a_sliding_window_under_jit():
    """The documented wrap-around: past max_length, a jitted step attends over the last max_length tokens."""
    mixer, x = make(max_length=8), inputs(13)
    y_steps, _ = run_steps(mixer, x)
    band = causal_mask(13) & (np.subtract.outer(np.arange(13), np.arange(13)) < 8)   # t - 8 < s ≤ t
    assert_close(y_steps, explicit_attention(mixer, x, band), rtol=1e-5)


def test_eager_step_past_max_length_raises():
    mixer = make(max_length=2)
    x_t, cache = inputs(1)[:, 0], mixer.init_state(2)
    for _ in range(2):
        _, cache = mixer.step(x_t, cache)
    with pytest.raises(ValueError, match=r"max_length=2"):
        mixer.step(x_t, cache)


def test_bidirectional_sees_the_future_and_causal_does_not():
    x = inputs(17)
    x2 = x.at[:, -1].add(1.0)
    bidirectional, causal = make("attention_bidirectional"), make()
    assert float(jnp.max(jnp.abs(bidirectional(x2)[:, 0] - bidirectional(x)[:, 0]))) > 1e-4
    np.testing.assert_array_equal(causal(x2)[:, :-1], causal(x)[:, :-1])
    with pytest.raises(NotImplementedError):
        bidirectional.init_state(2)


@pytest.mark.parametrize("options,match", [
    ({"head_dim": 7}, r"head_dim must be a positive even int"),
    ({"num_heads": 3}, r"d_model=16 must be divisible by num_heads=3"),
    ({"max_length": 0}, r"max_length must be a positive int"),
    ({"rope_base": 1.0}, r"rope_base must be > 1"),
])
def test_bad_options_name_the_option(options, match):
    options = {"num_heads": HEADS, **options}
    with pytest.raises(ValueError, match=match):
        layers.build("attention", D_MODEL, rngs=nnx.Rngs(0), **options)


def test_odd_head_dim_without_rope_is_fine():
    mixer = layers.build("attention", D_MODEL, rngs=nnx.Rngs(0), num_heads=2, head_dim=7, rope=False)
    assert mixer(inputs(5)).shape == (2, 5, D_MODEL)
