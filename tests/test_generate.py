"""``generate``: one trace per model structure and shape, reproducible sampling, eager argument checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seqmodels.models import SequenceModel, generate
from seqmodels.models import sequence


def token_model(seed=0, **kw):
    options = dict(d_model=8, n_layers=2, output_dim=11, vocab_size=11, mixer_options={"num_heads": 2})
    options.update(kw)
    return SequenceModel(options.pop("mixer", "aaren"), rngs=nnx.Rngs(seed), **options)


@pytest.fixture
def traces(monkeypatch):
    """A list that gets one entry each time the decoding step is traced (its Python body runs)."""
    counted = []
    original = sequence._decode_step

    def counting_step(*args, **kwargs):
        counted.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(sequence, "_decode_step", counting_step)
    sequence._jitted_decode_step.cache_clear()
    yield counted
    sequence._jitted_decode_step.cache_clear()


def test_three_calls_with_the_same_shapes_trace_once(traces):
    model = token_model()
    prompt = jnp.array([[1, 2, 3], [4, 5, 6]])
    outputs = [generate(model, prompt, 6) for _ in range(3)]
    assert len(traces) == 1
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])
    generate(token_model(seed=1), prompt + 1, 4)           # same structure and shapes: reused
    assert len(traces) == 1
    generate(model, prompt[:1], 6)                          # another batch size: traced again
    assert len(traces) == 2


def test_sampling_is_reproducible_and_top_k_1_is_greedy():
    model = token_model()
    prompt = jnp.array([[1, 2]])
    draw = lambda seed, **kw: generate(model, prompt, 24, temperature=3.0, key=jax.random.key(seed), **kw)
    np.testing.assert_array_equal(draw(0), draw(0))
    assert not np.array_equal(draw(0), draw(1))
    np.testing.assert_array_equal(draw(5, top_k=1), generate(model, prompt, 24))


def test_sample_next_follows_softmax_over_the_top_k():
    logits = jnp.tile(jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4])), (20000, 1))
    counts = np.bincount(sequence.sample_next(logits, jax.random.key(0), 1.0, top_k=None, greedy=False),
                         minlength=4) / 20000
    np.testing.assert_allclose(counts, [0.1, 0.2, 0.3, 0.4], atol=0.015)
    counts = np.bincount(sequence.sample_next(logits, jax.random.key(1), 0.5, top_k=2, greedy=False),
                         minlength=4) / 20000
    # temperature 0.5 squares the probabilities: 0.09 : 0.16 over the two kept tokens
    np.testing.assert_allclose(counts, [0, 0, 0.09 / 0.25, 0.16 / 0.25], atol=0.015)


@pytest.mark.parametrize("prompt, kwargs, message", [
    ([[1, 11]], {}, r"prompt token ids must be in \[0, vocab_size=11\); got ids from 1 to 11"),
    ([[-1, 2]], {}, r"prompt token ids must be in \[0, vocab_size=11\); got ids from -1"),
    ([[1.0, 2.0]], {}, r"prompt must be integer token ids of shape \(batch, length ≥ 1\); got dtype float"),
    ([1, 2], {}, r"prompt must be integer token ids .* shape \(2,\)"),
    ([[1]], {"num_tokens": -1}, r"num_tokens must be an integer ≥ 0; got -1"),
    ([[1]], {"temperature": float("nan")}, r"temperature must be a finite number ≥ 0"),
    ([[1]], {"top_k": 12}, r"top_k must be None or an integer in \[1, output_dim=11\]; got 12"),
    ([[1]], {"temperature": 1.0}, r"key: sampling \(temperature > 0\) needs a jax.random key"),
])
def test_bad_arguments_are_refused_before_anything_compiles(traces, prompt, kwargs, message):
    kwargs = {"num_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(token_model(), jnp.asarray(prompt), **kwargs)
    assert traces == []


@pytest.mark.parametrize("kwargs, message", [
    ({"mixer": "attention_bidirectional"}, "generate needs a causal mixer"),
    ({"pooling": "last"}, "per-step outputs; got vocab_size=11, pooling='last'"),
    ({"output_dim": 12}, "output_dim=12 must be at most vocab_size=11"),
])
def test_models_that_cannot_generate_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(token_model(**kwargs), jnp.array([[1, 2]]), 3)
