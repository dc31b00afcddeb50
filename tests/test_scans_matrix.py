"""matrix_scan: every method equals the plain-loop reference, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqmodels import scans
from seqmodels.scans import reference
from helpers import assert_close

METHODS = ["sequential", "associative", "chunked"]
A_SHAPES = ["full", "static", "batch", "shared"]


def make_inputs(seed, batch, length, feat, n, a_shape="full", dtype=jnp.float32, complex_=False):
    """Random ``A`` with spectral norm ≤ 0.97 (so long scans stay bounded), ``b`` and ``h0``."""
    rng = np.random.default_rng(seed)
    lead = {
        "full": (batch, length) + feat,
        "static": (),  # (N, N): one matrix for every step, batch and feature
        "batch": (batch, 1) + feat,  # time-invariant, per batch element
        "shared": (length,) + feat,  # per step, shared over the batch
    }[a_shape]
    M = rng.normal(size=lead + (n, n))
    if complex_:
        M = M + 1j * rng.normal(size=M.shape)
    scale = rng.uniform(0.5, 0.97, size=lead + (1, 1)) / np.linalg.norm(M, ord=2, axis=(-2, -1))[..., None, None]
    A = M * scale
    b = rng.normal(size=(batch, length) + feat + (n,))
    h0 = rng.normal(size=(batch,) + feat + (n,))
    if complex_:
        b, h0 = b + 1j * rng.normal(size=b.shape), h0 + 1j * rng.normal(size=h0.shape)
    return tuple(jnp.asarray(x, dtype) for x in (A, b, h0))


def value_and_vjp(f, *args):
    """``f(*args)`` and its VJP with a random cotangent, compiled as one program."""
    out_shapes = jax.eval_shape(f, *args)
    rng = np.random.default_rng(7)
    cot = jax.tree.map(lambda o: jnp.asarray(rng.normal(size=o.shape), o.dtype), out_shapes)

    def run(args, cot):
        out, vjp = jax.vjp(f, *args)
        return out, vjp(cot)

    return jax.jit(run)(args, cot)


def check_against_reference(A, b, h0, reverse, methods=METHODS, chunk_size=None, rtol=None):
    """Outputs, final state and the gradients of A, b, h0 of each method vs the reference."""
    ref = value_and_vjp(lambda A, b, h0: reference.matrix_scan(A, b, h0, reverse=reverse), A, b, h0)
    for method in methods:
        fast = lambda A, b, h0: scans.matrix_scan(A, b, h0, reverse=reverse, method=method, chunk_size=chunk_size)
        out, grads = value_and_vjp(fast, A, b, h0)
        assert_close(out, ref[0], rtol, f"{method} outputs")
        assert_close(grads, ref[1], rtol, f"{method} gradients")


@pytest.mark.parametrize("length, reverse", [(1, False), (7, True), (63, False), (1000, True)])
def test_float32(length, reverse):
    A, b, h0 = make_inputs(length, 2, length, (), 3)
    check_against_reference(A, b, h0, reverse, chunk_size=24 if length == 1000 else 6)


@pytest.mark.parametrize("length, reverse", [(63, True), (1000, False)])
def test_float64(x64, length, reverse):
    A, b, h0 = make_inputs(length, 1, length, (), 3, dtype=jnp.float64)
    # The associative form at L = 1000 compiles for seconds; float32 covers it.
    methods = ["sequential", "chunked"] if length == 1000 else METHODS
    check_against_reference(A, b, h0, reverse, methods, chunk_size=10 if length < 1000 else 64)


@pytest.mark.parametrize("a_shape", A_SHAPES)
def test_float64_transition_shapes(x64, a_shape):
    A, b, h0 = make_inputs(1, 2, 7, (2,), 4, a_shape, jnp.float64)
    check_against_reference(A, b, h0, a_shape in ("full", "shared"), chunk_size=3)


def test_complex():
    A, b, h0 = make_inputs(2, 2, 7, (), 3, complex_=True, dtype=jnp.complex64)
    check_against_reference(A, b, h0, False, chunk_size=4)


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 16), feat=st.lists(st.integers(1, 3), max_size=1),
       n=st.integers(1, 4), a_shape=st.sampled_from(A_SHAPES), method=st.sampled_from(METHODS),
       chunk=st.integers(1, 17), reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_random_shapes(batch, length, feat, n, a_shape, method, chunk, reverse, seed):
    A, b, h0 = make_inputs(seed, batch, length, tuple(feat), n, a_shape)
    check_against_reference(A, b, h0, reverse, [method], chunk_size=chunk)


@pytest.mark.parametrize("method", METHODS)
def test_jit_and_vmap(method):
    A, b, h0 = make_inputs(4, 2, 31, (), 3)
    f = jax.jit(lambda A, b, h0: scans.matrix_scan(A, b, h0, method=method, chunk_size=8))
    batched = jax.vmap(f)(jnp.stack([A, 0.5 * A]), jnp.stack([b, -b]), jnp.stack([h0, 2 * h0]))
    for i, (A_i, b_i, h0_i) in enumerate([(A, b, h0), (0.5 * A, -b, 2 * h0)]):
        assert_close(jax.tree.map(lambda x: x[i], batched), f(A_i, b_i, h0_i))


@pytest.mark.parametrize("method", METHODS)
def test_state_carries_across_calls(method):
    A, b, h0 = make_inputs(6, 2, 40, (), 3)
    run = lambda A, b, h0: scans.matrix_scan(A, b, h0, method=method, chunk_size=7)

    @jax.jit
    def whole_and_split(A, b, h0):
        first, mid = run(A[:, :20], b[:, :20], h0)
        return run(A, b, h0), (first,) + run(A[:, 20:], b[:, 20:], mid)

    (full, last), (first, second, last2) = whole_and_split(A, b, h0)
    assert_close(jnp.concatenate([first, second], 1), full)
    assert_close(last2, last)


def test_zero_initial_state_by_default():
    A, b, _ = make_inputs(8, 2, 9, (), 3)
    assert_close(scans.matrix_scan(A, b), reference.matrix_scan(A, b, jnp.zeros((2, 3))))


def test_bfloat16_returns_bfloat16_with_float32_state():
    A, b, _ = make_inputs(9, 2, 30, (), 3)
    h, last = scans.matrix_scan(A.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    assert h.dtype == jnp.bfloat16 and last.dtype == jnp.float32


def test_bad_arguments_are_named():
    b = jnp.ones((2, 5, 3))
    eye = jnp.eye(3)
    with pytest.raises(ValueError, match=r"b must have rank at least 3"):
        scans.matrix_scan(eye, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"A must end in a square \(3, 3\) matrix"):
        scans.matrix_scan(jnp.ones((3, 4)), b)
    with pytest.raises(ValueError, match=r"A with shape \(4, 3, 3\) must broadcast to b.shape \+ \(N,\)"):
        scans.matrix_scan(jnp.ones((4, 3, 3)), b)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 3\); got \(2, 5, 3\)"):
        scans.matrix_scan(eye, b, b)
    with pytest.raises(ValueError, match="method must be one of"):
        scans.matrix_scan(eye, b, method="fast")
    with pytest.raises(ValueError, match="b must have a floating"):
        scans.matrix_scan(eye, jnp.ones((2, 5, 3), jnp.int32))
    with pytest.raises(ValueError, match="A must have a floating"):
        scans.matrix_scan(jnp.eye(3, dtype=jnp.int32), b)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        scans.matrix_scan(eye, b, method="chunked", chunk_size=0)
