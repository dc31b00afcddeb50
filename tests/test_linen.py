"""``seqmodels.layers.to_linen``: mixers inside Flax Linen models.

A small Linen classifier around a mixer initializes, applies and differentiates
(gradients reach every trainable collection, ``ssm_params`` included); a bare wrapped
mixer equals the NNX mixer once the Linen variables are copied into it (and differs
before, so the comparison can fail); ``step`` is reachable through ``nnx_method``; the
routing centroids update through ``mutable``. S5 covers the NumPy-initialized mixers,
which must apply (and differentiate) under ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx

from seqmodels import layers

D_MODEL, VOCAB, CLASSES = 16, 11, 3
MIXERS = ["aaren", "s5", "routing"]  # plain params; ssm_params; centroids
TRAINABLE = ("params", "ssm_params")


class TinyClassifier(linen.Module):
    """Embed tokens, one pre-norm residual mixer block, mean-pool, classify."""

    mixer: str

    @linen.compact
    def __call__(self, tokens):
        x = linen.Embed(VOCAB, D_MODEL)(tokens)
        mixer = layers.to_linen(self.mixer, D_MODEL, **layers.spec(self.mixer).example_options)
        x = x + mixer(linen.LayerNorm()(x))
        return linen.Dense(CLASSES)(x.mean(axis=1))


def inputs(length=9):
    tokens = jax.random.randint(jax.random.key(0), (2, length), 0, VOCAB)
    features = jax.random.normal(jax.random.key(1), (2, length, D_MODEL))
    return tokens, features


@pytest.mark.parametrize("name", MIXERS)
def test_linen_model_initializes_applies_and_differentiates(name):
    tokens, _ = inputs()
    model = TinyClassifier(name)
    variables = model.init(jax.random.key(2), tokens)
    trainable = {c: variables[c] for c in TRAINABLE if c in variables}
    frozen = {c: v for c, v in variables.items() if c not in TRAINABLE}
    if name == "s5":
        assert "ssm_params" in variables

    def loss(trainable):
        logits = model.apply({**trainable, **frozen}, tokens)
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    value, grads = jax.jit(jax.value_and_grad(loss))(trainable)
    assert model.apply(variables, tokens).shape == (2, CLASSES)
    assert np.isfinite(float(value))
    for collection, tree in grads.items():
        mixer_grads = jax.tree.leaves(tree["LinenMixer_0"])
        assert mixer_grads, collection
        assert all(np.all(np.isfinite(g)) for g in mixer_grads), collection
        assert any(np.any(g != 0) for g in mixer_grads), f"{collection}: no gradient reaches the mixer"


@pytest.mark.parametrize("name", MIXERS)
def test_linen_mixer_equals_nnx_mixer_with_the_same_variables(name):
    _, x = inputs()
    options = layers.spec(name).example_options
    wrapped = layers.to_linen(name, D_MODEL, **options)
    variables = wrapped.init(jax.random.key(3), x)
    y_linen = wrapped.apply(variables, x)

    mixer = layers.build(name, D_MODEL, rngs=nnx.Rngs(4), **options)
    assert not np.allclose(mixer(x), y_linen), "a differently seeded mixer should differ"
    nnx.update(mixer, *variables.values())
    np.testing.assert_allclose(mixer(x), y_linen, rtol=1e-6, atol=1e-6)


def test_linen_step_equals_parallel_first_token():
    _, x = inputs()
    wrapped = layers.to_linen("aaren", D_MODEL, num_heads=2)
    variables = wrapped.init(jax.random.key(5), x)
    state = wrapped.apply(variables, x.shape[0], nnx_method="init_state")
    y_0, _ = wrapped.apply(variables, x[:, 0], state, nnx_method="step")
    np.testing.assert_allclose(y_0, wrapped.apply(variables, x)[:, 0], rtol=1e-5, atol=1e-6)


def test_routing_centroids_update_when_mutable():
    _, x = inputs(length=16)
    options = dict(layers.spec("routing").example_options, deterministic=False)
    wrapped = layers.to_linen("routing", D_MODEL, **options)
    variables = wrapped.init(jax.random.key(6), x)
    _, updated = wrapped.apply(variables, x, mutable=["centroids"])
    before, after = variables["centroids"], updated["centroids"]
    assert jax.tree.structure(before) == jax.tree.structure(after)
    assert not all(np.allclose(b, a) for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_unknown_mixer_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown mixer 'nope'; valid names: aaren"):
        layers.to_linen("nope", D_MODEL)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\] for mixer 'aaren'"):
        layers.to_linen("aaren", D_MODEL, colour=1).init(jax.random.key(0), inputs()[1])
