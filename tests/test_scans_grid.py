"""``scans.grid_scan`` (pLSTM 2-D) against the naive float64 cell-by-cell loop."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import pytest

from helpers import assert_close
from seqmodels import scans
from seqmodels.scans import reference

# Jitted once per static configuration: the naive loop unrolls into one small program,
# which compiles faster than its hundreds of eager dispatches run.
grid_scan = jax.jit(scans.grid_scan, static_argnames=("reverse", "exclusive", "method"))
naive_grid_scan = jax.jit(reference.grid_scan, static_argnames=("reverse", "exclusive"))
ORIENTATIONS = list(itertools.product([False, True], [False, True]))
B, X, Y, H, N = 1, 5, 7, 2, 2


def make_inputs(seed=0, dtype=jnp.float64, shape=(B, X, Y, H, N)):
    keys = jax.random.split(jax.random.PRNGKey(seed), 8)
    B_, X_, Y_ = shape[:3]
    normal = lambda key, s: jax.random.normal(key, s, dtype)  # noqa: E731
    return dict(
        b_r=normal(keys[0], shape), b_d=normal(keys[1], shape),
        T_rl=0.5 * normal(keys[2], shape + (N,)), T_ru=0.5 * normal(keys[3], shape + (N,)),
        T_dl=0.5 * normal(keys[4], shape + (N,)), T_du=0.5 * normal(keys[5], shape + (N,)),
        h0_left=normal(keys[6], (B_, Y_) + shape[3:]), h0_top=normal(keys[7], (B_, X_) + shape[3:]),
    )


def with_mode(inputs, mode):
    """P: all four transitions (coupled); D-L: no T_dl; D-R: no T_ru."""
    return dict(inputs, **{"P": {}, "D-L": {"T_dl": None}, "D-R": {"T_ru": None}}[mode])


@pytest.mark.parametrize("reverse", ORIENTATIONS)
@pytest.mark.parametrize("mode,method", [("P", "wavefront"), ("D-L", "factorized"), ("D-R", "factorized")])
def test_grid_scan_equals_naive_recurrence(x64, mode, method, reverse):
    inputs = with_mode(make_inputs(), mode)
    got = grid_scan(**inputs, reverse=reverse, exclusive=True, method=method)
    want = naive_grid_scan(**inputs, reverse=reverse, exclusive=True)
    assert_close(got, want, name=f"{mode} {reverse}")


@pytest.mark.parametrize("mode", ["P", "D-L"])
def test_inclusive_states_and_auto_method(x64, mode):
    inputs = with_mode(make_inputs(seed=1), mode)
    want = naive_grid_scan(**inputs, reverse=(True, False))
    assert_close(grid_scan(**inputs, reverse=(True, False)), want)
    if mode != "P":  # the wavefront handles D-mode too
        assert_close(grid_scan(**inputs, reverse=(True, False), method="wavefront"), want)


def test_scalar_state_uses_linear_scan_and_no_borders(x64):
    inputs = make_inputs(seed=2)
    scalar = {k: (v[..., :1, :1] if k.startswith("T") else v[..., :1]) for k, v in inputs.items()
              if k not in ("h0_left", "h0_top")}
    scalar["T_dl"] = None
    for reverse in [(False, True), (True, True)]:
        assert_close(grid_scan(**scalar, reverse=reverse),
                     naive_grid_scan(**scalar, reverse=reverse))


def test_float32_and_broadcast_transitions():
    inputs = make_inputs(seed=3, dtype=jnp.float32)
    shared = {k: (v[:, :1, :1] if k.startswith("T") else v) for k, v in inputs.items()}  # one T per grid
    with jax.enable_x64(True):
        want = naive_grid_scan(**{k: v.astype(jnp.float64) for k, v in shared.items()}, exclusive=True)
    got = grid_scan(**shared, exclusive=True)
    assert got[0][0].dtype == jnp.float32
    assert_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("mode,method", [("P", "wavefront"), ("D-L", "factorized")])
def test_gradients_equal_naive(x64, mode, method):
    inputs = with_mode(make_inputs(seed=4, shape=(1, 3, 4, 1, N)), mode)
    weights = jax.random.normal(jax.random.PRNGKey(9), (2, 1, 3, 4, 1, N), jnp.float64)

    def loss(fn, inputs, **kw):
        (c_left, c_up), (last_r, last_d) = fn(**inputs, reverse=(False, True), exclusive=True, **kw)
        return jnp.sum(c_left * weights[0]) + jnp.sum(c_up * weights[1]) + jnp.sum(last_r) + jnp.sum(last_d)

    got = jax.grad(lambda p: loss(grid_scan, p, method=method))(inputs)
    want = jax.grad(lambda p: loss(naive_grid_scan, p))(inputs)
    assert_close(got, want, name="gradient")


def test_rejects_bad_arguments():
    inputs = make_inputs(dtype=jnp.float32)
    with pytest.raises(ValueError, match="factorized"):
        scans.grid_scan(**inputs, method="factorized")
    with pytest.raises(ValueError, match="h0_left"):
        scans.grid_scan(**dict(inputs, h0_left=inputs["h0_top"]))
    with pytest.raises(ValueError, match="T_rl"):
        scans.grid_scan(**dict(inputs, T_rl=inputs["T_rl"][..., :1]))
