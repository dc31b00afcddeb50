"""Comparison helpers for tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Tolerances of the scan core against its references: relative to the largest
# magnitude of the expected array (elementwise relative error is meaningless near 0).
RTOL = {np.dtype("float32"): 1e-5, np.dtype("complex64"): 1e-5,
        np.dtype("float64"): 1e-10, np.dtype("complex128"): 1e-10}


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    actual = actual.astype(np.result_type(actual.dtype, np.float64))
    expected = expected.astype(np.result_type(expected.dtype, np.float64))
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    err = np.max(np.abs(actual - expected)) if expected.size else 0.0
    return float(err / scale) if scale > 0 else float(err)


def assert_close(actual, expected, rtol=None, name="value"):
    """Max abs error ≤ rtol · max|expected|, leaf by leaf; rtol defaults by dtype."""
    a_leaves, a_tree = jax.tree.flatten(actual)
    e_leaves, e_tree = jax.tree.flatten(expected)
    assert a_tree == e_tree, f"{name}: tree {a_tree} != expected {e_tree}"
    for i, (a, e) in enumerate(zip(a_leaves, e_leaves)):
        tol = rtol if rtol is not None else RTOL.get(np.dtype(jnp.result_type(e)), 1e-5)
        err = relative_error(a, e)
        assert np.all(np.isfinite(np.asarray(a))), f"{name}[{i}]: non-finite values"
        assert err <= tol, f"{name}[{i}]: relative error {err:.3g} > {tol:.3g}"


def outputs_and_grads(fns, inputs, seed=1):
    """For each of ``fns``: its outputs and the vjp of one random cotangent w.r.t. every
    non-None input (one compilation for all)."""
    present = [i for i, x in enumerate(inputs) if x is not None]

    def with_inputs(fn):
        def f(*xs):
            full = list(inputs)
            for i, x in zip(present, xs):
                full[i] = x
            return fn(*full)

        return f

    @jax.jit
    def run(*xs):
        results = []
        for fn in fns:
            out, vjp = jax.vjp(with_inputs(fn), *xs)
            keys = jax.random.split(jax.random.key(seed), len(out))
            ct = tuple(jax.random.normal(key, o.shape, o.dtype) for key, o in zip(keys, out))
            results.append((out, vjp(ct)))
        return results

    return run(*(inputs[i] for i in present))
