"""SequenceModel: shapes, pooling, dropout, input checks, and step-based generation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seqmodels.models import SequenceModel, generate


def token_model(**kw):
    opts = dict(d_model=16, n_layers=2, output_dim=11, vocab_size=11, mixer_options={"num_heads": 2})
    opts.update(kw)
    return SequenceModel("aaren", rngs=nnx.Rngs(0), **opts)


def test_token_and_feature_inputs():
    tokens = jax.random.randint(jax.random.PRNGKey(0), (3, 20), 0, 11)
    assert token_model()(tokens).shape == (3, 20, 11)
    model = SequenceModel("aaren", d_model=16, n_layers=1, output_dim=2, input_dim=5,
                          pooling="mean", mixer_options={"num_heads": 2}, rngs=nnx.Rngs(0))
    assert model(jnp.ones((3, 20, 5))).shape == (3, 2)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooling(pooling):
    tokens = jax.random.randint(jax.random.PRNGKey(0), (3, 20), 0, 11)
    per_step = token_model()(tokens)
    pooled = token_model(pooling=pooling)(tokens)
    assert pooled.shape == (3, 11)
    if pooling == "last":
        np.testing.assert_allclose(pooled, per_step[:, -1], rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training():
    model = token_model(dropout=0.5)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 10), 0, 11)
    a, b = model(tokens), model(tokens)
    assert float(jnp.max(jnp.abs(a - b))) > 0
    model.eval()
    np.testing.assert_array_equal(model(tokens), model(tokens))


def test_bfloat16_activations_close_to_float32():
    model = token_model()
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 30), 0, 11)
    y32, y16 = model(tokens), model(tokens, dtype=jnp.bfloat16)
    assert y16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(y16 - y32)) / jnp.max(jnp.abs(y32))) < 5e-2


def test_step_equals_parallel_and_greedy_generation():
    model = token_model(n_layers=3)
    model.eval()
    prompt = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 11)
    tokens = generate(model, prompt, num_tokens=12)
    assert tokens.shape == (2, 17)
    np.testing.assert_array_equal(tokens[:, :5], prompt)
    logits = model(tokens)
    # Every generated token is the argmax of the parallel forward at the previous position.
    np.testing.assert_array_equal(jnp.argmax(logits[:, 4:-1], -1), tokens[:, 5:])
    state = model.init_state(2)
    step_logits = []
    for t in range(tokens.shape[1]):
        out, state = model.step(tokens[:, t], state)
        step_logits.append(out)
    np.testing.assert_allclose(jnp.stack(step_logits, 1), logits, rtol=1e-4, atol=1e-4)


def test_input_errors_name_the_argument():
    model = token_model()
    with pytest.raises(ValueError, match="inputs must be integer token ids of rank 2"):
        model(jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match="inputs_t must be integer token ids of rank 1"):
        model.step(jnp.ones((2, 5), jnp.int32), model.init_state(2))
    with pytest.raises(ValueError, match="give exactly one of vocab_size"):
        SequenceModel("aaren", d_model=8, n_layers=1, output_dim=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="pooling must be one of"):
        token_model(pooling="max")
    with pytest.raises(ValueError, match="unknown mixer 'attn'"):
        SequenceModel("attn", d_model=8, n_layers=1, output_dim=2, vocab_size=4, rngs=nnx.Rngs(0))
