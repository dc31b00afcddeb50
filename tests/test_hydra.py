"""Hydra: the quasiseparable mixer and the full layer against goombalab/hydra's outputs
(``hydra_mixer.npz``, ``hydra_layer.npz``), and against the explicitly materialized
quasiseparable matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_close
from seqmodels.layers import hydra

METHODS = ["sequential", "chunked"]


def _mixer_reference(reference, dtype):
    """The npz's tensors, fed to the function the layer itself uses. The reference's
    ``Quasiseparable`` mixer applies softplus to ``dt`` without a bias and shares one
    ``B, C`` between the directions: ``dt_bias = 0``, ``B_fwd = B_bwd``, ``C_fwd = C_bwd``."""
    m = np.load(reference / "hydra_mixer.npz")
    N, H = int(m["d_state"]), int(m["nheads"])
    a = lambda name: jnp.asarray(m[name], dtype)
    B, C = a("BC")[..., :N], a("BC")[..., N:]
    args = (a("x"), a("dt"), B, C, B, C)
    kwargs = dict(dt_bias=jnp.zeros((H,), dtype), A_log=a("A_log"), D=a("D"), W_D=a("fc_D_weight").T,
                  headdim=int(m["headdim"]), chunk_size=int(m["chunk_size"]))
    return m, args, kwargs


@pytest.mark.parametrize("method", METHODS)
def test_mixer_matches_reference_f64(reference, x64, method):
    m, args, kwargs = _mixer_reference(reference, jnp.float64)
    y = hydra.quasiseparable_mix(*args, method=method, **kwargs)
    assert y.dtype == jnp.float64
    assert_close(y, m["y_f64"], rtol=1e-10, name="y")


@pytest.mark.parametrize("method", METHODS)
def test_mixer_matches_reference_f32(reference, method):
    m, args, kwargs = _mixer_reference(reference, jnp.float32)
    y = hydra.quasiseparable_mix(*args, method=method, **kwargs)
    assert y.dtype == jnp.float32
    assert_close(y, m["y_f32"], rtol=1e-5, name="y")


def _reference_layer(reference, dtype, method="auto"):
    """A ``Hydra`` built at the reference config with the npz's parameters (torch
    ``(out, in)`` layouts transposed to ours)."""
    ref = np.load(reference / "hydra_layer.npz")
    layer = hydra.Hydra(int(ref["d_model"]), d_state=int(ref["d_state"]), d_conv=int(ref["d_conv"]),
                        expand=int(ref["expand"]), headdim=int(ref["headdim"]), method=method,
                        chunk_size=int(ref["chunk_size"]), rngs=nnx.Rngs(0))
    p = lambda name: jnp.asarray(ref["param_" + name], dtype)
    layer.in_proj.kernel.set_value(p("in_proj_weight").T)
    layer.conv_weight.set_value(p("conv1d_weight")[:, 0, :].T)
    layer.conv_bias.set_value(p("conv1d_bias"))
    layer.dt_bias.set_value(p("dt_bias"))
    layer.A_log.set_value(p("A_log"))
    layer.D.set_value(p("D"))
    layer.fc_D.kernel.set_value(p("fc_D_weight").T)
    layer.norm.scale.set_value(p("norm_weight"))
    layer.out_proj.kernel.set_value(p("out_proj_weight").T)
    return ref, layer


@pytest.mark.parametrize("method", METHODS)
def test_layer_matches_reference_f64(reference, x64, method):
    ref, layer = _reference_layer(reference, jnp.float64, method)
    out = layer(jnp.asarray(ref["u"], jnp.float64))
    assert out.dtype == jnp.float64
    assert_close(out, ref["out_f64"], rtol=1e-10, name="out")


def test_layer_matches_reference_f32(reference):
    ref, layer = _reference_layer(reference, jnp.float32)
    out = layer(jnp.asarray(ref["u"], jnp.float32))
    assert_close(out, ref["out_f32"], rtol=1e-5, name="out")


def _quasiseparable_matrix(dt, B_f, C_f, B_b, C_b, x, dt_bias, A_log, D, W_D, headdim):
    """``M (b, H, L, L)`` entry by entry from the paper's definition (numpy loops)."""
    b, L, width = x.shape
    H = width // headdim
    softplus = lambda a: np.log1p(np.exp(a))
    delta_f, delta_b = softplus(dt[..., :H] + dt_bias), softplus(dt[..., H:] + dt_bias)
    A = -np.exp(A_log)
    diag = D + x @ W_D
    M = np.zeros((b, H, L, L))
    for n in range(b):
        for h in range(H):
            for i in range(L):
                for j in range(L):
                    if i > j:
                        decay = np.exp(A[h] * delta_f[n, j + 1:i, h].sum())
                        M[n, h, i, j] = (C_f[n, i - 1] @ B_f[n, j]) * delta_f[n, j, h] * decay
                    elif i < j:
                        decay = np.exp(A[h] * delta_b[n, i + 1:j, h].sum())
                        M[n, h, i, j] = (C_b[n, i + 1] @ B_b[n, j]) * delta_b[n, j, h] * decay
                    else:
                        M[n, h, i, i] = diag[n, i, h]
    return M


@pytest.mark.parametrize("method", METHODS)
def test_mixer_equals_materialized_quasiseparable_matrix(x64, method):
    rng = np.random.default_rng(0)
    b, L, H, P, N = 2, 11, 2, 3, 4
    x = rng.normal(size=(b, L, H * P))
    dt = rng.normal(size=(b, L, 2 * H))
    B_f, C_f, B_b, C_b = (rng.normal(size=(b, L, N)) for _ in range(4))
    dt_bias, A_log, D = rng.normal(size=H), 0.5 * rng.normal(size=H), rng.normal(size=H)
    W_D = rng.normal(size=(H * P, H))
    M = _quasiseparable_matrix(dt, B_f, C_f, B_b, C_b, x, dt_bias, A_log, D, W_D, P)
    expected = np.einsum("nhij,njhp->nihp", M, x.reshape(b, L, H, P)).reshape(b, L, H * P)
    y = hydra.quasiseparable_mix(*(jnp.asarray(a) for a in (x, dt, B_f, C_f, B_b, C_b)),
                                 dt_bias=jnp.asarray(dt_bias), A_log=jnp.asarray(A_log), D=jnp.asarray(D),
                                 W_D=jnp.asarray(W_D), headdim=P, method=method, chunk_size=4)
    assert_close(y, expected, rtol=1e-12, name="y")


def test_groups_share_B_and_C_across_heads():
    """ngroups=2: heads 0-1 read group 0, heads 2-3 group 1 (chunked == sequential too)."""
    layer = hydra.Hydra(16, d_state=4, headdim=8, ngroups=2, method="chunked", chunk_size=8, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 21, 16))
    y = layer(x)
    layer.method = "sequential"
    assert_close(y, layer(x), rtol=1e-5, name="y")
    assert layer.heads == 4 and layer.in_proj.out_features == 2 * 32 + 4 * 2 * 4 + 2 * 4


def test_bad_options_raise():
    with pytest.raises(ValueError, match="d_conv must be odd"):
        hydra.Hydra(16, d_conv=4, headdim=8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="headdim=12"):
        hydra.Hydra(16, headdim=12, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="ngroups=3"):
        hydra.Hydra(16, headdim=8, ngroups=3, rngs=nnx.Rngs(0))


def test_mixer_checks_shapes():
    x, B = jnp.zeros((1, 5, 8)), jnp.zeros((1, 5, 4))
    kwargs = dict(dt_bias=jnp.zeros(2), A_log=jnp.zeros(2), D=jnp.zeros(2), W_D=jnp.zeros((8, 2)), headdim=4)
    with pytest.raises(ValueError, match=r"dt must be .*\(1, 5, 4\)"):
        hydra.quasiseparable_mix(x, jnp.zeros((1, 5, 2)), B, B, B, B, **kwargs)
    with pytest.raises(ValueError, match="C_bwd must be"):
        hydra.quasiseparable_mix(x, jnp.zeros((1, 5, 4)), B, B, B, B[:, :4], **kwargs)


def _ssd_loop(x, delta, A, B, C):
    """Mamba-2's SSD, one step at a time (numpy): ``h_t = exp(δ_t A) h_{t-1} + δ_t x_t B_tᵀ``,
    ``o_t = h_t C_t``; x ``(b, L, H, P)``, delta ``(b, L, H)``, B, C ``(b, L, N)``."""
    b, L, H, P = x.shape
    h, out = np.zeros((b, H, P, B.shape[-1])), np.zeros(x.shape)
    for t in range(L):
        h = np.exp(delta[:, t] * A)[..., None, None] * h + np.einsum(
            "bh,bhp,bn->bhpn", delta[:, t], x[:, t], B[:, t])
        out[:, t] = np.einsum("bhpn,bn->bhp", h, C[:, t])
    return out


def _random_mix_inputs(rng, b, L, H, P, N, directions):
    x = rng.normal(size=(b, L, H * P))
    dt = rng.normal(size=(b, L, directions * H))
    BC = [rng.normal(size=(b, L, N)) for _ in range(2 * directions)]
    dt_bias, A_log, D = rng.normal(size=H), 0.5 * rng.normal(size=H), rng.normal(size=H)
    return x, dt, BC, dt_bias, A_log, D, rng.normal(size=(H * P, H))


@pytest.mark.parametrize("method", METHODS)
def test_add_is_the_sum_of_two_separate_ssd_scans(x64, method):
    """combine="add": SS(X) + flip(SS(flip(X))) + D X, each scan computed on its own."""
    rng = np.random.default_rng(1)
    b, L, H, P, N = 2, 13, 2, 3, 4
    x, dt, (B_f, C_f, B_b, C_b), dt_bias, A_log, D, _ = _random_mix_inputs(rng, b, L, H, P, N, 2)
    softplus = lambda a: np.log1p(np.exp(a))
    A, xh = -np.exp(A_log), x.reshape(b, L, H, P)
    forward = _ssd_loop(xh, softplus(dt[..., :H] + dt_bias), A, B_f, C_f)
    flip = lambda a: a[:, ::-1]
    backward = flip(_ssd_loop(flip(xh), flip(softplus(dt[..., H:] + dt_bias)), A, flip(B_b), flip(C_b)))
    expected = (forward + backward + xh * D[:, None]).reshape(b, L, H * P)
    y = hydra.quasiseparable_mix(*(jnp.asarray(a) for a in (x, dt, B_f, C_f, B_b, C_b)),
                                 dt_bias=jnp.asarray(dt_bias), A_log=jnp.asarray(A_log), D=jnp.asarray(D),
                                 W_D=None, headdim=P, shift=False, method=method, chunk_size=4)
    assert_close(y, expected, rtol=1e-12, name="y")


def test_add_layer_has_no_free_diagonal_and_no_shift():
    kwargs = dict(d_state=4, headdim=8, d_conv=3, method="sequential")
    add = hydra.Hydra(16, combine="add", rngs=nnx.Rngs(0), **kwargs)
    assert add.fc_D is None
    count = lambda m: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
    qs = hydra.Hydra(16, rngs=nnx.Rngs(0), **kwargs)
    assert count(qs) - count(add) == qs.d_inner * qs.heads                   # fc_D only
    # without a shift, output t depends on x_t through the scans' own diagonal: with the
    # diagonal D = 0 a one-position sequence still has a non-zero output
    add.D.set_value(jnp.zeros_like(add.D[...]))
    assert float(jnp.max(jnp.abs(add(jax.random.normal(jax.random.PRNGKey(0), (1, 1, 16)))))) > 0
    with pytest.raises(ValueError, match="combine must be one of"):
        hydra.Hydra(16, combine="concat", rngs=nnx.Rngs(0), **kwargs)


@pytest.mark.parametrize("method", METHODS)
def test_causal_mix_is_the_lower_triangle_of_the_quasiseparable_matrix(x64, method):
    rng = np.random.default_rng(2)
    b, L, H, P, N = 2, 11, 2, 3, 4
    x, dt, (B_f, C_f, B_b, C_b), dt_bias, A_log, D, W_D = _random_mix_inputs(rng, b, L, H, P, N, 2)
    M = np.tril(_quasiseparable_matrix(dt, B_f, C_f, B_b, C_b, x, dt_bias, A_log, D, W_D, P))
    expected = np.einsum("nhij,njhp->nihp", M, x.reshape(b, L, H, P)).reshape(b, L, H * P)
    args = dict(dt_bias=jnp.asarray(dt_bias), A_log=jnp.asarray(A_log), D=jnp.asarray(D), W_D=jnp.asarray(W_D),
                headdim=P, method=method, chunk_size=4)
    y, _ = hydra.causal_quasiseparable_mix(*(jnp.asarray(a) for a in (x, dt[..., :H], B_f, C_f)), **args)
    assert_close(y, expected, rtol=1e-12, name="y")
    # in two pieces, the second from the first's state
    cut = 6
    pieces = [jnp.asarray(a) for a in (x, dt[..., :H], B_f, C_f)]
    y1, state = hydra.causal_quasiseparable_mix(*(a[:, :cut] for a in pieces), **args)
    y2, _ = hydra.causal_quasiseparable_mix(*(a[:, cut:] for a in pieces), state=state, **args)
    assert_close(jnp.concatenate([y1, y2], axis=1), expected, rtol=1e-12, name="y in pieces")


def test_causal_layer_matches_hydra_parameters_at_twice_the_state():
    d_model, N = 16, 4
    qs = hydra.Hydra(d_model, d_state=N, headdim=8, d_conv=3, rngs=nnx.Rngs(0))
    causal = hydra.HydraCausal(d_model, d_state=2 * N, headdim=8, d_conv=3, rngs=nnx.Rngs(0))
    count = lambda m: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
    assert count(qs) - count(causal) == d_model * qs.heads                    # Hydra's backward dt columns
    assert causal.causal and not qs.causal and causal.conv_weight.shape == qs.conv_weight.shape
    hydra.HydraCausal(d_model, d_state=N, headdim=8, d_conv=4, rngs=nnx.Rngs(0))   # even conv: fine if causal
