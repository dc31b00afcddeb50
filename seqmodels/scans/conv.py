"""Long convolution along time by FFT.

The convolution mode of S4 ("Efficiently Modeling Long Sequences with Structured State
Spaces", Gu et al., 2022, eq. 4-5, ``y = K̄ * u``) and of the LSSL: a kernel as long as
the sequence, applied in O(n log n) by the convolution theorem.

* causal: ``y_t = Σ_{j=0}^{min(t, K-1)} k_j u_{t-j}``;
* non-causal (odd K, centre ``c = (K-1)/2``): ``y_t = Σ_j k_j u_{t-j+c}`` with zero
  padding -- numpy's ``convolve(u, k, mode="same")``.

Both are windows of the full linear convolution ``(u * k)_s``, ``s = 0 … L+K-2``:
``y_t = (u * k)_t`` (causal) and ``y_t = (u * k)_{t+c}`` (non-causal). The FFT computes a
*circular* convolution of length ``n``; zero padding to ``n ≥ L + K - 1`` makes it equal
the linear one (no wrap-around), and ``n`` is rounded up to a 5-smooth size, which every
FFT library handles fast. Taps that can never reach an output (causal ``j ≥ L``,
non-causal ``|j - c| ≥ L``) are dropped first, so ``n < 2L + 1`` whatever ``K`` is.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Inexact

from . import _checks


def fft_conv(u: Inexact[Array, "B L ..."], kernel: Inexact[Array, "K ..."] | Inexact[Array, "B K ..."], *,
             causal: bool = True) -> Inexact[Array, "B L ..."]:
    """Convolve ``u`` with ``kernel`` along axis 1.

    Args:
      u: inputs ``(B, L, ...)``.
      kernel: ``(K, ...)`` shared over the batch, or ``(B, K, ...)`` one per batch element;
        its trailing axes broadcast against ``u``'s. Non-causal kernels need odd ``K``.
      causal: causal (``y_t`` sees ``u_{≤t}``) or centred ("same") convolution.

    Returns:
      ``y``: ``(B, L, ...)`` (trailing axes broadcast), in ``u``'s dtype promoted with
      ``kernel``'s; the FFTs run in float32 or wider.
    """
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool (True or False); got {causal!r} ({type(causal).__name__})")
    _checks.check_floating("u", u, allow_complex=True)
    _checks.check_floating("kernel", kernel, allow_complex=True)
    _checks.check_min_ndim("u", u, 2, "(batch, length, ...)")
    _checks.check_ndim("kernel", kernel, (u.ndim - 1, u.ndim), "(K, ...) or (batch, K, ...)")
    if kernel.ndim == u.ndim - 1:
        kernel = kernel[None]
    B, L = u.shape[:2]
    K = kernel.shape[1]
    if kernel.shape[0] not in (1, B):
        raise ValueError(
            f"kernel with a batch axis must have shape ({B}, K, ...) to match u's batch {B}; "
            f"got {tuple(kernel.shape)}"
        )
    try:
        np.broadcast_shapes(u.shape[2:], kernel.shape[2:])
    except ValueError:
        raise ValueError(
            f"kernel's trailing axes {tuple(kernel.shape[2:])} must broadcast against u's "
            f"{tuple(u.shape[2:])} (u: {tuple(u.shape)}, kernel: {tuple(kernel.shape)})"
        ) from None
    if K == 0:
        raise ValueError(f"kernel must have at least one tap; got shape {tuple(kernel.shape)}")
    if not causal and K % 2 == 0:
        raise ValueError(f"a non-causal kernel needs an odd length K; got K = {K}")
    out_dtype = jnp.result_type(u, kernel)
    acc = _checks.accumulation_dtype(u, kernel)

    u = jnp.asarray(u, acc)
    kernel = jnp.asarray(kernel, acc)
    # Drop taps that never reach an output; `start` is where y begins in the full convolution.
    if causal:
        kernel = kernel[:, :L]
        start = 0
    else:
        c = (K - 1) // 2
        first = max(c - (L - 1), 0)
        kernel = kernel[:, first : c + L]
        start = c - first
    n = _fast_fft_size(L + kernel.shape[1] - 1)

    if jnp.issubdtype(acc, jnp.complexfloating):
        y = jnp.fft.ifft(jnp.fft.fft(u, n, axis=1) * jnp.fft.fft(kernel, n, axis=1), n, axis=1)
    else:
        y = jnp.fft.irfft(jnp.fft.rfft(u, n, axis=1) * jnp.fft.rfft(kernel, n, axis=1), n, axis=1)
    return y[:, start : start + L].astype(out_dtype)


def _fast_fft_size(n: int) -> int:
    """The smallest ``2^a 3^b 5^c ≥ n``."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best
