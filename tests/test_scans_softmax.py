"""softmax_scan: every method equals the plain-loop reference, values and gradients,
including extreme scores, masked steps and re-association across calls."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqmodels import scans
from seqmodels.scans import SoftmaxState, reference
from helpers import assert_close

METHODS = ["sequential", "associative", "chunked"]


def make_inputs(seed, batch, length, heads=(2,), dv=3, dtype=jnp.float32, state="random", score_scale=2.0):
    rng = np.random.default_rng(seed)
    scores = score_scale * rng.normal(size=(batch, length) + heads)
    v = rng.normal(size=(batch, length) + heads + (dv,))
    if state == "random":
        st_ = SoftmaxState(
            rng.normal(size=(batch,) + heads),
            np.exp(rng.normal(size=(batch,) + heads)),
            rng.normal(size=(batch,) + heads + (dv,)),
        )
    else:  # the empty state
        st_ = SoftmaxState(
            np.full((batch,) + heads, -np.inf), np.zeros((batch,) + heads), np.zeros((batch,) + heads + (dv,))
        )
    as_jax = lambda x: jnp.asarray(x, dtype)
    return as_jax(scores), as_jax(v), SoftmaxState(*map(as_jax, st_))


def value_and_vjp(f, *args):
    """``f(*args)`` and its VJP with a random cotangent, compiled as one program."""
    out_shapes = jax.eval_shape(f, *args)
    rng = np.random.default_rng(7)
    cot = jax.tree.map(lambda o: jnp.asarray(rng.normal(size=o.shape), o.dtype), out_shapes)

    def run(args, cot):
        out, vjp = jax.vjp(f, *args)
        return out, vjp(cot)

    return jax.jit(run)(args, cot)


def check_against_reference(scores, v, state, methods=METHODS, chunk_size=None, rtol=None):
    """Outputs, final state and the gradients of scores, v and every state leaf vs the reference.

    Returns ``{method: ((o, final_state), gradients)}``.
    """
    ref = value_and_vjp(reference.softmax_scan, scores, v, state)
    results = {}
    for method in methods:
        fast = lambda s, v, state: scans.softmax_scan(s, v, state, method=method, chunk_size=chunk_size)
        results[method] = out, grads = value_and_vjp(fast, scores, v, state)
        assert isinstance(out[1], SoftmaxState)
        assert_close(out, ref[0], rtol, f"{method} outputs")
        assert_close(grads, ref[1], rtol, f"{method} gradients")
    return results


@pytest.mark.parametrize("length", [1, 7, 63, 1000])
def test_float32(length):
    scores, v, state = make_inputs(length, 2, length, state="empty" if length == 7 else "random")
    check_against_reference(scores, v, state, chunk_size=24 if length == 1000 else 5)


@pytest.mark.parametrize("length", [63, 1000])
def test_float64(x64, length):
    heads = (2, 3) if length == 63 else (2,)
    scores, v, state = make_inputs(length, 1, length, heads, dtype=jnp.float64)
    # The associative form at L = 1000 compiles for many seconds; float32 covers it.
    methods = ["sequential", "chunked"] if length == 1000 else METHODS
    check_against_reference(scores, v, state, methods, chunk_size=10 if length < 1000 else 64)


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 16), heads=st.lists(st.integers(1, 3), max_size=2),
       dv=st.integers(1, 4), method=st.sampled_from(METHODS), chunk=st.integers(1, 17),
       state=st.sampled_from(["random", "empty"]), seed=st.integers(0, 2**16))
def test_random_shapes(batch, length, heads, dv, method, chunk, state, seed):
    scores, v, state_ = make_inputs(seed, batch, length, tuple(heads), dv, state=state)
    check_against_reference(scores, v, state_, [method], chunk_size=chunk)


def test_extreme_scores():
    # ±1e4 with O(1) differences inside each group: naive exp overflows / underflows.
    scores, v, state = make_inputs(11, 2, 40)
    rng = np.random.default_rng(0)
    scores = scores + jnp.asarray(rng.choice([-1e4, 1e4], size=scores.shape), jnp.float32)
    state = state._replace(max=state.max + 1e4)
    check_against_reference(scores, v, state, chunk_size=6)  # asserts finite values and gradients


def test_masked_prefix_gives_zero_outputs_and_finite_gradients():
    scores, v, state = make_inputs(12, 2, 30, state="empty")
    prefix = jnp.arange(30)[None, :, None] < jnp.asarray([5, 12]).reshape(2, 1, 1)  # 5 and 12 masked steps
    scores = jnp.where(prefix, -jnp.inf, scores)
    scores = scores.at[:, 20].set(-jnp.inf)  # and one in the middle
    results = check_against_reference(scores, v, state, chunk_size=4)  # asserts finite gradients
    for method, ((o, _), _) in results.items():
        assert np.all(np.asarray(o[0, :5]) == 0) and np.all(np.asarray(o[1, :12]) == 0), method
        assert np.all(np.asarray(o[0, 5]) != 0), method


@pytest.mark.parametrize("method", METHODS)
def test_all_masked(method):
    scores, v, state = make_inputs(13, 2, 9, state="empty")
    scores = jnp.full_like(scores, -jnp.inf)
    f = lambda s, v, st_: scans.softmax_scan(s, v, st_, method=method, chunk_size=4)
    (o, final), grads = value_and_vjp(f, scores, v, state)
    np.testing.assert_array_equal(np.asarray(o), 0.0)
    assert np.all(np.isneginf(np.asarray(final.max)))
    np.testing.assert_array_equal(np.asarray(final.normalizer), 0.0)
    np.testing.assert_array_equal(np.asarray(final.weighted_sum), 0.0)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_equals_explicit_causal_softmax():
    scores, v, _ = make_inputs(14, 2, 25, heads=(3,), dv=4)

    @jax.jit
    def explicit_and_scans(scores, v):
        mask = jnp.tril(jnp.ones((25, 25), bool))
        logits = jnp.where(mask[None, :, :, None], scores[:, None, :, :], -jnp.inf)  # (B, t, i, H)
        expected = jnp.einsum("btih,bihd->bthd", jax.nn.softmax(logits, axis=2), v)
        return expected, [scans.softmax_scan(scores, v, method=m, chunk_size=6)[0] for m in METHODS]

    expected, outputs = explicit_and_scans(scores, v)
    for method, o in zip(METHODS, outputs):
        assert_close(o, expected, 1e-5, method)


@pytest.mark.parametrize("split", [1, 13])
def test_reassociation_across_calls(split):
    # One run equals a run over x[:, :t] continued from its state over x[:, t:], whichever methods.
    scores, v, state = make_inputs(15, 2, 30)
    scores = scores.at[:, :3].set(-jnp.inf)

    @jax.jit
    def whole_and_split(scores, v, state):
        whole = scans.softmax_scan(scores, v, state, method="sequential")
        first, mid = scans.softmax_scan(scores[:, :split], v[:, :split], state, method="chunked", chunk_size=4)
        second, last = scans.softmax_scan(scores[:, split:], v[:, split:], mid, method="associative")
        return whole, (jnp.concatenate([first, second], 1), last)

    whole, joined = whole_and_split(scores, v, state)
    assert_close(joined, whole)


@pytest.mark.parametrize("method", METHODS)
def test_jit_and_vmap(method):
    scores, v, state = make_inputs(16, 2, 19)
    f = jax.jit(lambda s, v, st_: scans.softmax_scan(s, v, st_, method=method, chunk_size=4))
    stack = lambda *xs: jax.tree.map(lambda *x: jnp.stack(x), *xs)
    batched = jax.vmap(f)(jnp.stack([scores, -scores]), jnp.stack([v, 2 * v]), stack(state, state))
    for i, (s_i, v_i) in enumerate([(scores, v), (-scores, 2 * v)]):
        assert_close(jax.tree.map(lambda x: x[i], batched), f(s_i, v_i, state))


def test_default_state_is_empty():
    scores, v, empty = make_inputs(17, 2, 9, state="empty")
    assert_close(scans.softmax_scan(scores, v), reference.softmax_scan(scores, v, empty))


def test_bfloat16_returns_bfloat16_with_float32_state():
    scores, v, _ = make_inputs(18, 2, 9)
    o, final = scans.softmax_scan(scores.astype(jnp.bfloat16), v.astype(jnp.bfloat16))
    assert o.dtype == jnp.bfloat16 and all(x.dtype == jnp.float32 for x in final)


def test_bad_arguments_are_named():
    scores, v, state = make_inputs(19, 2, 5, heads=(3,), dv=4)
    with pytest.raises(ValueError, match=r"scores must have rank at least 2"):
        scans.softmax_scan(scores[0, 0], v)
    with pytest.raises(ValueError, match=r"v must have shape \(2, 5, 3, \*\); got \(2, 5, 4\)"):
        scans.softmax_scan(scores, v[:, :, 0])
    with pytest.raises(ValueError, match=r"state.max must have shape \(2, 3\); got \(2,\)"):
        scans.softmax_scan(scores, v, state._replace(max=state.max[:, 0]))
    with pytest.raises(ValueError, match=r"state.weighted_sum must have shape \(2, 3, 4\)"):
        scans.softmax_scan(scores, v, state._replace(weighted_sum=state.weighted_sum[..., :2]))
    with pytest.raises(ValueError, match="state must be a SoftmaxState"):
        scans.softmax_scan(scores, v, state.max)
    with pytest.raises(ValueError, match="scores must have a floating"):
        scans.softmax_scan(scores.astype(jnp.int32), v)
    with pytest.raises(ValueError, match="method must be one of"):
        scans.softmax_scan(scores, v, method="fast")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        scans.softmax_scan(scores, v, method="chunked", chunk_size=-1)


# cumulative_logsumexp: the log normalizer of the running softmax, per channel.

LOGSUMEXP_METHODS = ["sequential", "associative"]


def logsumexp_inputs(seed, shape, dtype, start):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(3.0 * rng.normal(size=shape), dtype)
    z0 = None if start == "none" else jnp.asarray(rng.normal(size=shape[:1] + shape[2:]), dtype)
    return x, z0


@pytest.mark.parametrize("start", ["none", "given"])
@pytest.mark.parametrize("method", LOGSUMEXP_METHODS)
def test_cumulative_logsumexp_float64(x64, method, start):
    x, z0 = logsumexp_inputs(20, (2, 37, 3, 2), jnp.float64, start)
    x = x.at[0, 5].set(-jnp.inf)  # a masked step adds nothing
    inputs = (x,) if z0 is None else (x, z0)
    ref = value_and_vjp(reference.cumulative_logsumexp, *inputs)
    fast = value_and_vjp(lambda *a: scans.cumulative_logsumexp(*a, method=method), *inputs)
    assert_close(fast, ref, 1e-12, method)
    # the definition, written out for one channel
    expected = np.logaddexp.accumulate(np.concatenate([[-np.inf if z0 is None else z0[1, 2, 1]], x[1, :, 2, 1]]))
    assert_close(fast[0][0][1, :, 2, 1], jnp.asarray(expected[1:]), 1e-12, method)


@pytest.mark.parametrize("method", LOGSUMEXP_METHODS)
def test_cumulative_logsumexp_float32_and_continuation(method):
    x, z0 = logsumexp_inputs(21, (2, 50, 4), jnp.float32, "given")
    x = x + 1e4  # large magnitudes: no overflow
    whole, last = scans.cumulative_logsumexp(x, z0 + 1e4, method=method)
    first, mid = scans.cumulative_logsumexp(x[:, :20], z0 + 1e4, method=method)
    second, end = scans.cumulative_logsumexp(x[:, 20:], mid, method=method)
    assert_close((jnp.concatenate([first, second], 1), end), (whole, last), 1e-6)
    assert_close(whole, jnp.asarray(reference.cumulative_logsumexp(x, z0 + 1e4)[0]), 1e-6)
    assert whole.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(whole)))


def test_cumulative_logsumexp_bad_arguments_are_named():
    x, z0 = logsumexp_inputs(22, (2, 5, 3), jnp.float32, "given")
    with pytest.raises(ValueError, match=r"z0 must have shape \(2, 3\); got \(2,\)"):
        scans.cumulative_logsumexp(x, z0[:, 0])
    with pytest.raises(ValueError, match="method must be one of"):
        scans.cumulative_logsumexp(x, method="chunked")
    with pytest.raises(ValueError, match="x must have rank at least 2"):
        scans.cumulative_logsumexp(x[0, 0])
