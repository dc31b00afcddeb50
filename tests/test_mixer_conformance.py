"""One suite for every registered mixer: a mixer joins by registering itself.

Each test is parametrized over ``seqmodels.layers.names()`` and builds the mixer with
its ``example_options`` at a small width, so nothing here names a particular mixer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import seqmodels.layers as layers

D_MODEL = 16
NAMES = layers.names()
CAUSAL = [n for n in NAMES if layers.spec(n).cls.causal]
NON_CAUSAL = [n for n in NAMES if not layers.spec(n).cls.causal]
# bfloat16 activations against float32 on the same (bf16-rounded) input: bf16 has an
# 8-bit mantissa (relative step 2^-8 ≈ 4e-3); a few roundings through projections give
# a few 1e-2 of max|y|.
BF16_RTOL = 5e-2


def make(name, seed=0):
    s = layers.spec(name)
    return layers.build(name, D_MODEL, rngs=nnx.Rngs(seed), **s.example_options)


def example_input(name, length, *, batch=2, seed=0, dtype=jnp.float32):
    cls = layers.spec(name).cls
    middle = {1: (length,), 2: (5, 7)}[cls.spatial_ndim]
    if cls.temporal:
        middle = (length,) + middle
    return jax.random.normal(jax.random.PRNGKey(seed), (batch,) + middle + (D_MODEL,), dtype)


def jitted(mixer, method_name):
    graphdef, state = nnx.split(mixer)

    @jax.jit
    def run(state, *args):
        return getattr(nnx.merge(graphdef, state), method_name)(*args)

    return lambda *args: run(state, *args)


def run_steps(mixer, x):
    step = jitted(mixer, "step")
    state = mixer.init_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y_t, state = step(x[:, t], state)
        ys.append(y_t)
    return jnp.stack(ys, axis=1)


def test_registry_lists_mixers():
    assert "aaren" in NAMES
    assert NAMES == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length", [1, 37])
def test_shape_preserved(name, length):
    x = example_input(name, length)
    y = make(name)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
    mixer, x = make(name), example_input(name, 19)
    np.testing.assert_allclose(jitted(mixer, "__call__")(x), mixer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_prefix_invariance(name):
    mixer, x = make(name), example_input(name, 37)
    t = 20
    x2 = x.at[:, t:].set(example_input(name, 37, seed=1)[:, t:])
    y, y2 = mixer(x), mixer(x2)
    np.testing.assert_allclose(y2[:, :t], y[:, :t], rtol=0, atol=1e-6)
    assert float(jnp.max(jnp.abs(y2[:, t:] - y[:, t:]))) > 1e-4, "later outputs must see the change"


@pytest.mark.parametrize("name", NON_CAUSAL)
def test_non_causal_sees_the_future(name):
    mixer, x = make(name), example_input(name, 37)
    x2 = x.at[:, -1].add(1.0)
    y, y2 = mixer(x), mixer(x2)
    assert float(jnp.max(jnp.abs(y2[:, 0] - y[:, 0]))) > 1e-5


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("length", [37, 300])
def test_step_equals_parallel(name, length):
    mixer, x = make(name), example_input(name, length)
    y = jitted(mixer, "__call__")(x)
    y_steps = run_steps(mixer, x)
    assert float(jnp.max(jnp.abs(y_steps - y))) <= 1e-4


@pytest.mark.parametrize("name", CAUSAL)
def test_state_is_float32(name):
    state = make(name).init_state(2)
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype in (jnp.float32, jnp.complex64), leaf.dtype


@pytest.mark.parametrize("name", NAMES)
def test_gradients_finite(name):
    mixer, x = make(name), example_input(name, 23)
    graphdef, params, rest = nnx.split(mixer, nnx.Param, ...)
    w = example_input(name, 23, seed=3)

    def loss(params, x):
        return jnp.sum(nnx.merge(graphdef, params, rest)(x) * w)

    g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    leaves = jax.tree.leaves(g_params)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert bool(jnp.all(jnp.isfinite(g_x))) and float(jnp.max(jnp.abs(g_x))) > 0
    assert sum(float(jnp.sum(jnp.abs(g))) > 0 for g in leaves) >= len(leaves) // 2 + 1


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_activations(name):
    mixer = make(name)
    x16 = example_input(name, 37, dtype=jnp.bfloat16)
    y16 = mixer(x16)
    assert y16.dtype == jnp.bfloat16
    y32 = mixer(x16.astype(jnp.float32))
    err = float(jnp.max(jnp.abs(y16.astype(jnp.float32) - y32)) / jnp.max(jnp.abs(y32)))
    assert err <= BF16_RTOL, f"bf16 relative error {err:.3g} > {BF16_RTOL}"


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_name_the_argument(name):
    mixer, x = make(name), example_input(name, 5)
    with pytest.raises(ValueError, match=r"x must have rank"):
        mixer(x[0])
    with pytest.raises(ValueError, match=rf"d_model={D_MODEL}"):
        mixer(jnp.concatenate([x, x], axis=-1))
    with pytest.raises(ValueError, match=r"floating dtype"):
        mixer(x.astype(jnp.int32))


@pytest.mark.parametrize("name", CAUSAL)
def test_bad_step_input_names_the_argument(name):
    mixer, x = make(name), example_input(name, 5)
    with pytest.raises(ValueError, match=r"x_t must have rank"):
        mixer.step(x, mixer.init_state(x.shape[0]))


def test_build_rejects_unknown_name_and_option():
    with pytest.raises(ValueError, match=r"unknown mixer 'nope'; valid names: .*aaren"):
        layers.build("nope", 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_headz'\].*valid options: .*num_heads=4"):
        layers.build("aaren", 8, rngs=nnx.Rngs(0), num_headz=2)
