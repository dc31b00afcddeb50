"""nonlinear_scan: a nonlinear recurrence, batch-first, equals a Python loop over time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_close
from seqmodels import scans


def cell(state, x_t):
    h, count = state
    h = jnp.tanh(0.9 * h + x_t["u"] * x_t["w"])
    return (h, count + 1), {"h": h, "sq": h * h}


def test_equals_a_python_loop_and_returns_the_final_state():
    rng = np.random.default_rng(0)
    x = {"u": jnp.asarray(rng.normal(size=(2, 7, 3))), "w": jnp.asarray(rng.normal(size=(2, 7, 3)))}
    state0 = (jnp.asarray(rng.normal(size=(2, 3))), jnp.zeros((), jnp.int32))
    y, (h_last, count) = scans.nonlinear_scan(cell, x, state0)
    state, ys = state0, []
    for t in range(7):
        state, y_t = cell(state, jax.tree.map(lambda a: a[:, t], x))
        ys.append(y_t["h"])
    assert y["h"].shape == y["sq"].shape == (2, 7, 3)
    assert_close(y["h"], jnp.stack(ys, axis=1), rtol=1e-6, name="outputs")
    assert_close(h_last, state[0], rtol=1e-6, name="final state")
    assert int(count) == 7


def test_checks_the_time_axis():
    with pytest.raises(ValueError, match="same length"):
        scans.nonlinear_scan(cell, {"u": jnp.zeros((2, 7, 3)), "w": jnp.zeros((2, 6, 3))}, (jnp.zeros((2, 3)), 0))
    with pytest.raises(ValueError, match="batch, length"):
        scans.nonlinear_scan(cell, {"u": jnp.zeros((7,)), "w": jnp.zeros((7,))}, (jnp.zeros(()), 0))
