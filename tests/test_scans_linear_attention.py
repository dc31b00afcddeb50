"""``scans.linear_attention`` against ``reference.linear_attention``: outputs, final
state and the gradient of every input, for every method and decay shape."""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqmodels.scans import linear_attention, reference
from helpers import assert_close

# The function shadows its module as an attribute of seqmodels.scans.
la_module = importlib.import_module("seqmodels.scans.linear_attention")

METHODS = ("sequential", "chunked")
DECAYS = ("none", "head", "feature")


def make_inputs(seed, B, L, H, Dk, Dv, decay, dtype=jnp.float32, decay_range=(-5.0, 0.0), with_s0=True):
    """``(q, k, v, log_decay, s0)`` as arrays of ``dtype``; log_decay uniform in ``decay_range``."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
    q, k, v = normal(B, L, H, Dk), normal(B, L, H, Dk), normal(B, L, H, Dv)
    g_shape = {"none": None, "head": (B, L, H), "feature": (B, L, H, Dk)}[decay]
    g = None if g_shape is None else jnp.asarray(rng.uniform(*decay_range, size=g_shape), dtype)
    s0 = normal(B, H, Dk, Dv) if with_s0 else None
    return q, k, v, g, s0


def check_all_methods(inputs, chunk_size, rtol=None, methods=METHODS, reference_dtype=None):
    """Outputs and the vjp of one random cotangent w.r.t. every non-None input, for the
    reference and each method, compiled together (one compilation per case). With
    ``reference_dtype`` the reference runs on inputs cast to it (float64 truth)."""
    present = [i for i, x in enumerate(inputs) if x is not None]
    fns = [reference.linear_attention] + [
        functools.partial(linear_attention, method=method, chunk_size=chunk_size) for method in methods
    ]

    def with_present(fn):
        def f(*xs):
            full = list(inputs)
            for i, x in zip(present, xs):
                full[i] = x
            return fn(*full)

        return f

    @jax.jit
    def run(xs, ct):
        results = []
        for fn in fns:
            args, cotangent = xs, ct
            if fn is reference.linear_attention and reference_dtype is not None:
                args, cotangent = jax.tree.map(lambda x: x.astype(reference_dtype), (xs, ct))
            out, vjp = jax.vjp(with_present(fn), *args)
            results.append((out, vjp(cotangent)))
        return results

    xs = [inputs[i] for i in present]
    rng = np.random.default_rng(1)
    out_shapes = jax.eval_shape(with_present(fns[0]), *xs)
    ct = tuple(jnp.asarray(rng.normal(size=o.shape), o.dtype) for o in out_shapes)
    (expected_out, expected_grads), *actual = run(xs, ct)
    for method, (out, grads) in zip(methods, actual):
        assert_close(out, expected_out, rtol, name=f"{method} (o, S_final)")
        assert_close(grads, expected_grads, rtol, name=f"{method} grads")


@pytest.mark.parametrize(
    "decay, L, chunk_size",
    [
        ("none", 63, 16),
        ("head", 7, 64),  # one chunk shorter than chunk_size
        ("head", 63, 16),
        ("none", 1, 16),  # one token: the step, no scan
        ("head", 1, 16),
        ("feature", 1, 16),
        ("feature", 63, 16),  # one sub-chunk per chunk
        ("feature", 63, 64),  # one chunk of 63 = 63 sub-chunks of 1
    ],
)
def test_matches_reference_float32(decay, L, chunk_size):
    inputs = make_inputs(0, B=2, L=L, H=2, Dk=5, Dv=3, decay=decay)
    check_all_methods(inputs, chunk_size)


@pytest.mark.parametrize(
    "decay, decay_range, chunk_size",
    [
        ("feature", (-5.0, 0.0), 16),  # strong: (q ⊙ e^G)(k ⊙ e^-G)ᵀ would overflow here
        ("feature", (-1e-3, 0.0), 64),  # weak: the state is carried over the whole sequence
        ("head", (-5.0, 0.0), 64),
        ("none", None, 64),
    ],
)
def test_long_sequence_strong_and_weak_decay(decay, decay_range, chunk_size):
    inputs = make_inputs(2, B=1, L=1000, H=1, Dk=4, Dv=3, decay=decay, decay_range=decay_range or (0, 0))
    check_all_methods(inputs, chunk_size)


@pytest.mark.parametrize("decay, weak_chunk_ends", [("head", False), ("head", True), ("feature", True)])
def test_strong_decay_keeps_float32_precision(x64, decay, weak_chunk_ends):
    # log_decay = -5: within a 64-chunk cumulative decays reach -320, where float32 keeps
    # ~2e-5 absolute. Two ways to spend the 1e-5 budget, each caught by one case: a plain
    # G_i - G_j, where the decay then nearly stops (weak chunk ends: the outputs); and a
    # gradient that flows through the unit diagonal of the decay matrix, where the decay
    # is constant (d log_decay). Float32 chunked against float64 truth.
    q, k, v, _, s0 = make_inputs(3, B=1, L=128, H=2, Dk=3, Dv=2, decay="none")
    g = np.full((1, 128, 2, 3), -5.0, np.float32)
    if weak_chunk_ends:
        g[:, 60:64] = g[:, 124:] = -1e-4
    g = jnp.asarray(g if decay == "feature" else g[..., 0])
    check_all_methods((q, k, v, g, s0), 64, rtol=1e-5, methods=("chunked",), reference_dtype=jnp.float64)


def test_minus_inf_decay_resets_the_state():
    # log_decay = -inf zeroes the carried state (packed sequences): no NaN from -inf - -inf.
    q, k, v, g, s0 = make_inputs(9, B=1, L=40, H=2, Dk=3, Dv=2, decay="feature", decay_range=(-1, 0))
    g = g.at[:, 5].set(-jnp.inf).at[:, 21:23, 1].set(-jnp.inf)
    check_all_methods((q, k, v, g, s0), chunk_size=32)


@pytest.mark.parametrize("decay, L, chunk_size", [("head", 63, 16), ("feature", 100, 64)])
def test_matches_reference_float64(x64, decay, L, chunk_size):
    inputs = make_inputs(4, B=2, L=L, H=2, Dk=5, Dv=3, decay=decay, dtype=jnp.float64)
    assert all(x.dtype == jnp.float64 for x in inputs)
    check_all_methods(inputs, chunk_size, rtol=1e-10)
    for method in METHODS:
        out = jax.eval_shape(functools.partial(linear_attention, method=method), *inputs)
        assert [x.dtype for x in out] == [jnp.float64, jnp.float64]


@pytest.mark.parametrize("method", METHODS)
def test_jit_matches_eager(method):
    inputs = make_inputs(5, B=2, L=37, H=2, Dk=4, Dv=3, decay="feature")
    jitted = jax.jit(linear_attention, static_argnames=("method", "chunk_size"))
    eager = linear_attention(*inputs, method=method, chunk_size=16)
    assert_close(jitted(*inputs, method=method, chunk_size=16), eager)
    assert_close(eager, reference.linear_attention(*inputs))


@pytest.mark.parametrize("method", METHODS)
def test_vmap_equals_loop(method):
    n = 3
    per_item = [make_inputs(10 + i, B=2, L=21, H=2, Dk=3, Dv=4, decay="head") for i in range(n)]
    stacked = [jnp.stack(xs) for xs in zip(*per_item)]
    fn = jax.jit(functools.partial(linear_attention, method=method, chunk_size=8))
    batched = jax.jit(jax.vmap(fn))(*stacked)
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *[fn(*inputs) for inputs in per_item])
    assert_close(batched, looped)


@settings(max_examples=10, deadline=None)
@given(
    B=st.integers(1, 2),
    L=st.integers(1, 40),
    H=st.integers(1, 2),
    Dk=st.integers(1, 6),
    Dv=st.integers(1, 6),
    chunk_size=st.integers(1, 20),
    decay=st.sampled_from(DECAYS),
    with_s0=st.booleans(),
    method=st.sampled_from(("auto",) + METHODS),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(B, L, H, Dk, Dv, chunk_size, decay, with_s0, method, seed):
    inputs = make_inputs(seed, B, L, H, Dk, Dv, decay, with_s0=with_s0)
    fn = functools.partial(linear_attention, method=method, chunk_size=chunk_size)
    (o, S), expected = jax.jit(lambda xs: (fn(*xs), reference.linear_attention(*xs)))(inputs)
    assert o.shape == (B, L, H, Dv) and S.shape == (B, H, Dk, Dv)
    assert_close((o, S), expected)


def test_one_token_is_a_step_without_a_scan():
    """Decoding calls with L = 1 build no ``lax.scan`` (nothing to trace and compile per eager call)."""
    for method in ("auto",) + METHODS:
        jaxpr = str(jax.make_jaxpr(functools.partial(linear_attention, method=method))(
            *make_inputs(9, B=2, L=1, H=2, Dk=3, Dv=2, decay="feature")))
        assert "scan" not in jaxpr and "custom_vjp" not in jaxpr, method


def test_zero_length_returns_initial_state():
    q, k, v, g, s0 = make_inputs(6, B=2, L=0, H=1, Dk=3, Dv=2, decay="feature")
    for method in METHODS:
        o, S = linear_attention(q, k, v, g, s0, method=method)
        assert o.shape == (2, 0, 1, 2)
        np.testing.assert_array_equal(S, s0)


def test_low_precision_inputs_return_their_dtype():
    inputs = make_inputs(7, B=1, L=30, H=2, Dk=4, Dv=4, decay="head", dtype=jnp.bfloat16)
    expected = reference.linear_attention(*inputs)  # float32 accumulation
    for method in METHODS:
        o, S = jax.jit(functools.partial(linear_attention, method=method, chunk_size=8))(*inputs)
        assert o.dtype == jnp.bfloat16 and S.dtype == jnp.float32  # states stay float32
        assert_close((o, S), expected, rtol=2e-2)  # bfloat16 rounding of the outputs


def test_auto_on_cpu_runs_sequential_forward_and_chunked_gradient(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("auto choice on CPU")
    calls = []
    for name in ("_sequential", "_chunked"):
        original = getattr(la_module, name)

        def spy(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(la_module, name, spy)
    inputs = make_inputs(8, B=1, L=10, H=1, Dk=4, Dv=4, decay="head")
    linear_attention(*inputs)
    assert calls == ["_sequential"]
    calls.clear()
    out, vjp = jax.vjp(linear_attention, *inputs)
    assert calls == ["_chunked"]
    expected_out, expected_vjp = jax.vjp(reference.linear_attention, *inputs)
    assert_close(out, expected_out)
    cot = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(3), x.shape, x.dtype), out)
    assert_close(vjp(cot), expected_vjp(cot))


def test_chunked_backward_keeps_only_chunk_states():
    # Compile only: the sequential backward stores every step's state, the chunked one
    # one state per chunk (jax.checkpoint inside the scan across chunks).
    B, L, H, D = 1, 2048, 1, 64
    shape = jax.ShapeDtypeStruct((B, L, H, D), jnp.float32)
    g = jax.ShapeDtypeStruct((B, L, H, D), jnp.float32)  # per-feature: the largest chunk workspace

    def temp_bytes(method):
        def f(q, k, v, g):
            out, vjp = jax.vjp(functools.partial(linear_attention, method=method), q, k, v, g)
            return vjp(out)

        return jax.jit(f).lower(shape, shape, shape, g).compile().memory_analysis().temp_size_in_bytes

    history = B * L * H * D * D * 4
    assert temp_bytes("sequential") >= history
    assert temp_bytes("chunked") < history / 4


BAD_INPUTS = [  # (the argument the error must name, the bad value)
    ("q", dict(q=np.zeros((2, 5, 3), np.float32))),
    ("q", dict(q=np.zeros((2, 5, 3, 4), np.int32))),
    ("q", dict(q=np.zeros((2, 5, 3, 4), np.complex64))),
    ("k", dict(k=np.zeros((2, 5, 3, 6), np.float32))),
    ("v", dict(v=np.zeros((2, 6, 3, 2), np.float32))),
    ("v", dict(v=np.zeros((2, 5, 3), np.float32))),
    ("log_decay", dict(log_decay=np.zeros((2, 5), np.float32))),
    ("log_decay", dict(log_decay=np.zeros((2, 5, 3, 5), np.float32))),
    ("log_decay", dict(log_decay=np.zeros((2, 5, 3), np.int32))),
    ("s0", dict(s0=np.zeros((2, 3, 2, 4), np.float32))),
    ("s0", dict(s0=np.zeros((2, 3, 4, 2), np.int32))),
    ("method", dict(method="associative")),
    ("chunk_size", dict(chunk_size=0)),
]


@pytest.mark.parametrize("name, override", BAD_INPUTS, ids=[f"{n}{i}" for i, (n, _) in enumerate(BAD_INPUTS)])
def test_bad_inputs_raise_naming_the_argument(name, override):
    args = dict(
        q=np.zeros((2, 5, 3, 4), np.float32),
        k=np.zeros((2, 5, 3, 4), np.float32),
        v=np.zeros((2, 5, 3, 2), np.float32),
        log_decay=np.zeros((2, 5, 3), np.float32),
        s0=np.zeros((2, 3, 4, 2), np.float32),
    )
    args.update(override)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        linear_attention(**args)
