"""LightNet: the fla reference vectors, the running-softmax identity, the order-free
non-causal form, step == parallel, and the MD-LRPE / MD-TPE positional encodings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import seqmodels.layers as layers
from seqmodels import scans
from seqmodels.layers.lightnet import LightNet, LightNet2D, LightNetBidirectional, lightnet_causal, lightnet_gate, lightnet_global
from seqmodels.layers.positional import MdLrpe, MdTpe, grid_positions

from helpers import assert_close

SMALL = dict(num_heads=2, gate_low_rank_dim=4)


@pytest.fixture(scope="module")
def npz(reference):
    return dict(np.load(reference / "lightnet.npz"))


def reference_layer(npz, dtype):
    """fla's configuration (hidden 16, 2 heads, key dim 8) with its projection weights."""
    mixer = LightNet(16, num_heads=2, key_dim=8, gate_low_rank_dim=4, use_lrpe=False, use_tpe=False,
                     rngs=nnx.Rngs(0))
    for dense, name in ((mixer.query, "W_q"), (mixer.key, "W_k"), (mixer.value, "W_v")):
        dense.kernel.set_value(jnp.asarray(npz[name].T, dtype))  # torch Linear stores (out, in)
    return mixer


@pytest.mark.parametrize("suffix", ["f64", "f32"])
def test_gate_and_recurrence_match_reference(npz, suffix, x64):
    dtype = jnp.float64 if suffix == "f64" else jnp.float32
    get = lambda name: jnp.asarray(npz[f"{name}_{suffix}"], dtype)
    tol = 1e-10 if suffix == "f64" else 1e-5
    k_tilde, log_decay, _ = lightnet_gate(get("k_raw"))
    assert_close(k_tilde, get("k_tilde"), tol, "k_tilde")
    assert_close(log_decay, get("g"), tol, "g")
    for method in ("sequential", "chunked"):
        o, (S, _) = lightnet_causal(get("q"), get("k_raw"), get("v"), scale=float(npz["scale"]), method=method)
        assert o.dtype == dtype
        assert_close(o, get("o"), tol, f"o ({method})")
        assert_close(S, get("state"), tol, f"state ({method})")


@pytest.mark.parametrize("suffix", ["f64", "f32"])
def test_layer_matches_reference(npz, suffix, x64):
    """The layer's own projections + recurrence reproduce fla's output before the output stage."""
    dtype = jnp.float64 if suffix == "f64" else jnp.float32
    mixer = reference_layer(npz, dtype)
    _, o, state = mixer.mix(jnp.asarray(npz["x"], dtype))
    tol = 1e-10 if suffix == "f64" else 1e-5
    assert_close(o, jnp.asarray(npz[f"o_{suffix}"]), tol, "o")
    assert_close(state.recurrent, jnp.asarray(npz[f"state_{suffix}"]), tol if suffix == "f64" else 1e-5, "state")
    assert mixer(jnp.asarray(npz["x"], dtype)).shape == npz["x"].shape


def test_causal_is_a_per_feature_running_softmax(x64):
    """GLA form == the (max, normalizer, sum) softmax scan per key feature, even for huge keys."""
    B, L, H, Dk, Dv = 2, 29, 2, 3, 4
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (B, L, H, d), jnp.float64) for i, d in enumerate((Dk, Dk, Dv)))
    k = 60.0 * k  # exp(k) alone would overflow in float32 and lose everything in float64 sums
    o, (S, z) = lightnet_causal(q, k, v, scale=0.5)
    values = jnp.broadcast_to(v[:, :, :, None, :], (B, L, H, Dk, Dv))
    rows, final = scans.softmax_scan(k, values)  # rows[t, j] = Σ_{s≤t} e^{k_sj} v_s / Σ_{s≤t} e^{k_sj}
    assert_close(o, 0.5 * jnp.einsum("blhk,blhkv->blhv", q, rows), 1e-10, "o")
    assert_close(S, final.weighted_sum / final.normalizer[..., None], 1e-10, "S")
    assert_close(z, final.max + jnp.log(final.normalizer), 1e-10, "z")
    o32, _ = lightnet_causal(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), scale=0.5)
    assert_close(o32, o, 1e-4, "o float32")


@pytest.mark.parametrize("key_scale", [3.0, 40.0])  # referenced form / out of its range: the gated one
def test_auto_equals_gated_form_values_gradients_and_continuation(x64, key_scale):
    B, L, H, Dk, Dv = 2, 21, 2, 3, 4
    q, k, v = (jax.random.normal(jax.random.PRNGKey(10 + i), (B, L, H, d), jnp.float64)
               for i, d in enumerate((Dk, Dk, Dv)))
    k = key_scale * k
    positions = grid_positions((L,))
    lrpe = MdLrpe(Dk)
    within = float(jnp.max(jnp.max(k, axis=1, keepdims=True) - jax.lax.cumlogsumexp(k, axis=1)))
    assert (within <= 50.0) == (key_scale == 3.0)  # which form "auto" takes

    def run(method, q, k, v, split=L):
        fm = lambda x, p: lrpe(x, p)
        o1, (S, z) = lightnet_causal(q[:, :split], k[:, :split], v[:, :split], scale=0.4, method=method,
                                     feature_map=lambda x: fm(x, positions[:, :split]))
        if split == L:
            return o1, S, z
        o2, (S, z) = lightnet_causal(q[:, split:], k[:, split:], v[:, split:], S, z, scale=0.4, method=method,
                                     feature_map=lambda x: fm(x, positions[:, split:]))
        return jnp.concatenate([o1, o2], axis=1), S, z

    gated = run("sequential", q, k, v)
    assert_close(run("auto", q, k, v), gated, 1e-10, "auto")
    assert_close(run("auto", q, k, v, split=8), gated, 1e-10, "auto, continued from (S, z)")
    loss = lambda method: lambda q, k, v: sum(jnp.sum(jnp.sin(x)) for x in run(method, q, k, v, split=8))
    grads = jax.jit(jax.grad(loss("auto"), argnums=(0, 1, 2)))(q, k, v)
    assert_close(grads, jax.jit(jax.grad(loss("sequential"), argnums=(0, 1, 2)))(q, k, v), 1e-9, "gradients")


def test_global_form_equals_dense_formula(x64):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 3, 4, 2, 5), jnp.float64) for i in range(3))
    o = lightnet_global(q, 40.0 * k, v, scale=0.3)
    weights = jax.nn.softmax((40.0 * k).reshape(2, 12, 2, 5), axis=1)
    expected = 0.3 * jnp.einsum("bnhk,bshk,bshv->bnhv", q.reshape(2, 12, 2, 5), weights, v.reshape(2, 12, 2, 5))
    assert_close(o, expected.reshape(o.shape), 1e-10)


def test_non_causal_2d_is_one_order_free_scan():
    """Without positional encodings the image mixer equals the sequence mixer on the raster
    *and* on the column-major flattening: one reduction, no scan order to choose."""
    options = dict(SMALL, use_lrpe=False, use_tpe=False)
    image, sequence = LightNet2D(16, rngs=nnx.Rngs(0), **options), LightNetBidirectional(16, rngs=nnx.Rngs(0), **options)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 7, 16))
    y = image(x)
    raster = sequence(x.reshape(2, 35, 16)).reshape(x.shape)
    column = sequence(jnp.swapaxes(x, 1, 2).reshape(2, 35, 16)).reshape(2, 7, 5, 16)
    np.testing.assert_allclose(raster, y, rtol=0, atol=1e-5)
    np.testing.assert_allclose(jnp.swapaxes(column, 1, 2), y, rtol=0, atol=1e-5)
    # a causal (order-dependent) scan does not have this property
    causal = LightNet(16, rngs=nnx.Rngs(0), **options)
    c_raster = causal(x.reshape(2, 35, 16)).reshape(x.shape)
    c_column = jnp.swapaxes(causal(jnp.swapaxes(x, 1, 2).reshape(2, 35, 16)).reshape(2, 7, 5, 16), 1, 2)
    assert float(jnp.max(jnp.abs(c_raster - c_column))) > 1e-3


@pytest.mark.parametrize("use_lrpe,use_tpe", [(True, True), (False, False)])
def test_step_equals_parallel(use_lrpe, use_tpe):
    mixer = LightNet(16, use_lrpe=use_lrpe, use_tpe=use_tpe, rngs=nnx.Rngs(0), **SMALL)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 13, 16))
    y = mixer(x)
    state = mixer.init_state(2)
    step = nnx.jit(lambda m, x_t, s: m.step(x_t, s))
    ys = []
    for t in range(x.shape[1]):
        y_t, state = step(mixer, x[:, t], state)
        ys.append(y_t)
    np.testing.assert_allclose(jnp.stack(ys, axis=1), y, rtol=0, atol=1e-5)
    # constant-size state: (S, z, position[, tpe])
    expected = [(2, 2, 16 if use_lrpe else 8, 8), (2, 2, 8), (2,)] + ([(2, 2, 8)] if use_tpe else [])
    assert [leaf.shape for leaf in jax.tree.leaves(state)] == expected
    assert float(state.position[0]) == x.shape[1]
    # chunked evaluation (the accelerator path) agrees with the sequential scan
    chunked = LightNet(16, use_lrpe=use_lrpe, use_tpe=use_tpe, method="chunked", rngs=nnx.Rngs(0), **SMALL)
    np.testing.assert_allclose(chunked(x), y, rtol=0, atol=1e-5)


def test_md_lrpe_is_relative(x64):
    for m in (1, 2):
        lrpe = MdLrpe(6, spatial_ndim=m)
        q, k = (jax.random.normal(jax.random.PRNGKey(i), (1, 9, 2, 6), jnp.float64) for i in range(2))
        p = jax.random.randint(jax.random.PRNGKey(3), (1, 9, m), 0, 50).astype(jnp.float64)
        scores = lambda p: jnp.einsum("bihd,bjhd->bhij", lrpe(q, p), lrpe(k, p))
        shift = jnp.arange(1, m + 1, dtype=jnp.float64).reshape(1, 1, m) * 17.0
        assert_close(scores(p + shift), scores(p), 1e-10, f"shifted scores (m={m})")
        moved = p.at[:, 0].add(3.0)  # moving one position alone does change its scores
        assert float(jnp.max(jnp.abs(scores(moved) - scores(p)))) > 1e-3
        # and the score is Σ_c q_c k_c cos(a_c(p_i) - a_c(p_j))
        a = lrpe.angles(p)
        expected = jnp.einsum("bihd,bjhd,bijd->bhij", q, k, jnp.cos(a[:, :, None] - a[:, None, :]))
        assert_close(scores(p), expected, 1e-10)


def test_md_lrpe_frequency_layout():
    lrpe = MdLrpe(6, spatial_ndim=2)
    assert lrpe.num_frequencies == 4  # nextpow2(ceil(6 / 2))
    a = lrpe.angles(jnp.array([[2.0, 5.0]]))
    theta = lrpe.frequencies()
    np.testing.assert_allclose(a[0], np.concatenate([2 * theta, 5 * theta])[:6], rtol=1e-6)


def test_md_tpe_is_a_decaying_toeplitz_operator(x64):
    """Before its norm and projection: c Σ_{s≤t} λ^{t−s} x_s (causal), c Σ_s λ^{|t−s|} x_s per axis (not)."""
    x = jax.random.normal(jax.random.PRNGKey(4), (1, 4, 5, 8), jnp.float64)
    tpe = MdTpe(8, num_heads=2, spatial_ndim=2, causal=False, rngs=nnx.Rngs(0))
    lam = jax.nn.sigmoid(tpe.decay_logit[...].astype(jnp.float64))
    heads = x.reshape(1, 4, 5, 2, 4)
    for axis, n in ((0, 4), (1, 5)):
        t = jnp.arange(n)
        T = lam[axis][:, None, None] ** jnp.abs(t[:, None] - t[None, :])[None]  # (heads, t, s)
        spec = "hts,bsjhd->btjhd" if axis == 0 else "hts,bjshd->bjthd"
        expected = jnp.einsum(spec, T, heads)
        assert_close(tpe._toeplitz(heads, axis)[0], expected, 1e-10, f"axis {axis}")
    causal = MdTpe(8, num_heads=2, rngs=nnx.Rngs(0))
    seq = heads[:, :, 0]  # (1, 4, 2, 4)
    t = jnp.arange(4)
    lam = jax.nn.sigmoid(causal.decay_logit[...].astype(jnp.float64))[0]
    lag = (t[:, None] - t[None, :])[None]
    T = jnp.where(lag >= 0, lam[:, None, None] ** jnp.maximum(lag, 0), 0.0)
    assert_close(causal._toeplitz(seq, 0)[0], jnp.einsum("hts,bshd->bthd", T, seq), 1e-10, "causal")


def test_options_switch_encodings_and_registry():
    x = jax.random.normal(jax.random.PRNGKey(5), (1, 3, 4, 16))
    plain = LightNet2D(16, use_lrpe=False, use_tpe=False, rngs=nnx.Rngs(0), **SMALL)
    full = LightNet2D(16, rngs=nnx.Rngs(0), **SMALL)
    assert plain.lrpe is None and plain.tpe is None and full.lrpe.spatial_ndim == 2 and full.tpe.spatial_ndim == 2
    assert float(jnp.max(jnp.abs(full(x) - plain(x)))) > 1e-4
    assert grid_positions((3, 4)).shape == (1, 3, 4, 2)
    assert {"lightnet", "lightnet_bidirectional", "lightnet2d"} <= set(layers.names())
    assert layers.spec("lightnet").cls.causal and not layers.spec("lightnet2d").cls.causal
    assert layers.spec("lightnet2d").cls.spatial_ndim == 2
    with pytest.raises(ValueError, match="divisible by num_heads"):
        layers.build("lightnet", 10, rngs=nnx.Rngs(0), num_heads=4)
