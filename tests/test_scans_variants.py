"""The public scans give the same results traced under ``jax.jit`` and run eagerly.

``chex.variants`` runs each test twice, once with the function wrapped in ``jax.jit``
and once without; ``chex.assert_trees_all_close`` compares the whole
``(outputs, final_state)`` tree with the plain-loop reference. Odd lengths (13) with
chunk sizes that do not divide them exercise the padded last chunk. Also: the jaxtyping
annotations of the public signatures resolve.
"""

from __future__ import annotations

import functools
import typing

import chex
import jax
import jax.numpy as jnp

from seqmodels import scans
from seqmodels.layers.base import Mixer
from seqmodels.scans import reference

B, L, H, DK, DV = 2, 13, 3, 4, 5
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
PUBLIC_SCANS = ("linear_scan", "matrix_scan", "linear_attention", "softmax_scan", "delta_rule",
                "grid_scan", "plstm_grid_scan", "fft_conv", "nonlinear_scan")


def normals(seed: int, *shapes):
    return [jax.random.normal(key, shape) for key, shape in zip(jax.random.split(jax.random.key(seed), len(shapes)), shapes)]


class ScansJitAndEager(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_linear_scan_reverse(self):
        b, h0, logits = normals(0, (B, L, DV), (B, DV), (B, L, DV))
        a = jax.nn.sigmoid(logits)
        scan = self.variant(functools.partial(scans.linear_scan, reverse=True, method="chunked", chunk_size=4))
        chex.assert_trees_all_close(scan(a, b, h0), reference.linear_scan(a, b, h0, reverse=True), **TOLERANCE)

    @chex.variants(with_jit=True, without_jit=True)
    def test_linear_scan_gradients(self):
        b, h0, logits = normals(1, (B, L, DV), (B, DV), (B, L, DV))

        def loss(scan, logits, b, h0):
            h, h_last = scan(jax.nn.sigmoid(logits), b, h0)
            return jnp.sum(h ** 2) + jnp.sum(h_last)

        fast = functools.partial(scans.linear_scan, method="associative")
        gradients = self.variant(jax.grad(functools.partial(loss, fast), argnums=(0, 1, 2)))
        expected = jax.grad(functools.partial(loss, reference.linear_scan), argnums=(0, 1, 2))(logits, b, h0)
        chex.assert_trees_all_close(gradients(logits, b, h0), expected, **TOLERANCE)

    @chex.variants(with_jit=True, without_jit=True)
    def test_linear_attention(self):
        q, k, v, s0, g = normals(2, (B, L, H, DK), (B, L, H, DK), (B, L, H, DV), (B, H, DK, DV), (B, L, H))
        log_decay = -jax.nn.softplus(g)
        scan = self.variant(functools.partial(scans.linear_attention, method="chunked", chunk_size=4))
        chex.assert_trees_all_close(scan(q, k, v, log_decay, s0),
                                    reference.linear_attention(q, k, v, log_decay, s0), **TOLERANCE)

    @chex.variants(with_jit=True, without_jit=True)
    def test_delta_rule_two_householder_steps(self):
        q, raw_k, v, raw_beta = normals(4, (B, L, H, DK), (B, L, H, 2, DK), (B, L, H, 2, DV), (B, L, H, 2))
        k = raw_k / jnp.linalg.norm(raw_k, axis=-1, keepdims=True)
        beta = 2 * jax.nn.sigmoid(raw_beta)  # (0, 2): negative eigenvalues allowed
        scan = self.variant(functools.partial(scans.delta_rule, method="chunked", chunk_size=6))
        chex.assert_trees_all_close(scan(q, k, v, beta), reference.delta_rule(q, k, v, beta), **TOLERANCE)


def test_public_signatures_resolve():
    """The shape annotations are valid jaxtyping (type checkers and ``get_type_hints`` read them)."""
    for name in PUBLIC_SCANS:
        assert "return" in typing.get_type_hints(getattr(scans, name)), name
    for method in (Mixer.__call__, Mixer.step):
        assert "return" in typing.get_type_hints(method), method.__name__
