"""``scans.grid_scan`` (pLSTM 2-D) against the naive float64 cell-by-cell loop."""

from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import pytest

from helpers import assert_close, outputs_and_grads
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


# --------------------------------------------------------------------------- the fused pLSTM read-out

FOUR = tuple(ORIENTATIONS)


def make_plstm_inputs(shape, mode, seed=0, heads=2, Dk=3, Dv=2, dtype=jnp.float64):
    """``plstm_grid_scan``'s arguments with one gate set per orientation (leading axis 4)."""
    B_, X_, Y_ = shape
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 12))
    normal = lambda s: jax.random.normal(next(keys), s, dtype)  # noqa: E731
    per = (len(FOUR), B_, X_, Y_, heads)
    args = dict(q=normal((B_, X_, Y_, heads, Dk)), k=normal((B_, X_, Y_, heads, Dk)),
                v=normal((B_, X_, Y_, heads, Dv)), source_r=normal(per + (N,)), source_d=normal(per + (N,)),
                T_rl=0.5 * normal(per + (N, N)), T_ru=0.5 * normal(per + (N, N)),
                T_dl=0.5 * normal(per + (N, N)), T_du=0.5 * normal(per + (N, N)),
                mark_l=normal(per + (N,)), mark_u=normal(per + (N,)))
    return with_mode(args, mode)


def naive_readout(q, k, v, source_r, source_d, T_rl, T_ru, T_dl, T_du, mark_l, mark_u, orientations=FOUR):
    """Σ over ``orientations`` of ``q·M_l Cr(x-1, y) + q·M_u Cd(x, y-1)``, the states from the
    cell-by-cell loop with ``b = S ⊗ k vᵀ`` (per head: states ``(Dk, Dv, N)``)."""
    kv = jnp.einsum("bxyhd,bxyhe->bxyhde", k, v)
    h = 0.0
    for j, reverse in enumerate(orientations):
        b_r, b_d = (jnp.einsum("bxyhde,bxyhn->bxyhden", kv, S[j]) for S in (source_r, source_d))
        Ts = [None if T is None else T[j][:, :, :, :, None, None] for T in (T_rl, T_ru, T_dl, T_du)]
        (c_left, c_up), _ = reference.grid_scan(b_r, b_d, *Ts, reverse=reverse, exclusive=True)
        h = h + (jnp.einsum("bxyhd,bxyhn,bxyhden->bxyhe", q, mark_l[j], c_left)
                 + jnp.einsum("bxyhd,bxyhn,bxyhden->bxyhe", q, mark_u[j], c_up))
    return h


@pytest.mark.parametrize("mode,shape", [("P", (1, 5, 7)), ("P", (2, 1, 9)), ("D-L", (1, 4, 5)), ("D-R", (1, 5, 4))])
def test_plstm_grid_scan_equals_naive_recurrence(x64, mode, shape):
    """All four orientations at once, segments of 2 diagonals (the last one padded),
    against the float64 cell-by-cell loop on non-square grids."""
    args = make_plstm_inputs(shape, mode, seed=len(mode))
    got = jax.jit(partial(scans.plstm_grid_scan, reverse=FOUR, segment_size=2))(**args)
    assert_close(got, jax.jit(naive_readout)(**args), name=mode)


@pytest.mark.parametrize("mode", ["P", "D-R"])
def test_plstm_grid_scan_gradients_equal_naive(x64, mode):
    """Every gradient through the three levels of rematerialization (orientations,
    segments of 2 diagonals, steps)."""
    args = make_plstm_inputs((1, 3, 4), mode, seed=11)
    names = [n for n, a in args.items() if a is not None]

    def call(fn):
        return lambda *xs: (fn(**dict(args, **dict(zip(names, xs)))),)

    (got, got_grads), (want, want_grads) = outputs_and_grads(
        [call(partial(scans.plstm_grid_scan, reverse=FOUR, segment_size=2)), call(naive_readout)],
        [args[n] for n in names])
    assert_close(got, want, name=f"{mode} h")
    for name, g, w in zip(names, got_grads, want_grads):
        assert_close(g, w, name=f"{mode} d{name}")


def test_plstm_grid_scan_single_orientation_and_float32():
    """One ``(rx, ry)`` pair takes gates without the orientation axis; float32 inputs give
    float32 outputs that agree with the float64 loop, for any segment size."""
    args = make_plstm_inputs((1, 4, 3), "P", seed=7, dtype=jnp.float32)
    one = {n: (a if n in ("q", "k", "v") else a[3]) for n, a in args.items()}      # orientation (True, True)
    with jax.enable_x64(True):
        want = naive_readout(**{n: (a if n in ("q", "k", "v") else a[None]).astype(jnp.float64)
                                for n, a in one.items()}, orientations=(FOUR[3],))
    for segment_size in (None, 1, 6):
        got = scans.plstm_grid_scan(**one, reverse=FOUR[3], segment_size=segment_size)
        assert got.dtype == jnp.float32
        assert_close(got, want, rtol=1e-5, name=f"segment_size={segment_size}")


def test_plstm_grid_scan_rejects_bad_arguments():
    args = make_plstm_inputs((1, 3, 4), "P", dtype=jnp.float32)
    with pytest.raises(ValueError, match="segment_size"):
        scans.plstm_grid_scan(**args, reverse=FOUR, segment_size=0)
    with pytest.raises(ValueError, match="source_d"):                      # gates need the orientation axis
        scans.plstm_grid_scan(**dict(args, source_d=args["source_d"][0]), reverse=FOUR)
    with pytest.raises(ValueError, match="reverse"):
        scans.plstm_grid_scan(**args, reverse=((False, False, True),) * 4)
