"""fft_conv: equals the direct convolution of the reference, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqmodels import scans
from seqmodels.scans import reference
from seqmodels.scans.conv import _fast_fft_size
from helpers import assert_close


def make_inputs(seed, batch, length, taps, feat=(3,), kernel_batch=False, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(batch, length) + feat)
    kernel = rng.normal(size=((batch,) if kernel_batch else ()) + (taps,) + feat)
    return jnp.asarray(u, dtype), jnp.asarray(kernel, dtype)


def value_and_vjp(f, *args):
    """``f(*args)`` and its VJP with a random cotangent, compiled as one program."""
    out_shape = jax.eval_shape(f, *args)
    cot = jnp.asarray(np.random.default_rng(7).normal(size=out_shape.shape), out_shape.dtype)

    def run(args, cot):
        out, vjp = jax.vjp(f, *args)
        return out, vjp(cot)

    return jax.jit(run)(args, cot)


def check_against_reference(u, kernel, causal, rtol=None):
    """Output and the gradients of u and kernel vs the direct convolution."""
    out, grads = value_and_vjp(lambda u, k: scans.fft_conv(u, k, causal=causal), u, kernel)
    ref_out, ref_grads = value_and_vjp(lambda u, k: reference.fft_conv(u, k, causal=causal), u, kernel)
    assert out.dtype == ref_out.dtype
    assert_close(out, ref_out, rtol, "outputs")
    assert_close(grads, ref_grads, rtol, "gradients")


# (L, K): kernels shorter and longer than the sequence; odd K so both modes apply.
CASES = [(1, 1), (1, 5), (7, 3), (7, 9), (63, 5), (63, 71), (1000, 33)]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length, taps", CASES)
def test_float32(length, taps, causal):
    u, kernel = make_inputs(length + taps, 2, length, taps)
    check_against_reference(u, kernel, causal)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length, taps", [(63, 21), (15, 25)])
def test_float64(x64, length, taps, causal):
    u, kernel = make_inputs(taps, 2, length, taps, feat=(2, 3), dtype=jnp.float64)
    check_against_reference(u, kernel, causal)


@pytest.mark.parametrize("causal", [True, False])
def test_per_batch_kernels(causal):
    u, kernel = make_inputs(3, 3, 20, 7, kernel_batch=True)
    check_against_reference(u, kernel, causal)


def test_trailing_axes_broadcast():
    u, kernel = make_inputs(4, 2, 15, 5, feat=(4, 1))
    check_against_reference(u, kernel[..., 0, :].reshape(5, 1, 1), causal=True)  # one kernel for all
    check_against_reference(u, jnp.broadcast_to(kernel, (5, 4, 3)), causal=False)  # u broadcasts


def test_complex():
    u, kernel = make_inputs(5, 2, 30, 11)
    rng = np.random.default_rng(1)
    u = u + 1j * jnp.asarray(rng.normal(size=u.shape), jnp.float32)
    check_against_reference(u, kernel.astype(jnp.complex64), causal=True)


@pytest.mark.parametrize("causal", [True, False])
def test_long_kernel_long_sequence(x64, causal):
    # K > L at L = 1000 against numpy's direct convolution (the loop reference is slow here).
    u, kernel = make_inputs(6, 1, 1000, 1501, feat=(2,), dtype=jnp.float64)
    y = jax.jit(lambda u, k: scans.fft_conv(u, k, causal=causal))(u, kernel)
    u_np, k_np = np.asarray(u), np.asarray(kernel)
    full = np.stack([np.convolve(u_np[0, :, d], k_np[:, d]) for d in range(2)], -1)[None]
    start = 0 if causal else (1501 - 1) // 2
    assert_close(y, full[:, start : start + 1000])


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 24), half_taps=st.integers(0, 8),
       feat=st.lists(st.integers(1, 3), max_size=2), kernel_batch=st.booleans(), causal=st.booleans(),
       seed=st.integers(0, 2**16))
def test_random_shapes(batch, length, half_taps, feat, kernel_batch, causal, seed):
    u, kernel = make_inputs(seed, batch, length, 2 * half_taps + 1, tuple(feat), kernel_batch)
    check_against_reference(u, kernel, causal)


def test_jit_and_vmap():
    u, kernel = make_inputs(8, 2, 30, 9)
    f = jax.jit(lambda u, k: scans.fft_conv(u, k, causal=False))
    batched = jax.vmap(f)(jnp.stack([u, -u]), jnp.stack([kernel, 2 * kernel]))
    assert_close(batched[0], f(u, kernel))
    assert_close(batched[1], f(-u, 2 * kernel))


def test_dtypes(x64):
    u, kernel = make_inputs(9, 2, 10, 3)
    assert scans.fft_conv(u.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    assert scans.fft_conv(u, kernel.astype(jnp.float64)).dtype == jnp.float64


def test_fast_fft_size_is_the_smallest_5_smooth_bound():
    def smooth(n):
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in range(1, 2000):
        m = _fast_fft_size(n)
        assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m)), n


def test_bad_arguments_are_named():
    u, kernel = make_inputs(10, 2, 10, 4)
    with pytest.raises(ValueError, match="a non-causal kernel needs an odd length K; got K = 4"):
        scans.fft_conv(u, kernel, causal=False)
    with pytest.raises(ValueError, match=r"kernel must have rank 2 or 3"):
        scans.fft_conv(u, kernel[:, 0])
    with pytest.raises(ValueError, match=r"kernel with a batch axis must have shape \(2, K, ...\)"):
        scans.fft_conv(u, jnp.ones((3, 4, 3)))
    with pytest.raises(ValueError, match=r"kernel's trailing axes \(4,\) must broadcast against u's \(3,\)"):
        scans.fft_conv(u, jnp.ones((5, 4)))
    with pytest.raises(ValueError, match="kernel must have at least one tap"):
        scans.fft_conv(u, jnp.ones((0, 3)))
    with pytest.raises(ValueError, match="u must have rank at least 2"):
        scans.fft_conv(u[0, 0], kernel[:, 0])
    with pytest.raises(ValueError, match="u must have a floating"):
        scans.fft_conv(u.astype(jnp.int32), kernel)
