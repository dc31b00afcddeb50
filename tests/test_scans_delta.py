"""``scans.delta_rule`` against fla's reference vectors and ``loops.delta_rule``:
outputs, final state and the gradient of every input (initial state included), for
both methods, ``n_h ∈ {1, 2, 3}``, with and without the gate."""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqmodels.scans import delta_rule
from seqmodels.scans import reference as loops
from helpers import assert_close, outputs_and_grads

# The function shadows its module as an attribute of seqmodels.scans.
delta_module = importlib.import_module("seqmodels.scans.delta")

METHODS = ("sequential", "chunked")
F32_ATOL = 1e-5  # against fla's float32 outputs (the reference as written, in float32)


def make_inputs(seed, B, L, H, n_h, Dk, Dv, *, gate, dtype=jnp.float32, beta_range=(0.0, 2.0),
                gate_range=(-1.0, 0.0), with_s0=True):
    """``(q, k, v, beta, log_gate, s0)``: unit keys, β uniform in ``beta_range``."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(size=shape)
    k = normal(B, L, H, n_h, Dk)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    arrays = (normal(B, L, H, Dk) / np.sqrt(Dk), k, normal(B, L, H, n_h, Dv),
              rng.uniform(*beta_range, size=(B, L, H, n_h)),
              rng.uniform(*gate_range, size=(B, L, H)) if gate else None,
              normal(B, H, Dk, Dv) if with_s0 else None)
    return tuple(None if x is None else jnp.asarray(x, dtype) for x in arrays)


@functools.cache
def jitted(method=None, chunk_size=16):
    """``delta_rule`` (or the reference loop for ``method=None``) jitted once per options,
    so that tests with equal shapes share compilations."""
    if method is None:
        return jax.jit(loops.delta_rule)
    return jax.jit(functools.partial(delta_rule, method=method, chunk_size=chunk_size))


def check_all_methods(inputs, chunk_size, rtol=None):
    fns = [loops.delta_rule] + [functools.partial(delta_rule, method=m, chunk_size=chunk_size) for m in METHODS]
    expected, *actuals = outputs_and_grads(fns, inputs)
    for method, actual in zip(METHODS, actuals):
        assert all(x.dtype == e.dtype for x, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)))
        assert_close(actual[0], expected[0], rtol, name=f"{method} (o, S_final)")
        assert_close(actual[1], expected[1], rtol, name=f"{method} grads")


# --- fla reference vectors ---------------------------------------------------------------

def all_results(q, k, v, beta, g, h0, chunk_size=8):
    """``{name: (o, S)}`` of the reference loop and both methods."""
    results = {"reference": jitted()(q, k, v, beta, g, h0)}
    for method in METHODS:
        results[method] = jitted(method, chunk_size)(q, k, v, beta, g, h0)
    return results


def check_vectors(results, o, S, dtype_name):
    for name, (o_actual, S_actual) in results.items():
        if dtype_name == "f64":
            assert_close((o_actual, S_actual), (o, S), rtol=1e-10, name=name)
        else:
            np.testing.assert_allclose(o_actual, o, rtol=0, atol=F32_ATOL, err_msg=name)
            np.testing.assert_allclose(S_actual, S, rtol=0, atol=F32_ATOL, err_msg=name)


@pytest.mark.parametrize("dtype_name", ["f64", "f32"])
def test_delta_rule_vectors(reference, dtype_name):
    # DeltaNet recurrence, head-first layout, q scaled by Dk^-1/2 inside fla's function.
    # Keys of rank 4 (B, L, H, Dk) mean n_h = 1.
    data = np.load(reference / "delta_rule.npz")
    suffix = "_f64" if dtype_name == "f64" else ""
    with jax.enable_x64(dtype_name == "f64"):
        time_first = lambda name: jnp.asarray(np.moveaxis(data[name + suffix], 2, 1))
        q, k, v = time_first("q"), time_first("k"), time_first("v")
        beta = time_first("beta")
        q = q * q.shape[-1] ** -0.5
        h0 = jnp.asarray(data["h0" + suffix])
        assert q.dtype == (jnp.float64 if dtype_name == "f64" else jnp.float32)
        zeros = jnp.zeros(q.shape[:3], q.dtype)  # no gate
        check_vectors(all_results(q, k, v, beta, zeros, jnp.zeros_like(h0)), time_first("o"), data["S" + suffix],
                      dtype_name)
        check_vectors(all_results(q, k, v, beta, zeros, h0), time_first("o_h0"), data["S_h0" + suffix],
                      dtype_name)


@pytest.mark.parametrize("dtype_name", ["f64", "f32"])
def test_gated_delta_rule_vectors(reference, dtype_name):
    data = np.load(reference / "gated_delta_rule.npz")
    dtype = np.float64 if dtype_name == "f64" else np.float32
    with jax.enable_x64(dtype_name == "f64"):
        q, k, v, beta, g, h0 = (jnp.asarray(data[n].astype(dtype)) for n in ("q", "k", "v", "beta", "g", "h0"))
        q = q * jnp.asarray(data["scale"], dtype)
        check_vectors(all_results(q, k, v, beta, g, h0), data[f"o_{dtype_name}"], data[f"S_{dtype_name}"],
                      dtype_name)


@pytest.mark.parametrize("dtype_name", ["f64", "f32"])
def test_delta_product_vectors(reference, dtype_name):
    # n_h = 2, keys and values interleaved as row t·n_h + j; β in [0, 2]; no q scaling.
    data = np.load(reference / "delta_product.npz")
    dtype = np.float64 if dtype_name == "f64" else np.float32
    n_h = int(data["num_householder"])
    B, T, H, _ = data["q"].shape
    per_step = lambda x: np.moveaxis(x.reshape((B, T, n_h, H) + x.shape[3:]), 2, 3)  # (B, T, H, n_h, ...)
    with jax.enable_x64(dtype_name == "f64"):
        q, g, h0 = (jnp.asarray(data[n].astype(dtype)) for n in ("q", "g", "h0"))
        k, v, beta = (jnp.asarray(per_step(data[n]).astype(dtype)) for n in ("k", "v", "beta"))
        assert float(jnp.max(beta)) == 2.0
        no_gate, no_h0 = jnp.zeros_like(g), jnp.zeros_like(h0)
        for case, gate, s0 in (("", no_gate, no_h0), ("_gated", g, no_h0), ("_gated_h0", g, h0)):
            results = all_results(q, k, v, beta, gate, s0, chunk_size=4)
            check_vectors(results, data[f"o{case}_{dtype_name}"], data[f"h{case}_{dtype_name}"], dtype_name)


# --- chunked == sequential == reference -------------------------------------------------

# Each value of every axis is covered (n_h, gate, L, chunk size, dtype); the full product
# would cost one compilation per method and case.
CASES = [  # n_h, gate, L, chunk_size
    (1, False, 63, 16),
    (2, True, 63, 16),
    (3, True, 1, 64),  # no initial state
    (2, False, 1000, 64),  # no decay: the state carries over all 1000 tokens
]
CASES_F64 = [(3, True, 63, 64), (1, False, 100, 16)]


@pytest.mark.parametrize("n_h, gate, L, chunk_size", CASES)
def test_methods_match_reference_float32(n_h, gate, L, chunk_size):
    inputs = make_inputs(n_h, B=1, L=L, H=2, n_h=n_h, Dk=5, Dv=3, gate=gate, gate_range=(-0.2, 0.0),
                         with_s0=L > 1)
    check_all_methods(inputs, chunk_size)


@pytest.mark.parametrize("n_h, gate, L, chunk_size", CASES_F64)
def test_methods_match_reference_float64(x64, n_h, gate, L, chunk_size):
    inputs = make_inputs(9, B=1, L=L, H=2, n_h=n_h, Dk=5, Dv=3, gate=gate, dtype=jnp.float64)
    assert all(x.dtype == jnp.float64 for x in inputs if x is not None)
    check_all_methods(inputs, chunk_size, rtol=1e-10)


def test_product_equals_interleaved_delta_rule(x64):
    # n_h steps per token == the one-step rule on the length-L·n_h sequence with the gate
    # on each token's first micro-step and the query on its last (fla's chunk_ref).
    q, k, v, beta, g, s0 = make_inputs(10, B=2, L=13, H=2, n_h=3, Dk=4, Dv=5, gate=True, dtype=jnp.float64)
    B, L, H, n_h, Dk = k.shape
    interleave = lambda x: jnp.moveaxis(x, 3, 2).reshape((B, L * n_h, H) + x.shape[4:])
    micro_q = jnp.zeros((B, L, n_h, H, Dk)).at[:, :, -1].set(q)
    micro_g = jnp.zeros((B, L, n_h, H)).at[:, :, 0].set(g)
    o_micro, S_micro = jitted("chunked", 8)(micro_q.reshape(B, L * n_h, H, Dk), interleave(k), interleave(v),
                                            interleave(beta), micro_g.reshape(B, L * n_h, H), s0)
    for method in METHODS:
        o, S = jitted(method, 5)(q, k, v, beta, g, s0)
        assert_close((o, S), (o_micro[:, n_h - 1 :: n_h], S_micro), rtol=1e-12)


def test_split_sequence_carries_the_state():
    q, k, v, beta, g, s0 = make_inputs(11, B=2, L=40, H=2, n_h=2, Dk=4, Dv=3, gate=True)
    run = jitted("chunked", 8)
    o, S = run(q, k, v, beta, g, s0)
    t = 20  # not a multiple of the chunk size
    first = run(q[:, :t], k[:, :t], v[:, :t], beta[:, :t], g[:, :t], s0)
    second = run(q[:, t:], k[:, t:], v[:, t:], beta[:, t:], g[:, t:], first[1])
    assert_close((jnp.concatenate([first[0], second[0]], axis=1), second[1]), (o, S))


# --- stability ----------------------------------------------------------------------------

# Relative error bounds at β ≈ 2 with nearly parallel keys (the case below), float32
# against float64. Measured over seeds 1-5 and 12: sequential ≤ 4.3e-6; chunked with 64
# micro-steps per chunk (the default) 3.7e-5 - 7.5e-5 for o and 5.9e-5 - 1.2e-4 for S
# (9.4e-5 at seed 12), and 9.4e-5 - 2.1e-4 with 128. The cause is the WY form itself:
# the rows of W alternate in sign, and Δ = U − W S and the state update sum 64 terms of
# size ~2‖S‖ that cancel to a small result, so the error grows with the micro-steps per
# chunk. Computing (I + A)⁻¹ in float64 alone does not help; forward substitution on the
# right-hand sides looked 5-10× better, but only for XLA CPU's summation order (the
# same substitution summed in another order was as bad), so it is not used.
BETA_TWO_RTOL = {"sequential": 1e-5, "chunked": 2e-4}


def test_beta_near_two_stays_finite_and_accurate():
    # Reflections (β = 2) and near-reflections over 1000 tokens, nearly parallel keys
    # inside a chunk: float32 agrees with a float64 reference loop.
    B, L, H, n_h, Dk, Dv = 1, 1000, 2, 2, 8, 4
    rng = np.random.default_rng(12)
    base = rng.normal(size=(B, L // 64 + 1, H, 1, Dk)).repeat(64, axis=1)[:, :L]
    k = base + 1e-3 * rng.normal(size=(B, L, H, n_h, Dk))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    beta = np.where(rng.uniform(size=(B, L, H, n_h)) < 0.5, 2.0, 1.9999)
    q, v = rng.normal(size=(B, L, H, Dk)), rng.normal(size=(B, L, H, n_h, Dv))
    inputs32 = tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v, beta))
    with jax.enable_x64(True):
        o64, S64 = jax.jit(loops.delta_rule)(*(jnp.asarray(x, jnp.float64) for x in (q, k, v, beta)))
        o64, S64 = np.asarray(o64), np.asarray(S64)
    for method in METHODS:
        o, S = jitted(method, 64)(*inputs32)
        assert bool(jnp.all(jnp.isfinite(o))) and bool(jnp.all(jnp.isfinite(S)))
        assert_close((o, S), (o64, S64), rtol=BETA_TWO_RTOL[method], name=method)
    grads = jax.jit(jax.grad(lambda *xs: jnp.sum(delta_rule(*xs, method="chunked")[0]), argnums=(0, 1, 2, 3)))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in grads(*inputs32))


def test_transpositions_compose_exactly():
    # With keys e_i − e_j and β = 1 (β‖k‖² = 2) each step is exactly the transposition
    # (i j): starting from S = I with zero values, the state is the product of the
    # permutations so far (the S_n word problem solved by DeltaProduct with n_h = n − 1).
    n, L, n_h = 4, 500, 3
    rng = np.random.default_rng(13)
    pairs = np.array([rng.choice(n, size=2, replace=False) for _ in range(L * n_h)]).reshape(L, n_h, 2)
    eye = np.eye(n)
    k = eye[pairs[..., 0]] - eye[pairs[..., 1]]  # (L, n_h, n)
    expected = eye.copy()
    for t in range(L):
        for j in range(n_h):
            a, b = pairs[t, j]
            expected[[a, b]] = expected[[b, a]]
    args = (jnp.zeros((1, L, 1, n)), jnp.asarray(k[None, :, None], jnp.float32), jnp.zeros((1, L, 1, n_h, n)),
            jnp.ones((1, L, 1, n_h)), jnp.zeros((1, L, 1)), jnp.asarray(eye[None, None], jnp.float32))
    for method in METHODS:
        _, S = jitted(method, 32)(*args)
        np.testing.assert_allclose(S[0, 0], expected, atol=1e-6, err_msg=method)


# --- API ----------------------------------------------------------------------------------

def test_zero_length_returns_initial_state():
    q, k, v, beta, g, s0 = make_inputs(15, B=2, L=0, H=1, n_h=2, Dk=3, Dv=2, gate=True)
    for method in METHODS:
        o, S = jitted(method, 64)(q, k, v, beta, g, s0)
        assert o.shape == (2, 0, 1, 2)
        np.testing.assert_array_equal(S, s0)


def test_low_precision_inputs_keep_a_float32_state():
    inputs = make_inputs(16, B=1, L=30, H=2, n_h=2, Dk=4, Dv=4, gate=True, dtype=jnp.bfloat16)
    expected = jitted()(*inputs)  # float32 accumulation
    for method in METHODS:
        o, S = jitted(method, 8)(*inputs)
        assert o.dtype == jnp.bfloat16 and S.dtype == jnp.float32
        assert_close((o, S), expected, rtol=2e-2)


def test_auto_on_cpu_runs_sequential_forward_and_chunked_gradient(monkeypatch):
    # The hybrid never differentiates the sequential scan, so it keeps no per-step
    # state history: even with the history limit at 0 bytes auto stays the hybrid.
    if jax.default_backend() != "cpu":
        pytest.skip("auto choice on CPU")
    calls = []
    for name in ("_sequential", "_chunked"):
        original = getattr(delta_module, name)

        def spy(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(delta_module, name, spy)
    dispatch = importlib.import_module("seqmodels.scans._dispatch")
    monkeypatch.setattr(dispatch, "STATE_HISTORY_LIMIT_BYTES", 0)
    inputs = make_inputs(17, B=1, L=10, H=1, n_h=2, Dk=4, Dv=4, gate=True)
    delta_rule(*inputs)
    assert calls == ["_sequential"]
    calls.clear()
    out, vjp = jax.vjp(delta_rule, *inputs)
    assert calls == ["_chunked"]
    expected_out, expected_vjp = jax.vjp(loops.delta_rule, *inputs)
    assert_close(out, expected_out)
    keys = jax.random.split(jax.random.PRNGKey(3), len(out))
    cot = tuple(jax.random.normal(key, x.shape, x.dtype) for key, x in zip(keys, out))
    assert_close(vjp(cot), expected_vjp(cot))


def test_chunked_backward_keeps_only_chunk_states():
    # Compile only: the sequential backward stores every micro-step's state, the chunked
    # one a state per group of chunks plus one group's workspace (about 5 MiB here, the
    # same at every length), so the size must be well past one group: 4 groups of 1024
    # micro-steps, where the chunked temporaries are 8.4 MiB against 64 MiB of history.
    B, L, H, n_h, D = 1, 2048, 1, 2, 64
    shapes = [jax.ShapeDtypeStruct(s, jnp.float32)
              for s in ((B, L, H, D), (B, L, H, n_h, D), (B, L, H, n_h, D), (B, L, H, n_h))]

    def temp_bytes(method):
        def f(*xs):
            out, vjp = jax.vjp(functools.partial(delta_rule, method=method), *xs)
            return vjp(out)

        return jax.jit(f).lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    history = B * L * H * n_h * D * D * 4
    assert temp_bytes("sequential") >= history
    assert temp_bytes("chunked") < history / 4


BAD_INPUTS = [
    ("q", dict(q=np.zeros((2, 5, 3), np.float32))),
    ("q", dict(q=np.zeros((2, 5, 3, 4), np.int32))),
    ("k", dict(k=np.zeros((2, 5, 3, 2, 6), np.float32))),
    ("k", dict(k=np.zeros((2, 5, 3), np.float32))),
    ("v", dict(v=np.zeros((2, 5, 3, 3, 2), np.float32))),
    ("v", dict(v=np.zeros((2, 5, 3, 2), np.float32))),
    ("beta", dict(beta=np.zeros((2, 5, 3), np.float32))),
    ("beta", dict(beta=np.zeros((2, 5, 3, 2), np.int32))),
    ("log_gate", dict(log_gate=np.zeros((2, 5, 3, 1), np.float32))),
    ("s0", dict(s0=np.zeros((2, 3, 2, 4), np.float32))),
    ("method", dict(method="associative")),
    ("chunk_size", dict(chunk_size=0)),
]


@pytest.mark.parametrize("name, override", BAD_INPUTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_INPUTS)])
def test_bad_inputs_raise_naming_the_argument(name, override):
    args = dict(
        q=np.zeros((2, 5, 3, 4), np.float32),
        k=np.zeros((2, 5, 3, 2, 4), np.float32),
        v=np.zeros((2, 5, 3, 2, 2), np.float32),
        beta=np.zeros((2, 5, 3, 2), np.float32),
        log_gate=np.zeros((2, 5, 3), np.float32),
        s0=np.zeros((2, 3, 4, 2), np.float32),
    )
    args.update(override)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        delta_rule(**args)
