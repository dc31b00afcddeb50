"""S5 against lindermanlab/S5's apply_ssm vectors, recurrent == parallel, and its options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import relative_error
from seqmodels import ssm
from seqmodels.layers.common import SSMParam
from seqmodels.layers.s5 import S5, S5Bidirectional, apply_ssm

# (npz output, C array, conj_sym, bidirectional)
VARIANTS = [("y_conjsym", "C_tilde", True, False), ("y_noconjsym", "C_tilde", False, False),
            ("y_bidir_conjsym", "C_tilde_bidir", True, True)]


def scan_steps(mixer, x, dt=None):
    """All outputs of ``mixer.step`` (or ``step_with_timestep``) over x, inside one jit."""
    graphdef, state = nnx.split(mixer)

    @jax.jit
    def run(state, x, dt):
        m = nnx.merge(graphdef, state)

        def body(h, inputs):
            x_t, dt_t = inputs
            y_t, h = m.step(x_t, h) if dt is None else m.step_with_timestep(x_t, dt_t, h)
            return h, y_t

        dts = jnp.zeros(x.shape[:2], x.dtype) if dt is None else dt
        _, ys = jax.lax.scan(body, m.init_state(x.shape[0]), (jnp.moveaxis(x, 1, 0), jnp.moveaxis(dts, 1, 0)))
        return jnp.moveaxis(ys, 0, 1)

    return run(state, x, dt)


def load_reference_layer(reference, cls=S5, **options):
    """A float64 layer whose Λ, B̃, Δ are those of ``discretize_s5.npz`` (the continuous
    system behind ``s5_apply_ssm.npz``), with ``D = 0`` and no activation."""
    d = np.load(reference / "discretize_s5.npz")
    conj_sym = options.pop("conj_sym", True)
    m = cls(4, state_size=16 if conj_sym else 8, blocks=1, conj_sym=conj_sym, activation="none",
            param_dtype=jnp.float64, rngs=nnx.Rngs(0), **options)
    m.A.Lambda_re[...] = jnp.asarray(d["Lambda"].real)
    m.A.Lambda_im[...] = jnp.asarray(d["Lambda"].imag)
    m.A.log_step[...] = jnp.log(jnp.asarray(d["Delta"]))
    m.B[...] = jnp.stack([d["B_tilde"].real, d["B_tilde"].imag], axis=-1)
    m.D[...] = jnp.zeros(4)
    return m


def set_c(m, c):
    m.C[...] = jnp.stack([c.real, c.imag], axis=-1)


@pytest.mark.parametrize("method", ["sequential", "associative"])
@pytest.mark.parametrize("variant", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_apply_ssm_equals_reference(reference, x64, variant, method):
    key, c_key, conj_sym, bidirectional = variant
    d = np.load(reference / "s5_apply_ssm.npz")
    y, _ = apply_ssm(jnp.asarray(d["Lambda_bar"]), jnp.asarray(d["B_bar"]), jnp.asarray(d[c_key]),
                     jnp.asarray(d["u"])[None], conj_sym=conj_sym, bidirectional=bidirectional, method=method)
    assert y.dtype == jnp.float64
    assert relative_error(y[0], d[key]) <= 1e-10


@pytest.mark.parametrize("variant", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_layer_equals_reference(reference, x64, variant):
    """Parameters -> discretization -> scan -> read-out, end to end, in float64."""
    key, c_key, conj_sym, bidirectional = variant
    d = np.load(reference / "s5_apply_ssm.npz")
    m = load_reference_layer(reference, S5Bidirectional if bidirectional else S5, conj_sym=conj_sym)
    set_c(m, d[c_key])
    lambda_bar, b_bar, _ = m.discretized()
    assert relative_error(lambda_bar, d["Lambda_bar"]) <= 1e-10
    assert relative_error(b_bar, d["B_bar"]) <= 1e-10
    u = jnp.asarray(d["u"])[None]
    assert relative_error(m(u)[0], d[key]) <= 1e-10
    if not bidirectional:
        assert relative_error(scan_steps(m, u)[0], d[key]) <= 1e-10


def test_bilinear_discretization_equals_reference(reference, x64):
    m = load_reference_layer(reference, discretization="bilinear")
    d = np.load(reference / "discretize_s5.npz")
    lambda_bar, b_bar, _ = m.discretized()
    assert relative_error(lambda_bar, d["Lambda_bar_bilinear"]) <= 1e-10
    assert relative_error(b_bar, d["B_bar_bilinear"]) <= 1e-10


def test_step_equals_scan_float64(x64):
    m = S5(8, state_size=16, blocks=2, clip_eigs=True, method="chunked", param_dtype=jnp.float64,
           rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 1000, 8), jnp.float64)
    y = m(x)
    assert y.dtype == jnp.float64 and m.init_state(2).dtype == jnp.complex128
    assert relative_error(scan_steps(m, x), y) <= 1e-9


def test_step_equals_scan_float32():
    m = S5(8, state_size=16, blocks=2, method="chunked", activation="half_glu1", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 1000, 8))
    assert relative_error(scan_steps(m, x), nnx.jit(lambda m, x: m(x))(m, x)) <= 1e-4


def test_ssm_parameters_are_ssm_params():
    m = S5(8, state_size=16, blocks=2, rngs=nnx.Rngs(0))
    ssm_paths = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(m, SSMParam))}
    assert ssm_paths == {"A/Lambda_re", "A/Lambda_im", "A/log_step", "B"}
    assert type(m.C) is nnx.Param and type(m.D) is nnx.Param
    for p in jax.tree.leaves(nnx.state(m, nnx.Param)):
        assert p.dtype == jnp.float32  # no complex parameters
    assert m.B.shape == (8, 8, 2) and m.C.shape == (8, 8, 2)


def test_hippo_n_init_blocks_and_conj_sym():
    m = S5(8, state_size=16, blocks=2, rngs=nnx.Rngs(0))
    expected = ssm.s5_hippo_n(16, 2, True).Lambda
    np.testing.assert_allclose(m.A.eigenvalues(), expected.astype(np.complex64), rtol=1e-6)
    np.testing.assert_allclose(m.A.Lambda_re[...], -0.5)
    assert m.init_state(3).shape == (3, 8)
    assert S5(8, state_size=16, blocks=2, conj_sym=False, rngs=nnx.Rngs(0)).init_state(3).shape == (3, 16)
    steps = m.A.steps()
    assert bool(jnp.all((steps >= 1e-3 * (1 - 1e-6)) & (steps <= 1e-1 * (1 + 1e-6))))
    with pytest.raises(ValueError, match="blocks"):
        S5(8, state_size=16, blocks=3, rngs=nnx.Rngs(0))


def test_clip_eigs_keeps_the_system_stable():
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 500, 8))
    outputs = {}
    for clip in (True, False):
        m = S5(8, state_size=8, blocks=1, clip_eigs=clip, activation="none", rngs=nnx.Rngs(0))
        m.A.Lambda_re[...] = jnp.full(4, 0.5)  # unstable continuous eigenvalues
        m.A.log_step[...] = jnp.zeros(4)       # Δ = 1
        lambda_bar = m.discretized()[0]
        if clip:
            assert bool(jnp.all(jnp.real(m.A.eigenvalues()) <= -1e-4))
            assert bool(jnp.all(jnp.abs(lambda_bar) < 1))
        outputs[clip] = float(jnp.max(jnp.abs(m(x))))
    assert np.isfinite(outputs[True]) and outputs[True] < 1e3
    assert not outputs[False] < 1e30  # exp(0.5 · 500) overflows float32


def test_step_rescale_scales_the_steps():
    m1 = S5(8, state_size=16, blocks=2, rngs=nnx.Rngs(0))
    m2 = S5(8, state_size=16, blocks=2, step_rescale=2.0, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(m2.A.steps(), 2.0 * m1.A.steps(), rtol=1e-6)


def test_bidirectional_is_not_causal():
    m = S5Bidirectional(8, state_size=16, blocks=2, rngs=nnx.Rngs(0))
    assert not S5Bidirectional.causal and S5.causal
    assert m.C.shape == (8, 16, 2)  # C̃ = [C̃₁ C̃₂], twice the width
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 8))
    y, y2 = m(x), m(x.at[:, -1].add(1.0))
    assert float(jnp.max(jnp.abs(y2[:, 0] - y[:, 0]))) > 1e-5
    with pytest.raises(NotImplementedError):
        m.init_state(2)
    with pytest.raises(NotImplementedError):
        m.step(x[:, 0], None)


@pytest.mark.parametrize("cls", [S5, S5Bidirectional])
def test_constant_timesteps_give_the_regular_output(cls):
    m = cls(8, state_size=16, blocks=2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 40, 8))
    y = m(x)
    assert relative_error(m.apply_with_timesteps(x, jnp.ones((2, 40))), y) <= 1e-5
    rescaled = cls(8, state_size=16, blocks=2, step_rescale=2.5, rngs=nnx.Rngs(0))
    assert relative_error(m.apply_with_timesteps(x, jnp.full((2, 40), 2.5)), rescaled(x)) <= 1e-5


def test_irregular_timesteps_equal_an_explicit_loop(x64):
    m = S5(4, state_size=8, blocks=1, activation="none", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 30, 4), jnp.float64)
    dt = jax.random.uniform(jax.random.PRNGKey(6), (2, 30), jnp.float64, 0.1, 5.0)
    y = m.apply_with_timesteps(x, dt)
    Lam, step = np.asarray(m.A.eigenvalues()), np.asarray(m.A.steps())
    B, C = np.asarray(m.B[..., 0] + 1j * m.B[..., 1]), np.asarray(m.C[..., 0] + 1j * m.C[..., 1])
    xn, dtn, h = np.asarray(x), np.asarray(dt), np.zeros((2, 4), complex)
    for k in range(30):
        lam_bar = np.exp(Lam * step * dtn[:, k:k + 1])                 # (batch, P)
        h = lam_bar * h + (lam_bar - 1) / Lam * (xn[:, k] @ B.T)       # ZOH with Δ_k = dt_k·Δ
        expected = 2 * (h @ C.T).real + np.asarray(m.D[...]) * xn[:, k]
        assert relative_error(y[:, k], expected) <= 1e-10
    assert relative_error(scan_steps(m, x, dt), y) <= 1e-10
