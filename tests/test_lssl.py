"""LSSL: Krylov convolution == matrix scan == step, kernel == C Ā^l B̄, step state, fixed vs trainable A/Δ."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import relative_error
from test_s4 import (cast_parameters, check_fresh_state_follows_parameters,
                     check_gradients_reach_ssm_parameters_through_the_state, check_state_carries_the_discrete_system,
                     check_step_rejects_a_state_without_its_system, run_steps)

import seqmodels.layers as layers
from seqmodels import ssm
from seqmodels.layers.common import SSMParam
from seqmodels.layers.lssl import LSSL, SSMConstant

H, N = 4, 8


def outputs_by_mode(x, dtype, with_step=True, **options):
    ys = {}
    for mode in ("conv", "scan"):
        model = cast_parameters(LSSL(H, state_size=N, mode=mode, rngs=nnx.Rngs(0), **options), dtype)
        ys[mode] = jax.jit(lambda x, m=model: m(x))(x)
    if with_step:
        ys["step"] = run_steps(model, x)
    return ys


def _check_agreement(dtype, tol):
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 1000, H), dtype)
    ys = outputs_by_mode(x, dtype)
    for mode, y in ys.items():
        assert y.dtype == dtype
        err = relative_error(y, ys["conv"])
        assert err <= tol, f"{mode} vs conv: relative error {err:.3g} > {tol:.3g}"


def test_conv_scan_step_agree_float64(x64):
    _check_agreement(jnp.float64, 1e-9)


def test_conv_scan_step_agree_float32():
    _check_agreement(jnp.float32, 1e-4)


def test_kernel_is_the_krylov_kernel_of_its_parameters(x64):
    model = cast_parameters(LSSL(H, state_size=N, channels=2, rngs=nnx.Rngs(0)), jnp.float64)
    L = 40
    K = model.kernel(L)
    assert K.shape == (H, 2, L)
    A_bar, B_bar = model.discrete_system()
    for h in range(H):  # one Δ per channel over the shared (A, B)
        eye = np.eye(N)
        lhs = eye - 0.5 * float(model.dt[h]) * np.asarray(model.A[...])
        np.testing.assert_allclose(A_bar[h], np.linalg.solve(lhs, eye + (eye - lhs)), rtol=1e-12, atol=1e-12)
        expected = ssm.krylov_kernel(model.C[...][h], A_bar[h], B_bar[h], L)
        assert relative_error(K[h], expected) <= 1e-12
    powers = [np.linalg.matrix_power(np.asarray(A_bar), l) for l in range(L)]  # (L, H, N, N)
    explicit = np.einsum("hmn,lhnk,hk->hml", np.asarray(model.C[...]), np.stack(powers), np.asarray(B_bar))
    assert relative_error(K, explicit) <= 1e-10


def test_state_carries_the_discrete_system():
    check_state_carries_the_discrete_system(LSSL(H, state_size=N, rngs=nnx.Rngs(0)), N)


@pytest.mark.parametrize("trainable_A", [True, False])
def test_fresh_state_follows_parameter_change(trainable_A):
    model = LSSL(H, state_size=N, trainable_A=trainable_A, rngs=nnx.Rngs(0))
    check_fresh_state_follows_parameters(model)  # with trainable_A=False only Δ changes


def test_gradients_reach_ssm_parameters_through_the_state():
    check_gradients_reach_ssm_parameters_through_the_state(LSSL(H, state_size=N, rngs=nnx.Rngs(0)))


def test_step_rejects_a_state_without_its_system():
    check_step_rejects_a_state_without_its_system(LSSL(H, state_size=N, rngs=nnx.Rngs(0)))


def _names(tree, kind):
    state = tree if isinstance(tree, nnx.State) else nnx.state(tree, kind)
    return {".".join(map(str, path)) for path, _ in nnx.to_flat_state(state)}


@pytest.mark.parametrize("trainable_A", [True, False])
@pytest.mark.parametrize("trainable_dt", [True, False])
def test_fixed_arrays_are_not_parameters(trainable_A, trainable_dt):
    model = LSSL(H, state_size=N, trainable_A=trainable_A, trainable_dt=trainable_dt, rngs=nnx.Rngs(0))
    ssm_names = ({"A", "B"} if trainable_A else set()) | ({"log_dt"} if trainable_dt else set())
    assert _names(model, SSMParam) == ssm_names
    assert _names(model, SSMConstant) == {"A", "B", "log_dt"} - ssm_names
    assert _names(model, nnx.Param) == ssm_names | {"C", "output.D", "output.proj.kernel", "output.proj.bias"}


def test_gradients_reach_parameters_only():
    model = LSSL(H, state_size=N, trainable_A=False, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 12, H))
    grads = jax.jit(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(x) ** 2)))(params)
    assert _names(grads, ...) == {"log_dt", "C", "output.D", "output.proj.kernel", "output.proj.bias"}
    assert all(bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))


def test_hippo_initialization_and_timescales():
    model = LSSL(H, state_size=N, measure="legt", rngs=nnx.Rngs(0))
    A, B = ssm.hippo_legt(N)
    np.testing.assert_allclose(model.A[...], A, rtol=1e-6)
    np.testing.assert_allclose(model.B[...], B[:, 0], rtol=1e-6)
    dt = np.asarray(model.dt)
    assert np.all((dt >= 1e-3 * (1 - 1e-6)) & (dt <= 1e-1 * (1 + 1e-6))) and len(set(dt.tolist())) == H


@pytest.mark.parametrize("options", [
    {"measure": "lagt", "channels": 3, "output": "glu"},
    {"measure": "fout", "discretization": "zoh", "trainable_A": False},
])
def test_options_keep_modes_in_agreement(options):
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 64, H))
    ys = outputs_by_mode(x, jnp.float32, with_step=False, **options)
    assert bool(jnp.all(jnp.isfinite(ys["conv"])))
    assert relative_error(ys["scan"], ys["conv"]) <= 1e-4


@pytest.mark.parametrize("option,value", [
    ("state_size", 0), ("channels", 0), ("measure", "legendre"), ("discretization", "gbt"),
    ("mode", "krylov"), ("output", "relu"), ("dt_max", 1e-4),
])
def test_bad_options_name_the_option(option, value):
    with pytest.raises(ValueError, match=option):
        layers.build("lssl", H, rngs=nnx.Rngs(0), **{option: value})
