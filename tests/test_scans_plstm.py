"""``scans.plstm_scan`` against ``reference.plstm_scan``: outputs, final state and the
gradient of every input (initial state included), for each method, odd lengths not
divisible by the chunk, singular transitions, float32 and float64; the doubling inside a chunk against the
gating matrix written out; bounded memory of the chunked gradient; argument errors."""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_close, outputs_and_grads
from seqmodels.scans import plstm_scan, reference

# The function shadows its module as an attribute of seqmodels.scans.
plstm_module = importlib.import_module("seqmodels.scans.plstm")

METHODS = ("sequential", "chunked")


def make_inputs(seed, B, L, H, Dk, Dv, N, dtype=jnp.float32, with_state=True):
    """``(q, k, v, source, transition, mark, direct, initial_state)``; gates in (0, 1),
    transitions random dense matrices, zero at step 3 and of rank one at step 9 (where
    those exist): the chunked form only multiplies, it must never divide."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(size=shape)                                   # noqa: E731
    transition = normal(B, L, H, N, N) * (0.6 / np.sqrt(N))
    transition[:, 3:4] = 0.0
    transition[:, 9:10] = transition[:, 9:10, ..., :, :1] * transition[:, 9:10, ..., :1, :]   # column ⊗ row
    arrays = (normal(B, L, H, Dk), normal(B, L, H, Dk), normal(B, L, H, Dv), rng.uniform(size=(B, L, H, N)),
              transition, rng.uniform(size=(B, L, H, N)), rng.uniform(size=(B, L, H)),
              normal(B, H, Dk, Dv, N) if with_state else None)
    return tuple(None if x is None else jnp.asarray(x, dtype) for x in arrays)


def check_all_methods(inputs, chunk_size, rtol=None, methods=METHODS):
    """Outputs and the vjp of one random cotangent w.r.t. every non-None input, for the
    reference and each method, compiled together (one compilation per case)."""
    fns = [reference.plstm_scan] + [functools.partial(plstm_scan, method=m, chunk_size=chunk_size) for m in methods]
    (expected_out, expected_grads), *actual = outputs_and_grads(fns, inputs)
    assert float(jnp.max(jnp.abs(expected_out[0]))) > 0 and len(expected_grads) == sum(x is not None for x in inputs)
    for method, (out, grads) in zip(methods, actual):
        assert_close(out, expected_out, rtol, name=f"{method} (h, C_last)")
        assert_close(grads, expected_grads, rtol, name=f"{method} grads")


@pytest.mark.parametrize("L, chunk_size, N, with_state", [
    (37, 8, 3, True),     # 5 chunks, the last one padded
    (50, 64, 1, False),   # N = 1 (scalar transitions); one chunk of 64 for 50 steps
    (13, 1, 2, True),     # chunks of one step: no doubling at all
])
def test_matches_reference_float32(L, chunk_size, N, with_state):
    check_all_methods(make_inputs(0, B=2, L=L, H=2, Dk=3, Dv=5, N=N, with_state=with_state), chunk_size)


@pytest.mark.parametrize("L, chunk_size", [(37, 8)])
def test_matches_reference_float64(x64, L, chunk_size):
    inputs = make_inputs(2, B=2, L=L, H=2, Dk=3, Dv=4, N=3, dtype=jnp.float64)
    check_all_methods(inputs, chunk_size, rtol=1e-10)
    for method in METHODS:
        out = jax.eval_shape(functools.partial(plstm_scan, method=method, chunk_size=chunk_size), *inputs)
        assert [x.dtype for x in out] == [jnp.float64, jnp.float64]


def test_long_sequence_with_contractive_transitions():
    """400 steps, states carried across many chunks by slowly decaying rotations."""
    inputs = list(make_inputs(3, B=1, L=400, H=1, Dk=4, Dv=3, N=2))
    angle = np.random.default_rng(4).uniform(-0.3, 0.3, size=(1, 400, 1))
    rotation = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    inputs[4] = jnp.asarray(0.999 * rotation, jnp.float32)
    check_all_methods(tuple(inputs), chunk_size=64)


def test_chunk_gating_equals_the_gating_matrix_written_out(x64):
    """``G[a, b] = M_a T_{a-1} ⋯ T_{b+1} S_b`` (b < a) and the carried sources and marks,
    from explicit loops over one chunk of 8 steps."""
    c, N = 8, 3
    rng = np.random.default_rng(6)
    S, M, T = rng.uniform(size=(c, N)), rng.uniform(size=(c, N)), rng.normal(size=(c, N, N))
    T_total, S_out, M_in, G = plstm_module.chunk_gating(jnp.asarray(S), jnp.asarray(T), jnp.asarray(M))

    def product(stop, start):  # T_{stop-1} ⋯ T_start (identity if empty)
        P = np.eye(N)
        for t in range(start, stop):
            P = T[t] @ P
        return P

    expected_G = np.zeros((c, c))
    for a in range(c):
        for b in range(a):
            expected_G[a, b] = M[a] @ product(a, b + 1) @ S[b]
    assert_close(G, expected_G, name="G")
    assert_close(T_total, product(c, 0), name="T_total")
    assert_close(S_out, np.stack([product(c, b + 1) @ S[b] for b in range(c)]), name="S_out")
    assert_close(M_in, np.stack([M[a] @ product(a, 0) for a in range(c)]), name="M_in")


def test_zero_length_returns_initial_state():
    inputs = make_inputs(7, B=2, L=0, H=1, Dk=3, Dv=2, N=2)
    for method in METHODS:
        h, C = plstm_scan(*inputs, method=method)
        assert h.shape == (2, 0, 1, 2)
        np.testing.assert_array_equal(C, inputs[-1])


def test_low_precision_inputs_return_their_dtype():
    inputs = make_inputs(8, B=1, L=30, H=2, Dk=4, Dv=4, N=2, dtype=jnp.bfloat16)
    expected = reference.plstm_scan(*inputs)  # float32 accumulation
    for method in ("auto",) + METHODS:
        h, C = jax.jit(functools.partial(plstm_scan, method=method, chunk_size=8))(*inputs)
        assert h.dtype == jnp.bfloat16 and C.dtype == jnp.float32
        assert_close((h, C), expected, rtol=2e-2)


def test_chunked_gradient_keeps_one_state_per_chunk():
    """The compiled gradient's temporaries stay far below the per-step state history
    ``L·Dk·Dv·N`` floats that a differentiated sequential scan keeps (16 MiB here)."""
    B, L, H, Dk, Dv, N = 1, 4096, 1, 16, 16, 4
    inputs = make_inputs(9, B, L, H, Dk, Dv, N)
    history_bytes = B * L * H * Dk * Dv * N * 4

    def temp_bytes(method):
        loss = lambda *xs: jnp.sum(plstm_scan(*xs, method=method)[0])  # noqa: E731
        compiled = jax.jit(jax.grad(loss, argnums=tuple(range(8)))).lower(*inputs).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes("chunked") < history_bytes / 4
    assert temp_bytes("sequential") > history_bytes  # the check can tell the two apart


@pytest.mark.parametrize("change, match", [
    ({"k": (2, 5, 2, 4)}, r"k must have shape \(2, 5, 2, 3\)"),
    ({"source": (2, 5, 2)}, "source must have rank 4"),
    ({"transition": (2, 5, 2, 2, 3)}, r"transition must have shape \(2, 5, 2, 2, 2\)"),
    ({"mark": (2, 5, 2, 3)}, r"mark must have shape \(2, 5, 2, 2\)"),
    ({"direct": (2, 5, 2, 1)}, r"direct must have shape \(2, 5, 2\)"),
    ({"initial_state": (2, 2, 3, 4, 3)}, r"initial_state must have shape \(2, 2, 3, 4, 2\)"),
])
def test_bad_shapes_raise_naming_the_argument(change, match):
    names = ("q", "k", "v", "source", "transition", "mark", "direct", "initial_state")
    arrays = dict(zip(names, make_inputs(10, B=2, L=5, H=2, Dk=3, Dv=4, N=2)))
    (name, shape), = change.items()
    arrays[name] = jnp.zeros(shape)
    with pytest.raises(ValueError, match=match):
        plstm_scan(**arrays)


@pytest.mark.parametrize("options, match", [
    ({"method": "associative"}, "method must be one of"),
    ({"chunk_size": 12}, "chunk_size must be a positive power of two; got 12"),
    ({"chunk_size": 0}, "chunk_size"),
])
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        plstm_scan(*make_inputs(11, B=1, L=4, H=1, Dk=2, Dv=2, N=1), **options)


def test_integer_inputs_raise():
    inputs = list(make_inputs(12, B=1, L=4, H=1, Dk=2, Dv=2, N=1))
    inputs[3] = jnp.ones((1, 4, 1, 1), jnp.int32)
    with pytest.raises(ValueError, match="source must have a floating dtype"):
        plstm_scan(*inputs)
