"""S4 and S4D: convolution == scan == step, kernels == ssm kernels, step state, parameter groups, options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import assert_close, relative_error

import seqmodels.layers as layers
from seqmodels import ssm
from seqmodels.layers.common import SSMParam
from seqmodels.layers.s4 import S4, S4D, S4Bidirectional, S4DBidirectional, SSMStepState

H, N = 4, 8


def cast_parameters(model, dtype):
    """Cast every variable of ``model`` to ``dtype`` in place (float64 tests)."""
    nnx.update(model, jax.tree.map(lambda a: a.astype(dtype), nnx.state(model)))
    return model


def run_steps(model, x, initial=None):
    """``step`` over every position inside one jitted ``lax.scan``, from ``initial`` (default:
    ``init_state`` inside the jitted function)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def go(state, x, initial):
        m = nnx.merge(graphdef, state)

        def body(carry, x_t):
            y_t, carry = m.step(x_t, carry)
            return carry, y_t

        carry = m.init_state(x.shape[0]) if initial is None else initial
        _, ys = jax.lax.scan(body, carry, jnp.moveaxis(x, 1, 0))
        return jnp.moveaxis(ys, 0, 1)

    return go(state, x, initial)


def outputs_by_mode(cls, x, dtype, with_step=True, **options):
    """``{"conv": y, "scan": y[, "step": y]}`` of one set of parameters (same seed)."""
    ys = {}
    for mode in ("conv", "scan"):
        model = cast_parameters(cls(H, state_size=N, mode=mode, rngs=nnx.Rngs(0), **options), dtype)
        ys[mode] = jax.jit(lambda x, m=model: m(x))(x)
    if model.causal and with_step:
        ys["step"] = run_steps(model, x)
    return ys


CASES = {"s4": (S4, {}), "s4d": (S4D, {}), "s4_bidirectional": (S4Bidirectional, {}),
         "s4d_bidirectional": (S4DBidirectional, {})}


def _check_agreement(cls, options, dtype, tol):
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 1000, H), dtype)
    ys = outputs_by_mode(cls, x, dtype, **options)
    for mode, y in ys.items():
        assert y.dtype == dtype
        err = relative_error(y, ys["conv"])
        assert err <= tol, f"{mode} vs conv: relative error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("name", list(CASES))
def test_conv_scan_step_agree_float64(name, x64):
    _check_agreement(*CASES[name], jnp.float64, 1e-9)


@pytest.mark.parametrize("name", ["s4", "s4d"])
def test_conv_scan_step_agree_float32(name):
    _check_agreement(*CASES[name], jnp.float32, 1e-4)


def test_s4_kernel_is_the_dplr_kernel_of_its_parameters(x64):
    model = cast_parameters(S4(H, state_size=N, l_max=128, rngs=nnx.Rngs(0)), jnp.float64)
    pair = lambda p: jax.lax.complex(p[..., 0], p[..., 1])  # noqa: E731
    expected = ssm.dplr_kernel(model.Lambda, pair(model.P[...]), pair(model.B[...]), pair(model.C_tilde[...]),
                               model.dt, 128)
    assert relative_error(model.kernel(128), expected) <= 1e-12
    # Any length (truncated below l_max, C̃ converted above): the powers of the dense
    # discrete system, with C recovered from C̃ at l_max.
    A_bar, B_bar, C = model.discrete_system()
    for L in (40, 300):
        K = model.kernel(L)
        assert K.shape == (1, H, L)
        assert relative_error(K, ssm.krylov_kernel(C, A_bar, B_bar, L).real) <= 1e-9


def test_s4d_kernel_is_the_vandermonde_kernel_of_its_parameters(x64):
    model = cast_parameters(S4D(H, state_size=N, rngs=nnx.Rngs(0)), jnp.float64)
    C = jax.lax.complex(model.C[..., 0], model.C[..., 1])
    B = jax.lax.complex(model.B[..., 0], model.B[..., 1])
    expected = ssm.s4d_kernel(C, B, model.Lambda, model.dt[:, None], 50)
    assert relative_error(model.kernel(50), expected) <= 1e-12
    A_bar, B_bar, C = model.discrete_system()
    powers = A_bar[..., None] ** jnp.arange(50).reshape(1, 1, 50)  # (H, M, L)
    dense = 2 * jnp.einsum("dhm,hm,hml->dhl", C, B_bar, powers).real
    assert relative_error(model.kernel(50), dense) <= 1e-10


def test_s4_with_p_zero_is_the_diagonal_s4d_kernel(x64):
    """``p_init="zero"``: ``P = 0``, so the DPLR kernel is S4D's bilinear Vandermonde kernel of
    the same ``Λ, B`` (S4D-LegS's) and the ``C`` behind ``C̃``."""
    model = cast_parameters(S4(H, state_size=N, l_max=128, p_init="zero", rngs=nnx.Rngs(0)), jnp.float64)
    assert not np.any(np.asarray(model.P[...]))
    Lambda, B = ssm.s4d_init("legs", N)
    np.testing.assert_allclose(model.Lambda, np.broadcast_to(Lambda, (H, N // 2)), rtol=1e-6, atol=1e-6)
    B_model = jax.lax.complex(model.B[..., 0], model.B[..., 1])
    C = model.discrete_system().C[..., : N // 2]
    expected = ssm.s4d_kernel(C, B_model, model.Lambda, model.dt[:, None], 128, method="bilinear")
    assert relative_error(model.kernel(128), expected) <= 1e-10
    # the default keeps the HiPPO correction: same Λ, B and draw of C, a different kernel
    hippo = cast_parameters(S4(H, state_size=N, l_max=128, rngs=nnx.Rngs(0)), jnp.float64)
    assert np.any(np.asarray(hippo.P[...]))
    assert relative_error(hippo.kernel(128), expected) > 1e-2


@pytest.mark.parametrize("cls,shared", [(S4, ("log_A_real", "A_imag", "P", "B")), (S4D, ("log_A_real", "A_imag", "B"))])
def test_n_ssm_shares_the_state_matrix_across_channels(cls, shared):
    """``n_ssm=2``: two copies of the SSM parameters, channel ``h`` reads copy ``h mod 2``; the
    layer is the unshared layer whose channels hold those copies (same ``Δ``, ``C`` draws)."""
    model = cls(H, state_size=N, n_ssm=2, rngs=nnx.Rngs(0))
    for name in shared:
        assert getattr(model, name)[...].shape[0] == 2
    for name in shared:  # make the two copies differ
        value = getattr(model, name)[...]
        getattr(model, name)[...] = value.at[1].multiply(1.5)
    free = cls(H, state_size=N, rngs=nnx.Rngs(0))
    for name in shared:
        getattr(free, name)[...] = jnp.concatenate([getattr(model, name)[...]] * (H // 2))
    K = model.kernel(64)
    assert relative_error(K, free.kernel(64)) <= 1e-6
    np.testing.assert_array_equal(model.Lambda[0], model.Lambda[2])
    assert not np.allclose(model.Lambda[0], model.Lambda[1])


def check_state_carries_the_discrete_system(model, state_width):
    """``init_state`` holds a zero ``h`` and exactly ``discrete_system()`` of the current parameters."""
    state = model.init_state(3)
    assert isinstance(state, SSMStepState)
    assert state.h.shape == (3, model.d_model, state_width) and not bool(jnp.any(state.h != 0))
    system = model.discrete_system()
    assert type(state.system) is type(system)
    assert_close(state.system, system, rtol=0.0, name="state.system")


def perturb_ssm_parameters(model, seed=0):
    """Multiply every ``SSMParam`` by ``1 + 0.05·noise`` in place (Δ, A/Λ, P, B all change)."""
    params = nnx.state(model, SSMParam)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    noisy = [p * (1 + 0.05 * jax.random.normal(k, p.shape, p.dtype)) for p, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(tree, noisy))


def check_fresh_state_follows_parameters(model):
    """After a parameter update a new ``init_state`` steps with the new system; an old state
    keeps the system it was made with (documented: make a new state after an update)."""
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 24, model.d_model))
    y_old = model(x)
    stale = model.init_state(2)
    perturb_ssm_parameters(model)
    y_new = model(x)
    assert relative_error(y_new, y_old) > 1e-2, "the perturbation must change the outputs"
    assert relative_error(model.init_state(2).system.A_bar, stale.system.A_bar) > 1e-3
    assert relative_error(run_steps(model, x, model.init_state(2)), y_new) <= 1e-4
    assert relative_error(run_steps(model, x, stale), y_old) <= 1e-4


def check_gradients_reach_ssm_parameters_through_the_state(model):
    """``init_state`` inside the differentiated function: every SSMParam gets a gradient through ``system``."""
    graphdef, params, rest = nnx.split(model, SSMParam, ...)
    x = jax.random.normal(jax.random.PRNGKey(6), (1, 6, model.d_model))

    def loss(params):
        m = nnx.merge(graphdef, params, rest)
        state, total = m.init_state(1), 0.0
        for t in range(x.shape[1]):
            y_t, state = m.step(x[:, t], state)
            total = total + jnp.sum(y_t ** 2)
        return total

    grads = jax.tree.leaves(jax.jit(jax.grad(loss))(params))
    assert grads and all(bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(jnp.abs(g))) > 0 for g in grads)


@pytest.mark.parametrize("cls,state_width", [(S4, N), (S4D, N // 2)])
def test_state_carries_the_discrete_system(cls, state_width):
    check_state_carries_the_discrete_system(cls(H, state_size=N, rngs=nnx.Rngs(0)), state_width)


@pytest.mark.parametrize("cls", [S4, S4D])
def test_fresh_state_follows_parameter_change(cls):
    check_fresh_state_follows_parameters(cls(H, state_size=N, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("cls", [S4, S4D])
def test_gradients_reach_ssm_parameters_through_the_state(cls):
    check_gradients_reach_ssm_parameters_through_the_state(cls(H, state_size=N, rngs=nnx.Rngs(0)))


def check_step_rejects_a_state_without_its_system(model):
    with pytest.raises(ValueError, match=r"state must have the structure of .*init_state.*SSMStepState"):
        model.step(jnp.ones((2, model.d_model)), model.init_state(2).h)


@pytest.mark.parametrize("cls", [S4, S4D])
def test_step_rejects_a_state_without_its_system(cls):
    check_step_rejects_a_state_without_its_system(cls(H, state_size=N, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("cls", [S4Bidirectional, S4DBidirectional])
def test_bidirectional_is_the_two_sided_convolution(cls):
    model = cls(H, state_size=N, rngs=nnx.Rngs(0))
    L = 16
    u = jax.random.normal(jax.random.PRNGKey(2), (1, L, H))
    K0, K1 = np.asarray(model.kernel(L))
    t, s = np.arange(L)[:, None], np.arange(L)[None, :]
    # y_t = Σ_{s≤t} K⁰_{t-s} u_s + Σ_{s>t} K¹_{s-t-1} u_s, per channel.
    T = np.where(s <= t, K0[:, np.clip(t - s, 0, L - 1)], K1[:, np.clip(s - t - 1, 0, L - 1)])  # (H, t, s)
    expected = np.einsum("hts,bsh->bth", T, np.asarray(u))
    np.testing.assert_allclose(model.ssm_outputs(u), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["s4_bidirectional", "s4d_bidirectional"])
def test_bidirectional_variants_are_not_causal(name):
    model = layers.build(name, H, rngs=nnx.Rngs(0), state_size=N)
    assert not model.causal
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 20, H))
    y, y2 = model(x), model(x.at[:, -1].add(1.0))
    assert float(jnp.max(jnp.abs(y2[:, 0] - y[:, 0]))) > 1e-5
    with pytest.raises(NotImplementedError):
        model.init_state(1)
    with pytest.raises(NotImplementedError):
        model.step(x[:, 0], None)


def _names(model, kind):
    return {".".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, kind))}


OTHER_PARAMS = {"output.D", "output.proj.kernel", "output.proj.bias"}


@pytest.mark.parametrize("cls,ssm_names,c_name", [
    (S4, {"log_A_real", "A_imag", "P", "B", "log_dt"}, "C_tilde"),
    (S4D, {"log_A_real", "A_imag", "B", "log_dt"}, "C"),
])
def test_ssm_parameters_are_ssmparam_and_others_are_not(cls, ssm_names, c_name):
    model = cls(H, state_size=N, rngs=nnx.Rngs(0))
    assert _names(model, SSMParam) == ssm_names
    assert _names(model, nnx.Param) - ssm_names == OTHER_PARAMS | {c_name}


def test_initialization():
    s4 = S4(H, state_size=N, rngs=nnx.Rngs(0))
    legs = ssm.nplr("legs", N)
    np.testing.assert_allclose(s4.Lambda, np.broadcast_to(legs.Lambda, (H, N // 2)), rtol=1e-6, atol=1e-6)
    s4d = S4D(H, state_size=N, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(s4d.Lambda[0], -0.5 - 1j * np.pi * np.arange(N // 2), rtol=1e-6)
    for model in (s4, s4d):
        assert bool(jnp.all((model.dt >= 1e-3 * (1 - 1e-6)) & (model.dt <= 1e-1 * (1 + 1e-6))))
        assert len(set(np.asarray(model.dt).tolist())) == H  # one step per channel


@pytest.mark.parametrize("cls,options", [
    (S4, {"init": "legt", "output": "glu"}), (S4, {"n_ssm": 1, "p_init": "zero"}),
    (S4D, {"init": "inv"}), (S4D, {"init": "legs", "discretization": "bilinear", "output": "glu"}),
    (S4D, {"init": "real"}), (S4D, {"init": "random", "n_ssm": 2}),
])
def test_options_keep_modes_in_agreement(cls, options):
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 64, H))
    ys = outputs_by_mode(cls, x, jnp.float32, with_step=False, **options)
    assert all(bool(jnp.all(jnp.isfinite(y))) for y in ys.values())
    for y in ys.values():
        assert relative_error(y, ys["conv"]) <= 1e-4


@pytest.mark.parametrize("name,option,value", [
    ("s4", "state_size", 7), ("s4d", "state_size", 0), ("s4", "l_max", 0), ("s4", "init", "lin"),
    ("s4", "p_init", "legs"), ("s4", "n_ssm", 3), ("s4d", "n_ssm", 0),
    ("s4d", "init", "legt"), ("s4", "mode", "recurrent"), ("s4d", "discretization", "euler"),
    ("s4d_bidirectional", "output", "tanh"), ("s4", "dt_min", 1.0),
])
def test_bad_options_name_the_option(name, option, value):
    with pytest.raises(ValueError, match=option):
        layers.build(name, H, rngs=nnx.Rngs(0), **{option: value})


def bare_s4d_reference(model, x):
    """``y_t = 2·Re Σ_m C_m h_{t,m} + D u_t``, ``h_t = e^{ΔΛ} h_{t-1} + (e^{ΔΛ} - 1)/Λ · B u_t``
    (zero-order hold), written out from the parameters with numpy, one step at a time."""
    p = {name: np.asarray(getattr(model, name)[...], np.float64) for name in ("log_A_real", "A_imag", "log_dt", "B", "C")}
    Lam = -np.exp(p["log_A_real"]) + 1j * p["A_imag"]                       # (H, M)
    dt = np.exp(p["log_dt"])[:, None]
    A_bar = np.exp(dt * Lam)
    B_bar = (A_bar - 1) / Lam * (p["B"][..., 0] + 1j * p["B"][..., 1])
    C = p["C"][0, ..., 0] + 1j * p["C"][0, ..., 1]
    D = np.asarray(model.output.D[...], np.float64)[:, 0]
    u = np.asarray(x, np.float64)
    h = np.zeros((u.shape[0],) + Lam.shape, complex)
    y = np.zeros(u.shape)
    for t in range(u.shape[1]):
        h = A_bar * h + B_bar * u[:, t, :, None]
        y[:, t] = 2 * np.sum(C * h, axis=-1).real + D * u[:, t]
    return y


def test_s4d_output_none_is_the_bare_ssm(x64):
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 40, H), jnp.float64)
    ys = outputs_by_mode(S4D, x, jnp.float64, output="none")
    model = S4D(H, state_size=N, output="none", rngs=nnx.Rngs(0))
    assert not any("proj" in str(path) for path, _ in nnx.to_flat_state(nnx.state(model)))
    expected = bare_s4d_reference(model, x)
    for mode, y in ys.items():
        assert_close(y, jnp.asarray(expected), 1e-10, f"{mode}")
    # the default block is not the bare SSM: GELU and the projection are applied
    default = S4D(H, state_size=N, rngs=nnx.Rngs(0))
    assert relative_error(cast_parameters(default, jnp.float64)(x), jnp.asarray(expected)) > 0.1


@pytest.mark.parametrize("name", ["s4", "s4d_bidirectional", "lssl"])
def test_output_none_builds_without_projection(name):
    mixer = layers.build(name, H, rngs=nnx.Rngs(0), output="none", **({"l_max": 32} if name == "s4" else {}))
    x = jax.random.normal(jax.random.PRNGKey(6), (2, 16, H))
    assert mixer(x).shape == x.shape and mixer.output.proj is None
    if name == "lssl":
        with pytest.raises(ValueError, match="output='none'.*channels=2"):
            layers.build(name, H, rngs=nnx.Rngs(0), output="none", channels=2)
