"""DeltaProduct and DeltaNet layers: against a float64 per-token loop written from the
layer's formulas, fla's interleaved layout, the eigenvalue range of the Householder
factors, DeltaNet as DeltaProduct with one step, the short-convolution cache at the
start of a stream, the initialization, and option checks. (Parallel vs step over long
sequences, gradients and bfloat16 are in the conformance suite.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import seqmodels.layers as layers
from helpers import assert_close, relative_error
from seqmodels import scans
from seqmodels.layers.common import ShortConv
from seqmodels.layers.deltaproduct import DeltaNet, DeltaProduct, l2_normalize


def randomize(layer, seed, scale=0.5):
    """Replace every parameter by ``init + scale · N(0, 1)`` (gates, steps and norms away
    from their initial values, so that no term of the layer is trivially 1 or 0)."""
    rng = np.random.default_rng(seed)
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    noisy = jax.tree.map(lambda p: jnp.asarray(p + scale * rng.normal(size=p.shape), p.dtype), params)
    return nnx.merge(graphdef, noisy, rest)


def jitted(layer, method_name):
    graphdef, state = nnx.split(layer)

    @jax.jit
    def run(state, *args):
        return getattr(nnx.merge(graphdef, state), method_name)(*args)

    return lambda *args: run(state, *args)


def run_steps(layer, x):
    step = jitted(layer, "step")
    state = layer.init_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y_t, state = step(x[:, t], state)
        ys.append(y_t)
    return jnp.stack(ys, axis=1), state


# --- the float64 loop -------------------------------------------------------------------

def silu(a):
    return a / (1.0 + np.exp(-a))


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def unit(a):
    return a / np.sqrt(np.sum(a * a, axis=-1, keepdims=True) + 1e-6)


def causal_conv(x, w):
    """``y_t = Σ_i w[i] x_{t-K+1+i}``, zero before the start; ``x (B, L, C)``, ``w (K, C)``."""
    K, (B, L, C) = w.shape[0], x.shape
    y = np.zeros_like(x)
    for t in range(L):
        for i in range(K):
            if t - K + 1 + i >= 0:
                y[:, t] += w[i] * x[:, t - K + 1 + i]
    return y


def reference_layer(layer, x):
    """The layer, token by token in numpy float64, from the module docstring's formulas."""
    P = lambda param: np.asarray(param[...], np.float64)
    H, n, Dk, Dv = layer.num_heads, layer.n_householder, layer.key_dim, layer.value_dim
    B, L, _ = x.shape
    raw = [x @ P(layer.q_proj.kernel), x @ P(layer.k_proj.kernel), x @ P(layer.v_proj.kernel)]
    if layer.q_conv is not None:
        raw = [causal_conv(r, P(c.weight)) for r, c in zip(raw, (layer.q_conv, layer.k_conv, layer.v_conv))]
    q, k, v = (silu(r) for r in raw)
    beta = sigmoid(x @ P(layer.b_proj.kernel)) * (2.0 if layer.allow_neg_eigval else 1.0)
    S, eye = np.zeros((B, H, Dk, Dv)), np.eye(Dk)
    o = np.zeros((B, L, H, Dv))
    for t in range(L):
        if layer.a_proj is not None:
            a = x[:, t] @ P(layer.a_proj.kernel) + P(layer.dt_bias)
            g = -np.exp(P(layer.A_log)) * np.log1p(np.exp(a))  # (B, H)
            S = np.exp(g)[..., None, None] * S
        k_t = unit(k[:, t].reshape(B, n, H, Dk))  # per token: (n_h, H, Dk), step slowest
        v_t = v[:, t].reshape(B, n, H, Dv)
        b_t = beta[:, t].reshape(B, n, H)
        for j in range(n):
            kj, bj = k_t[:, j], b_t[:, j, :, None, None]
            householder = eye - bj * (kj[..., :, None] * kj[..., None, :])
            S = householder @ S + bj * (kj[..., :, None] * v_t[:, j][..., None, :])
        q_t = unit(q[:, t].reshape(B, H, Dk)) / np.sqrt(Dk)
        o[:, t] = np.einsum("bhkv,bhk->bhv", S, q_t)
    y = o / np.sqrt(np.mean(o * o, axis=-1, keepdims=True) + layer.norm.eps) * P(layer.norm.scale).reshape(H, Dv)
    if layer.g_proj is not None:
        y = y * silu(x @ P(layer.g_proj.kernel)).reshape(B, L, H, Dv)
    return y.reshape(B, L, H * Dv) @ P(layer.o_proj.kernel)


LOOP_CASES = [  # n_householder, use_forget_gate, use_output_gate, use_short_conv, expand_v, method
    (1, False, False, True, 1, "sequential"),
    (1, True, True, True, 2, "chunked"),
    (2, False, True, False, 1, "chunked"),
    (2, True, True, True, 2, "sequential"),
]


@pytest.mark.parametrize("n_h, gate, output_gate, short_conv, expand_v, method", LOOP_CASES)
def test_layer_equals_float64_token_loop(x64, n_h, gate, output_gate, short_conv, expand_v, method):
    layer = DeltaProduct(8, num_heads=2, n_householder=n_h, use_forget_gate=gate, use_output_gate=output_gate,
                         use_short_conv=short_conv, expand_v=expand_v, conv_size=3, method=method, chunk_size=4,
                         rngs=nnx.Rngs(n_h))
    layer = randomize(layer, seed=10 + n_h)
    x = np.random.default_rng(n_h).normal(size=(2, 9, 8))
    expected = reference_layer(layer, x)
    y = jitted(layer, "__call__")(jnp.asarray(x))
    assert y.dtype == jnp.float64
    assert_close(y, expected, rtol=1e-10, name="parallel")
    assert_close(run_steps(layer, jnp.asarray(x))[0], expected, rtol=1e-10, name="steps")


# --- layout -------------------------------------------------------------------------------

def test_layout_is_fla_interleaving(x64):
    # fla: k = rearrange(k, '... t (n h d) -> ... (t n) h d') (likewise v, and beta
    # '... t (n h) -> ... (t n) h'): step j of token t is micro-step t·n_h + j. The layer
    # must equal the one-step rule on that interleaved sequence, with the query on each
    # token's last micro-step and the gate on its first (fla's chunk_gated_delta_product_ref).
    H, n, D = 2, 3, 4
    layer = randomize(DeltaProduct(8, num_heads=H, n_householder=n, rngs=nnx.Rngs(0)), seed=1)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 7, 8)))
    B, L, _ = x.shape
    fla = lambda a, d: a.reshape((B, L, n, H) + d)  # (n h d): step slowest
    heads_first = lambda a, d: jnp.swapaxes(a.reshape((B, L, H, n) + d), 2, 3)  # (h n d): the wrong one

    @jax.jit
    def outputs(x):
        q, k, v = (jax.nn.silu(conv(proj(x))) for conv, proj in ((layer.q_conv, layer.q_proj),
                                                               (layer.k_conv, layer.k_proj),
                                                               (layer.v_conv, layer.v_proj)))
        beta = 2 * jax.nn.sigmoid(layer.b_proj(x))
        A_log, dt_bias = (jnp.asarray(p[...], x.dtype)[None, None] for p in (layer.A_log, layer.dt_bias))
        g = -jnp.exp(A_log) * jax.nn.softplus(layer.a_proj(x) + dt_bias)
        q = l2_normalize(q.reshape(B, L, H, D)) * D ** -0.5
        micro_q = jnp.zeros((B, L, n, H, D), x.dtype).at[:, :, -1].set(q).reshape(B, L * n, H, D)
        micro_g = jnp.zeros((B, L, n, H), x.dtype).at[:, :, 0].set(g).reshape(B, L * n, H)

        def output(layout):
            interleave = lambda a, *d: layout(a, d).reshape((B, L * n, H) + d)
            o, _ = scans.delta_rule(micro_q, l2_normalize(interleave(k, D)), interleave(v, D),
                                    interleave(beta), micro_g, method="sequential")
            o = o[:, n - 1 :: n].reshape(B, L, H * D)
            return layer.o_proj(layer.norm(o, gate=layer.g_proj(x)))

        return layer(x), output(fla), output(heads_first)

    y, interleaved, wrong = outputs(x)
    assert_close(y, interleaved, rtol=1e-10)
    assert relative_error(y, wrong) > 1e-2  # the check tells the layouts apart


# --- eigenvalues ----------------------------------------------------------------------------

@pytest.mark.parametrize("allow_neg_eigval", [True, False])
def test_step_sizes_and_eigenvalue_range(allow_neg_eigval):
    # With unit keys each factor I − β k kᵀ has eigenvalues {1 (Dk − 1 times), 1 − β}.
    layer = DeltaProduct(8, num_heads=2, n_householder=2, allow_neg_eigval=allow_neg_eigval, rngs=nnx.Rngs(0))
    layer.b_proj.kernel.set_value(20.0 * jax.random.normal(jax.random.PRNGKey(1), layer.b_proj.kernel.shape))
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 50, 8))
    _, k, _, beta, _ = jitted(layer, "coefficients")(x)
    beta, k = np.asarray(beta, np.float64), np.asarray(k, np.float64)
    top = 2.0 if allow_neg_eigval else 1.0
    assert beta.min() >= 0.0 and beta.max() <= top
    assert beta.min() < 0.05 * top and beta.max() > 0.95 * top  # the range is used, not just allowed
    factors = np.eye(k.shape[-1]) - beta[..., None, None] * (k[..., :, None] * k[..., None, :])
    eigenvalues = np.linalg.eigvalsh(factors)
    assert eigenvalues.min() >= 1.0 - top - 1e-6 and eigenvalues.max() <= 1.0 + 1e-6
    assert eigenvalues.min() < (-0.9 if allow_neg_eigval else 0.1)
    # ‖k‖ = ‖k_raw‖ / √(‖k_raw‖² + 1e-6) ≤ 1: small raw keys come out slightly short,
    # which keeps the eigenvalues inside the range.
    assert np.linalg.norm(k, axis=-1).max() <= 1.0 + 1e-6


# --- DeltaNet ---------------------------------------------------------------------------------

def test_deltanet_is_deltaproduct_with_one_step():
    options = lambda name: {n: p.default for n, p in layers.spec(name).options().items()}
    deltanet, deltaproduct = options("deltanet"), options("deltaproduct")
    assert deltanet.keys() == deltaproduct.keys()
    assert {n for n in deltanet if deltanet[n] != deltaproduct[n]} == {
        "n_householder", "allow_neg_eigval", "use_forget_gate", "use_output_gate"}
    assert deltanet["n_householder"] == 1 and deltaproduct["n_householder"] == 2
    assert not deltanet["allow_neg_eigval"] and not deltanet["use_forget_gate"]

    net = layers.build("deltanet", 16, rngs=nnx.Rngs(3), num_heads=2)
    assert isinstance(net, DeltaNet) and isinstance(net, DeltaProduct)
    product = layers.build("deltaproduct", 16, rngs=nnx.Rngs(4), num_heads=2, n_householder=1,
                           allow_neg_eigval=False, use_forget_gate=False, use_output_gate=False)
    assert not np.array_equal(product.k_proj.kernel[...], net.k_proj.kernel[...])
    nnx.update(product, nnx.state(net))
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 11, 16))
    np.testing.assert_array_equal(jitted(product, "__call__")(x), jitted(net, "__call__")(x))


# --- the conv cache at the start of a stream --------------------------------------------------

@pytest.mark.parametrize("conv_size", [1, 4])
def test_first_steps_fill_the_conv_cache(conv_size):
    # The first conv_size − 1 steps see a partly zero cache: each equals the parallel
    # output, and the cache holds the last conv_size − 1 inputs of each conv, oldest first.
    layer = randomize(DeltaProduct(8, num_heads=2, conv_size=conv_size, rngs=nnx.Rngs(6)), seed=7)
    x = jax.random.normal(jax.random.PRNGKey(8), (2, 5, 8))
    y = jitted(layer, "__call__")(x)
    initial = layer.init_state(2)
    ys, state = run_steps(layer, x[:, :3])
    assert_close(ys, y[:, :3], rtol=1e-5)
    assert jax.tree.map(jnp.shape, state) == jax.tree.map(jnp.shape, initial)  # constant size
    for cache, proj in ((state.conv_q, layer.q_proj), (state.conv_k, layer.k_proj), (state.conv_v, layer.v_proj)):
        history = jnp.concatenate([jnp.zeros((2, conv_size, proj.out_features)), proj(x[:, :3])], axis=1)
        np.testing.assert_allclose(cache, history[:, history.shape[1] - (conv_size - 1):], rtol=1e-6, atol=1e-7)


def test_short_conv_step_equals_sequence():
    conv = ShortConv(5, 3, use_bias=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 5))
    cache = conv.initial_cache(2)
    assert cache.shape == (2, 2, 5) and cache.dtype == jnp.float32
    ys = []
    for t in range(x.shape[1]):
        y_t, cache = conv.step(x[:, t], cache)
        ys.append(y_t)
    np.testing.assert_allclose(jnp.stack(ys, axis=1), conv(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(cache, x[:, -2:])
    with pytest.raises(ValueError, match=r"^cache must have shape \(2, 2, 5\)"):
        conv.step(x[:, 0], jnp.zeros((2, 3, 5)))


# --- initialization ----------------------------------------------------------------------------

def test_initialization_follows_fla():
    layer = DeltaProduct(32, num_heads=4, rngs=nnx.Rngs(0))
    for proj in (layer.q_proj, layer.k_proj, layer.v_proj, layer.b_proj, layer.a_proj, layer.g_proj, layer.o_proj):
        bound = 2 ** -2.5 * np.sqrt(6.0 / (proj.in_features + proj.out_features))  # xavier_uniform, gain 2^-2.5
        w = np.asarray(proj.kernel[...])
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
        assert proj.bias is None
    A = np.exp(np.asarray(layer.A_log[...]))
    assert A.min() > 0 and A.max() <= 16
    dt = np.asarray(jax.nn.softplus(layer.dt_bias[...]))
    assert dt.min() >= 1e-4 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    np.testing.assert_array_equal(layer.norm.scale[...], 1.0)
    conv_bound = 1 / np.sqrt(4)
    assert np.abs(np.asarray(layer.k_conv.weight[...])).max() <= conv_bound


# --- options ---------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("num_heads", dict(num_heads=0)),
    ("num_heads", dict(num_heads=3)),  # 16 is not divisible by 3
    ("head_dim", dict(head_dim=0)),
    ("expand_v", dict(expand_v=0)),
    ("n_householder", dict(n_householder=0)),
    ("conv_size", dict(conv_size=0)),
    ("chunk_size", dict(chunk_size=0)),
    ("method", dict(method="associative")),
    ("allow_neg_eigval", dict(allow_neg_eigval="yes")),
    ("use_forget_gate", dict(use_forget_gate=1)),
    ("use_short_conv", dict(use_short_conv=None)),
    ("use_output_gate", dict(use_output_gate="no")),
    ("norm_eps", dict(norm_eps=0.0)),
]


@pytest.mark.parametrize("name, override", BAD_OPTIONS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_OPTIONS)])
@pytest.mark.parametrize("mixer", ["deltaproduct", "deltanet"])
def test_bad_options_raise_naming_the_option(mixer, name, override):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        layers.build(mixer, 16, rngs=nnx.Rngs(0), **override)
