"""Bad inputs give clear errors before anything compiles, and no input gives a silent wrong result.

Each error case asserts the exception type and that the message names the argument.
The option cases are generated from every registered mixer's constructor, so a mixer
that joins the registry is covered without a line here. Shapes are tiny; most cases
fail before any array is computed.
"""

from __future__ import annotations

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import seqmodels.layers as layers
from seqmodels import scans
from seqmodels.layers import options as mixer_options
from seqmodels.models import SequenceModel, checked
from seqmodels.train.config import Config, ConfigError, apply_overrides, validate

D_MODEL = 8
NAMES = layers.names()
CAUSAL = [n for n in NAMES if layers.spec(n).cls.causal]


def build(name, d_model=D_MODEL, **overrides):
    spec = layers.spec(name)
    return layers.build(name, d_model, rngs=nnx.Rngs(0), **{**spec.example_options, **overrides})


@functools.cache
def built(name):
    """One small instance per mixer, shared by the cases that need a built mixer."""
    return build(name, 16)


def activation(name, *, batch=2, length=3, per_step=False):
    cls = layers.spec(name).cls
    middle = (length,) if cls.spatial_ndim == 1 else (3, 3)
    if cls.temporal:
        middle = (length,) + middle
    if per_step:
        middle = middle[1:] if (cls.temporal or cls.spatial_ndim == 1) else middle
    return jnp.ones((batch,) + middle + (16,), jnp.float32)


def annotated_options(kind):
    """``(mixer, option)`` for every option annotated ``kind`` or ``kind | None``."""
    cases = []
    for name in NAMES:
        init = layers.spec(name).cls.__init__
        annotations = inspect.get_annotations(inspect.unwrap(init), eval_str=True)
        for option in layers.spec(name).options():
            base, _ = mixer_options._base_type(annotations.get(option))
            if base is kind:
                cases.append((name, option))
    return cases


def assert_names(excinfo, *words):
    for word in words:
        assert word in str(excinfo.value), f"{word!r} not in: {excinfo.value}"


# -- constructor options: types, ranges, choices ------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("d_model, error", [(True, TypeError), ("8", TypeError), (8.0, TypeError),
                                            (0, ValueError), (-4, ValueError)])
def test_d_model_must_be_a_positive_int(name, d_model, error):
    with pytest.raises(error) as excinfo:
        build(name, d_model)
    assert_names(excinfo, "d_model", repr(d_model))


@pytest.mark.parametrize("name, option", annotated_options(int))
def test_int_option_rejects_a_string(name, option):
    with pytest.raises(TypeError) as excinfo:
        build(name, **{option: "4"})
    assert_names(excinfo, option, "an int", "'4'", "str")


@pytest.mark.parametrize("name, option", annotated_options(int))
def test_int_option_rejects_out_of_range(name, option):
    with pytest.raises(ValueError) as excinfo:
        build(name, **{option: -3})
    assert_names(excinfo, option, "-3")


@pytest.mark.parametrize("name, option", annotated_options(bool))
def test_bool_option_rejects_a_string(name, option):
    with pytest.raises(TypeError) as excinfo:
        build(name, **{option: "no"})
    assert_names(excinfo, option, "bool", "'no'")


@pytest.mark.parametrize("name, option", annotated_options(float))
def test_float_option_rejects_nan(name, option):
    with pytest.raises(ValueError) as excinfo:
        build(name, **{option: math.nan})
    assert_names(excinfo, option, "finite")


@pytest.mark.parametrize("name, option", annotated_options(str))
def test_string_option_rejects_an_unknown_choice(name, option):
    choices = mixer_options.declared(layers.spec(name).cls, "option_choices")
    assert option in choices, f"{name}: string option {option} declares no choices (option_choices)"
    with pytest.raises(ValueError) as excinfo:
        build(name, **{option: "fast"})
    assert_names(excinfo, option, "'fast'", repr(tuple(choices[option])))


@pytest.mark.parametrize("name", [n for n in NAMES if "num_heads" in layers.spec(n).options()])
@pytest.mark.parametrize("value, error", [("4", TypeError), (0, ValueError), (-2, ValueError), (2.0, TypeError)])
def test_num_heads(name, value, error):
    with pytest.raises(error) as excinfo:
        build(name, num_heads=value)
    assert_names(excinfo, "num_heads", repr(value))


def test_direct_construction_is_validated_like_build():
    cls = layers.spec("aaren").cls
    with pytest.raises(TypeError) as excinfo:
        cls(D_MODEL, num_heads="4", rngs=nnx.Rngs(0))
    assert_names(excinfo, "Aaren", "num_heads", "an int", "str")


def test_a_count_that_may_be_zero_accepts_zero():
    layers.build("routing", D_MODEL, rngs=nnx.Rngs(0), num_heads=2, local_heads=0, window=4, num_clusters=2)


# -- init_state and step: batch sizes and states ------------------------------------------


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("batch_size, error", [(-1, ValueError), (0, ValueError), (2.5, TypeError),
                                               ("2", TypeError), (True, TypeError)])
def test_init_state_batch_size(name, batch_size, error):
    with pytest.raises(error) as excinfo:
        built(name).init_state(batch_size)
    assert_names(excinfo, "batch_size", repr(batch_size))


@pytest.mark.parametrize("name", CAUSAL)
def test_step_refuses_a_missing_state(name):
    with pytest.raises(ValueError) as excinfo:
        built(name).step(activation(name, per_step=True), None)
    assert_names(excinfo, "state", "None", "init_state")


@pytest.mark.parametrize("name", CAUSAL)
def test_step_refuses_a_state_for_another_batch_size(name):
    mixer = built(name)
    with pytest.raises(ValueError) as excinfo:
        mixer.step(activation(name, per_step=True), mixer.init_state(3))
    assert_names(excinfo, "state", "init_state(batch_size=2)", "(3")


@pytest.mark.parametrize("name", CAUSAL)
def test_step_refuses_a_state_of_another_structure(name):
    mixer = built(name)
    state = (mixer.init_state(2), jnp.zeros(1))
    with pytest.raises(ValueError) as excinfo:
        mixer.step(activation(name, per_step=True), state)
    assert_names(excinfo, "state", "structure")


@pytest.mark.parametrize("name", CAUSAL)
def test_step_refuses_a_state_of_another_dtype(name):
    mixer = built(name)
    state = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float16), mixer.init_state(2))
    with pytest.raises(ValueError) as excinfo:
        mixer.step(activation(name, per_step=True), state)
    assert_names(excinfo, "state", "dtype")


# -- empty inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("empty", ["length", "batch"])
def test_mixer_on_an_empty_input_gives_an_empty_output(name, empty):
    x = activation(name, batch=0) if empty == "batch" else activation(name, length=0)
    if empty == "length" and layers.spec(name).cls.spatial_ndim == 2 and not layers.spec(name).cls.temporal:
        x = jnp.ones((2, 0, 3, 16))
    y = built(name)(x)
    assert y.shape == x.shape and y.dtype == x.dtype


@pytest.mark.parametrize("method", ["sequential", "associative", "chunked"])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_and_matrix_scans_at_length_zero(method, reverse):
    h0 = jnp.arange(6.0).reshape(2, 3)
    h, last = scans.linear_scan(jnp.ones((2, 0, 3)), jnp.ones((2, 0, 3)), h0, method=method, reverse=reverse)
    assert h.shape == (2, 0, 3)
    np.testing.assert_array_equal(last, h0)
    h, last = scans.matrix_scan(jnp.ones((2, 0, 3, 3)), jnp.ones((2, 0, 3)), h0, method=method, reverse=reverse)
    assert h.shape == (2, 0, 3)
    np.testing.assert_array_equal(last, h0)


@pytest.mark.parametrize("method", ["sequential", "associative", "chunked"])
def test_softmax_scan_at_length_zero(method):
    state = scans.SoftmaxState(jnp.zeros((2, 2)), jnp.ones((2, 2)), jnp.ones((2, 2, 3)))
    o, final = scans.softmax_scan(jnp.ones((2, 0, 2)), jnp.ones((2, 0, 2, 3)), state, method=method)
    assert o.shape == (2, 0, 2, 3)
    jax.tree.map(np.testing.assert_array_equal, tuple(final), tuple(state))


@pytest.mark.parametrize("method", ["sequential", "chunked"])
def test_matrix_state_scans_at_length_zero(method):
    q = jnp.ones((2, 0, 2, 3))
    s0 = jnp.ones((2, 2, 3, 3))
    o, last = scans.linear_attention(q, q, q, None, s0, method=method)
    assert o.shape == q.shape
    np.testing.assert_array_equal(last, s0)
    o, last = scans.delta_rule(q, q, q, jnp.ones((2, 0, 2)), None, s0, method=method)
    assert o.shape == q.shape
    np.testing.assert_array_equal(last, s0)


# -- scans: complex initial states, option types ------------------------------------------


def loop(a, b, h0):
    """Plain loop of ``h_t = a_t h_{t-1} + b_t`` in complex128 (``a`` scalar or matrix per step)."""
    h, out = np.asarray(h0, np.complex128), []
    for t in range(b.shape[1]):
        step = a[:, t] @ h[..., None] if a.ndim == 4 else a[:, t] * h
        h = step.reshape(h.shape) + b[:, t]
        out.append(h)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("method", ["sequential", "associative", "chunked"])
def test_complex_h0_with_real_coefficients_keeps_its_imaginary_part(method):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 0.9, (2, 5, 3)), rng.normal(size=(2, 5, 3))
    h0 = rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3))
    h, last = scans.linear_scan(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                                jnp.asarray(h0, jnp.complex64), method=method, chunk_size=2)
    assert h.dtype == jnp.complex64
    np.testing.assert_allclose(h, loop(a, b, h0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last, loop(a, b, h0)[:, -1], rtol=1e-5, atol=1e-5)
    A = rng.uniform(-0.4, 0.4, (2, 5, 3, 3))
    h, _ = scans.matrix_scan(jnp.asarray(A, jnp.float32), jnp.asarray(b, jnp.float32),
                             jnp.asarray(h0, jnp.complex64), method=method, chunk_size=2)
    assert h.dtype == jnp.complex64
    np.testing.assert_allclose(h, loop(A, b, h0), rtol=1e-5, atol=1e-5)


def test_linear_scan_rejects_an_integer_h0():
    with pytest.raises(ValueError) as excinfo:
        scans.linear_scan(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)), jnp.ones((1, 3), jnp.int32))
    assert_names(excinfo, "h0", "int32")


@pytest.mark.parametrize("causal", ["no", 1, None])
def test_fft_conv_causal_must_be_a_bool(causal):
    with pytest.raises(TypeError) as excinfo:
        scans.fft_conv(jnp.ones((1, 4, 2)), jnp.ones((3, 2)), causal=causal)
    assert_names(excinfo, "causal", repr(causal))


# -- SequenceModel: constructor and token ids ---------------------------------------------


def token_model(**overrides):
    kwargs = dict(d_model=8, n_layers=1, vocab_size=5, output_dim=5, mixer_options={"num_heads": 2})
    return SequenceModel("aaren", **{**kwargs, **overrides}, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("argument, value, error", [
    ("vocab_size", -5, ValueError), ("vocab_size", 0, ValueError), ("vocab_size", True, TypeError),
    ("vocab_size", "5", TypeError), ("output_dim", 0, ValueError), ("output_dim", 2.0, TypeError),
    ("d_model", 0, ValueError), ("d_model", True, TypeError), ("n_layers", 0, ValueError),
    ("n_layers", "2", TypeError), ("mlp_ratio", -1, ValueError)])
def test_sequence_model_constructor(argument, value, error):
    with pytest.raises(error) as excinfo:
        token_model(**{argument: value})
    assert_names(excinfo, argument, repr(value))


@functools.cache
def shared_token_model():
    return token_model()


@pytest.mark.parametrize("tokens, low, high", [([[0, 5, 1]], 0, 5), ([[-1, 2, 3]], -1, 3), ([[9, -7]], -7, 9)])
def test_out_of_range_token_ids_raise_eagerly(tokens, low, high):
    with pytest.raises(ValueError) as excinfo:
        shared_token_model()(jnp.asarray(tokens))
    assert_names(excinfo, "inputs", "[0, 4]", f"min {low}", f"max {high}")


def test_out_of_range_token_id_in_step_raises_eagerly():
    model = shared_token_model()
    with pytest.raises(ValueError) as excinfo:
        model.step(jnp.asarray([5]), model.init_state(1))
    assert_names(excinfo, "inputs_t", "[0, 4]", "max 5")


@pytest.mark.parametrize("state", [None, (), "state"])
def test_sequence_model_step_refuses_a_missing_state(state):
    with pytest.raises(ValueError) as excinfo:
        shared_token_model().step(jnp.asarray([1]), state)
    assert_names(excinfo, "state", "init_state")


def test_under_jit_out_of_range_ids_give_nan_not_another_token():
    model = shared_token_model()
    forward = nnx.jit(lambda m, tokens: m(tokens))
    good = forward(model, jnp.asarray([[1, 2, 3]]))
    for bad in (-1, 5):  # -1 would wrap to id 4, 5 is past the table
        out = forward(model, jnp.asarray([[1, bad, 3]]))
        np.testing.assert_allclose(out[:, 0], good[:, 0], rtol=1e-5)  # causal: earlier steps untouched
        assert not np.isfinite(np.asarray(out[:, 1:])).any()


def test_checked_raises_on_out_of_range_ids_under_jit():
    model = shared_token_model()
    run = checked(lambda m, tokens: m(tokens))
    assert run(model, jnp.asarray([[1, 2, 3]])).shape == (1, 3, 5)
    with pytest.raises(ValueError) as excinfo:
        run(model, jnp.asarray([[1, 7, -2]]))
    assert_names(excinfo, "inputs", "[0, 4]", "min -2", "max 7")


# -- NaN isolation in causal mixers -------------------------------------------------------


def nan_at(x, t):
    return x.at[0, t].set(jnp.nan)


@pytest.mark.parametrize("name", ["attention", "aaren", "s5"])
def test_nan_at_step_t_leaves_earlier_outputs_finite(name):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 16))
    y = np.asarray(built(name)(nan_at(x, 3)))
    assert np.isfinite(y[0, :3]).all() and np.isfinite(y[1]).all()
    assert not np.isfinite(y[0, 3:]).any()


def test_nan_in_the_attention_cache_reaches_later_steps_only():
    mixer = built("attention")
    x = nan_at(jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16)), 2)
    state, outputs = mixer.init_state(2), []
    for t in range(5):
        y_t, state = mixer.step(x[:, t], state)
        outputs.append(np.asarray(y_t))
    y = np.stack(outputs, axis=1)
    assert np.isfinite(y[0, :2]).all() and np.isfinite(y[1]).all() and not np.isfinite(y[0, 2:]).any()


@pytest.mark.parametrize("name", ["s4", "s4d", "lssl"])
def test_recurrent_path_of_fft_mixers_isolates_a_nan(name):
    """The FFT convolution spreads a NaN to every output (documented); ``mode="scan"`` does not."""
    x = nan_at(jax.random.normal(jax.random.PRNGKey(0), (2, 6, 16)), 3)
    y = np.asarray(build(name, 16, mode="scan")(x))
    assert np.isfinite(y[0, :3]).all() and np.isfinite(y[1]).all()
    assert not np.isfinite(y[0, 3:]).any()


# -- optimizer options --------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [("learning_rate", math.nan), ("learning_rate", math.inf),
                                        ("learning_rate", 0.0), ("learning_rate", -1e-3),
                                        ("ssm_learning_rate", math.nan), ("weight_decay", -math.inf),
                                        ("b1", 1.0), ("b2", math.nan), ("eps", 0.0), ("clip_norm", math.nan)])
def test_optimizer_values_must_be_finite_and_in_range(key, value):
    with pytest.raises(ConfigError) as excinfo:
        validate(apply_overrides(Config(), {f"optimizer.{key}": value}))
    assert_names(excinfo, f"optimizer.{key}", "finite")
