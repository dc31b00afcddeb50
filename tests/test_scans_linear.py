"""linear_scan: every method equals the plain-loop reference, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqmodels import scans
from seqmodels.scans import reference
from helpers import assert_close, outputs_and_grads

METHODS = ["sequential", "associative", "chunked"]


def make_inputs(key, batch, length, feat, a_shape="full", dtype=jnp.float32, complex_=False):
    ka, kb, kh, kr, ki = jax.random.split(key, 5)
    full = (batch, length) + feat
    shape = {"full": full, "head": (batch, length) + feat[:-1] + (1,), "static": feat}[a_shape]
    a = jax.random.uniform(ka, shape, dtype, minval=0.6, maxval=0.999)
    b = jax.random.normal(kb, full, dtype)
    h0 = jax.random.normal(kh, (batch,) + feat, dtype)
    if complex_:
        phase = jax.random.uniform(ki, shape, dtype, maxval=2 * np.pi)
        a = a * jnp.exp(1j * phase)
        b = b + 1j * jax.random.normal(ki, full, dtype)
        h0 = h0 + 0j
    reset = jax.random.bernoulli(kr, 0.1, (batch, length))
    return a, b, h0, reset


def check_against_reference(a, b, h0, reset, method, reverse, chunk_size=None, rtol=None):
    kwargs = dict(reverse=reverse, reset=reset)
    fast = lambda a, b, h0: scans.linear_scan(a, b, h0, method=method, chunk_size=chunk_size, **kwargs)
    slow = lambda a, b, h0: reference.linear_scan(a, b, h0, **kwargs)
    out, vjp = jax.vjp(fast, a, b, h0)
    ref_out, ref_vjp = jax.vjp(slow, a, b, h0)
    assert_close(out, ref_out, rtol, "outputs")
    cot = jax.tree.map(lambda o: jax.random.normal(jax.random.PRNGKey(7), o.shape, o.dtype), out)
    assert_close(vjp(cot), ref_vjp(cot), rtol, "gradients")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("length", [1, 7, 63, 1000])
@pytest.mark.parametrize("reverse", [False, True])
def test_float32(method, length, reverse):
    a, b, h0, reset = make_inputs(jax.random.PRNGKey(length), 2, length, (5,))
    check_against_reference(a, b, h0, reset, method, reverse, chunk_size=24)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("a_shape", ["full", "head", "static"])
@pytest.mark.parametrize("length", [7, 63])
def test_float64_decay_shapes(x64, method, a_shape, length):
    a, b, h0, reset = make_inputs(jax.random.PRNGKey(1), 2, length, (3, 4), a_shape, jnp.float64)
    check_against_reference(a, b, h0, reset, method, False, chunk_size=10)
    check_against_reference(a, b, h0, None, method, True, chunk_size=10)


@pytest.mark.parametrize("method", METHODS)
def test_complex(method):
    a, b, h0, reset = make_inputs(jax.random.PRNGKey(2), 2, 63, (6,), complex_=True)
    check_against_reference(a, b, h0, reset, method, False, chunk_size=16)


@pytest.mark.parametrize("method", METHODS)
def test_float64_long(x64, method):
    a, b, h0, reset = make_inputs(jax.random.PRNGKey(3), 1, 1000, (4,), dtype=jnp.float64)
    check_against_reference(a, b, h0, reset, method, True, chunk_size=64)


@settings(max_examples=8, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 80), feat=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       a_shape=st.sampled_from(["full", "head", "static"]), method=st.sampled_from(METHODS),
       chunk=st.integers(1, 33), reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_random_shapes(batch, length, feat, a_shape, method, chunk, reverse, seed):
    a, b, h0, reset = make_inputs(jax.random.PRNGKey(seed), batch, length, tuple(feat), a_shape)
    check_against_reference(a, b, h0, reset, method, reverse, chunk_size=chunk)


@pytest.mark.parametrize("method", METHODS)
def test_jit_and_vmap(method):
    a, b, h0, _ = make_inputs(jax.random.PRNGKey(4), 2, 31, (3,))
    f = jax.jit(lambda a, b, h0: scans.linear_scan(a, b, h0, method=method, chunk_size=8))
    batched = jax.vmap(f)(jnp.stack([a, 0.5 * a]), jnp.stack([b, -b]), jnp.stack([h0, h0]))
    for i, scale in enumerate([1.0, 0.5]):
        one = f(scale * a, b if i == 0 else -b, h0)
        assert_close(jax.tree.map(lambda x: x[i], batched), one)


@pytest.mark.parametrize("method", METHODS)
def test_no_overflow_on_long_slow_decay(method):
    # exp(-cumsum(log a)) passes float32's max (e^88) near t = 8.8k for a = 0.99.
    a = jnp.full((1, 10_000, 2), 0.99)
    b = jnp.ones((1, 10_000, 2))
    h, h_last = scans.linear_scan(a, b, method=method, chunk_size=64)
    assert bool(jnp.all(jnp.isfinite(h)))
    np.testing.assert_allclose(h_last, 100.0, rtol=1e-4)


def test_reset_splits_packed_sequences():
    a, b, h0, _ = make_inputs(jax.random.PRNGKey(5), 1, 20, (3,))
    reset = jnp.zeros((1, 20), bool).at[0, 12].set(True)
    h, _ = scans.linear_scan(a, b, h0, reset=reset)
    h_second, _ = scans.linear_scan(a[:, 12:], b[:, 12:])
    np.testing.assert_allclose(h[:, 12:], h_second, rtol=1e-6)


def test_state_carries_across_calls():
    a, b, h0, _ = make_inputs(jax.random.PRNGKey(6), 2, 40, (3,))
    full, last = scans.linear_scan(a, b, h0)
    first, mid = scans.linear_scan(a[:, :17], b[:, :17], h0)
    second, last2 = scans.linear_scan(a[:, 17:], b[:, 17:], mid)
    assert_close(jnp.concatenate([first, second], 1), full)
    assert_close(last2, last)


def test_bfloat16_returns_bfloat16_with_float32_state():
    a, b, h0, _ = make_inputs(jax.random.PRNGKey(8), 2, 30, (3,))
    h, last = scans.linear_scan(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    assert h.dtype == jnp.bfloat16 and last.dtype == jnp.float32


def test_bad_arguments_are_named():
    b = jnp.ones((2, 5, 3))
    with pytest.raises(ValueError, match="a with shape .* must broadcast to b's shape"):
        scans.linear_scan(jnp.ones((2, 5, 4)), b)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 3\); got \(2, 5, 3\)"):
        scans.linear_scan(jnp.ones(3), b, b)
    with pytest.raises(ValueError, match=r"reset must have shape \(2, 5\)"):
        scans.linear_scan(jnp.ones(3), b, reset=jnp.zeros((5,), bool))
    with pytest.raises(ValueError, match="reset must have dtype bool"):
        scans.linear_scan(jnp.ones(3), b, reset=jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match="method must be one of"):
        scans.linear_scan(jnp.ones(3), b, method="fast")
    with pytest.raises(ValueError, match="b must have a floating"):
        scans.linear_scan(jnp.ones(3), jnp.ones((2, 5, 3), jnp.int32))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        scans.linear_scan(jnp.ones(3), b, method="chunked", chunk_size=0)


# diagonal_ssm: linear_scan of B̄ u with a time-invariant Ā, read out by C inside the scan.


def diagonal_ssm_reference(A_bar, B_bar, C, u, h0, reverse=False):
    h, h_last = reference.linear_scan(A_bar, B_bar[None, None] * u[..., None], h0, reverse=reverse)
    return jnp.einsum("blhm,hm->blh", h, C).real, h_last


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reverse", [False, True])
def test_diagonal_ssm_matches_reference_float64(x64, method, reverse):
    H, M = 3, 4
    keys = jax.random.split(jax.random.key(30), 6)
    cnormal = lambda k, shape: jax.random.normal(k, shape + (2,), jnp.float64) @ jnp.asarray([1.0, 1j])
    A_bar = jax.random.uniform(keys[0], (H, M), jnp.float64, 0.5, 0.99) * jnp.exp(
        1j * jax.random.uniform(keys[1], (H, M), jnp.float64, 0, 3))
    B_bar, C, h0 = cnormal(keys[2], (H, M)), cnormal(keys[3], (H, M)), cnormal(keys[4], (2, H, M))
    u = jax.random.normal(keys[5], (2, 37, H), jnp.float64)
    fast = lambda *a: scans.diagonal_ssm(*a, reverse=reverse, method=method)
    slow = lambda *a: diagonal_ssm_reference(*a, reverse=reverse)
    (got, got_grads), (expected, expected_grads) = outputs_and_grads([fast, slow], (A_bar, B_bar, C, u, h0))
    assert got[0].dtype == jnp.float64 and got[1].dtype == jnp.complex128
    assert_close(got, expected, 1e-10, f"{method} outputs")
    assert_close(got_grads, expected_grads, 1e-9, f"{method} gradients")


def test_diagonal_ssm_real_coefficients_float32_and_bad_arguments():
    A_bar = jnp.asarray([[0.9, 0.5], [0.7, -0.3]], jnp.float32)
    B_bar, C = jnp.ones((2, 2), jnp.float32), jnp.asarray([[1.0, -2.0], [0.5, 3.0]], jnp.float32)
    u = jax.random.normal(jax.random.key(31), (3, 9, 2))
    y, h = scans.diagonal_ssm(A_bar, B_bar, C, u)
    y_ref, h_ref = diagonal_ssm_reference(A_bar, B_bar, C, u, None)
    assert y.dtype == jnp.float32 and h.dtype == jnp.float32
    assert_close((y, h), (y_ref, h_ref), 1e-5)
    with pytest.raises(ValueError, match=r"C must have shape \(2, 2\)"):
        scans.diagonal_ssm(A_bar, B_bar, C[:, :1], u)
    with pytest.raises(ValueError, match=r"u must have shape \(\*, \*, 2\)"):
        scans.diagonal_ssm(A_bar, B_bar, C, u[..., :1])
    with pytest.raises(ValueError, match="method must be one of"):
        scans.diagonal_ssm(A_bar, B_bar, C, u, method="fft")
