"""Aaren equals explicit causal softmax attention with a learned, input-independent query."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import seqmodels.layers as layers
from seqmodels.layers.aaren import Aaren


def explicit_attention(mixer: Aaren, x):
    """Materialize the (L × L) causal attention of each head's fixed query."""
    B, L, _ = x.shape
    H, dh = mixer.num_heads, mixer.head_dim
    k = mixer.key(x).reshape(B, L, H, dh)
    v = mixer.value(x).reshape(B, L, H, dh)
    scores = jnp.einsum("blhd,hd->bhl", k, mixer.query[...]) * mixer.qk_scale  # (B, H, L keys)
    mask = jnp.tril(jnp.ones((L, L), bool))  # query position t sees keys i ≤ t
    logits = jnp.where(mask[None, None], scores[:, :, None, :], -jnp.inf)  # (B, H, t, i)
    weights = jax.nn.softmax(logits, axis=-1)
    o = jnp.einsum("bhti,bihd->bthd", weights, v)
    return mixer.out(o.reshape(B, L, H * dh))


@pytest.mark.parametrize("method", ["sequential", "associative"])
def test_equals_explicit_causal_attention(method):
    mixer = Aaren(24, num_heads=3, method=method, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 50, 24))
    np.testing.assert_allclose(mixer(x), explicit_attention(mixer, x), rtol=1e-5, atol=1e-5)


def test_extreme_scores_stay_finite():
    mixer = Aaren(8, num_heads=2, qk_scale=1e3, rngs=nnx.Rngs(0))
    x = 10 * jax.random.normal(jax.random.PRNGKey(2), (1, 64, 8))
    y = mixer(x)
    assert bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_allclose(y, explicit_attention(mixer, x), rtol=1e-4, atol=1e-4)


def test_state_size_is_constant_in_length():
    mixer = Aaren(16, num_heads=4, rngs=nnx.Rngs(0))
    state = mixer.init_state(3)
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 100, 16))
    for t in range(0, 100, 33):
        _, new_state = mixer.step(x[:, t], state)
        assert jax.tree.map(jnp.shape, new_state) == jax.tree.map(jnp.shape, state)
        state = new_state
    assert sum(leaf.size for leaf in jax.tree.leaves(state)) == 3 * 4 * (1 + 1 + 4)


def test_query_is_a_parameter_not_a_function_of_the_input():
    mixer = Aaren(16, num_heads=2, rngs=nnx.Rngs(0))
    params = nnx.state(mixer, nnx.Param)
    assert params["query"][...].shape == (2, 8)
    assert not hasattr(mixer, "query_proj")


def test_head_divisibility_error():
    with pytest.raises(ValueError, match="d_model=10 must be divisible by num_heads=4"):
        layers.build("aaren", 10, rngs=nnx.Rngs(0))
