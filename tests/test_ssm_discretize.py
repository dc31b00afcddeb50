"""seqmodels.ssm.discretize: diagonal and dense ZOH / bilinear / GBT vs the reference vectors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from seqmodels import ssm
from helpers import assert_close

F64 = 1e-10
F32 = 1e-5


def load(reference, name):
    return np.load(reference / f"{name}.npz")


# ---------------------------------------------------------------------------------------
# Diagonal
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s5_diagonal_matches_reference(reference, x64, method):
    ref = load(reference, "discretize_s5")
    Lb, Bb = ssm.discretize_diag(ref["Lambda"], ref["B_tilde"], ref["Delta"], method)
    assert Lb.dtype == jnp.complex128 and Bb.shape == ref["B_tilde"].shape
    assert_close(Lb, ref[f"Lambda_bar_{method}"], F64, "Lambda_bar")
    assert_close(Bb, ref[f"B_bar_{method}"], F64, "B_bar")


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s5_diagonal_float32(reference, method):
    ref = load(reference, "discretize_s5")
    fn = {"zoh": ssm.discretize_zoh_diag, "bilinear": ssm.discretize_bilinear_diag}[method]
    args = (ref["Lambda"].astype(np.complex64), ref["B_tilde"].astype(np.complex64), ref["Delta"].astype(np.float32))
    Lb, Bb = jax.jit(fn)(*args)
    assert Lb.dtype == jnp.complex64
    assert_close(Lb, ref[f"Lambda_bar_{method}"], F32, "Lambda_bar f32")
    assert_close(Bb, ref[f"B_bar_{method}"], F32, "B_bar f32")


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4_diagonal_per_channel_dt(reference, x64, method):
    """s4's SSMKernelDiag: Λ (H, N), B (H, N), one dt per channel (dt[:, None])."""
    ref = load(reference, "s4_diag_kernel")
    dA, dB = ssm.discretize_diag(ref["A"], ref["B"], ref["dt"][:, None], method)
    assert_close(dA, ref[f"dA_{method}"], F64, "dA")
    assert_close(dB, ref[f"dB_{method}"], F64, "dB")


def test_diagonal_shape_errors():
    lam = jnp.ones((3, 4), jnp.complex64)
    with pytest.raises(ValueError, match="dt"):
        ssm.discretize_zoh_diag(lam, lam, jnp.ones((3,)))  # needs (3, 1)
    with pytest.raises(ValueError, match="B must have shape"):
        ssm.discretize_zoh_diag(lam, jnp.ones((4, 3), jnp.complex64), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="method"):
        ssm.discretize_diag(lam, lam, jnp.ones((3, 1)), "euler")


# ---------------------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------------------


def test_dense_bilinear_matches_reference(reference, x64):
    ref = load(reference, "discretize_dense_bilinear")
    Ab, Bb = ssm.discretize_dense(ref["A"], ref["B"], ref["step"], "bilinear")
    assert Ab.dtype == jnp.float64
    assert_close(Ab, ref["Ab"], F64, "Ab")
    assert_close(Bb, ref["Bb"], F64, "Bb")
    np.testing.assert_array_equal(ref["Cb"], ref["C"])  # bilinear leaves C alone
    K = ssm.krylov_kernel(ref["Cb"][0], Ab, Bb[:, 0], ref["K_conv_L64"].shape[0])
    assert_close(K, ref["K_conv_L64"], F64, "K_conv_L64")


def test_dense_bilinear_float32(reference):
    ref = load(reference, "discretize_dense_bilinear")
    Ab, Bb = ssm.discretize_dense(ref["A"].astype(np.float32), ref["B"].astype(np.float32), np.float32(ref["step"]))
    assert Ab.dtype == jnp.float32
    assert_close(Ab, ref["Ab"], F32, "Ab f32")
    assert_close(Bb, ref["Bb"], F32, "Bb f32")


def test_dplr_dense_matches_s4_reference(reference, x64):
    """state-spaces/s4 `_setup_state`: the conj-doubled dense bilinear system per channel."""
    ref = load(reference, "s4_nplr_kernel_s4repo")
    P = np.moveaxis(ref["P"], 0, 1)  # (rank, H, N) -> (H, rank, N)
    A, B = ssm.dplr_dense(ref["Lambda"], P, ref["B"])
    assert A.shape == (3, 16, 16) and B.shape == (3, 16)
    dA, dB = ssm.discretize_dense(A, B[..., None], ref["dt"])
    assert_close(dA, ref["dA"], F64, "dA")
    assert_close(dB[..., 0], ref["dB"], F64, "dB")


def test_dplr_dense_matches_annotated_reference(reference, x64):
    """annotated-s4 `discrete_DPLR`: full-N, A = diag(Λ) - P Q^*, bilinear."""
    ref = load(reference, "s4_nplr_kernel")
    A, B = ssm.dplr_dense(ref["Lambda"], ref["P"][None], ref["B"], Q=ref["Q"][None], conj_pairs=False)
    Ab, Bb = ssm.discretize_dense(A, B[:, None], ref["step"])
    assert_close(Ab, ref["Ab"], F64, "Ab")
    assert_close(Bb, ref["Bb"], F64, "Bb")


def test_dense_gbt_closed_forms(x64):
    A, B = ssm.hippo_legt(6)
    dt = 0.03
    I = np.eye(6)
    fe, fe_b = ssm.discretize_dense(A, B, dt, "forward_euler")
    assert_close(fe, I + dt * A, F64, "forward Euler A")
    assert_close(fe_b, dt * B, F64, "forward Euler B")
    be, be_b = ssm.discretize_dense(A, B, dt, "backward_euler")
    assert_close(be, np.linalg.inv(I - dt * A), F64, "backward Euler A")
    assert_close(be_b, np.linalg.solve(I - dt * A, dt * B), F64, "backward Euler B")
    g = ssm.discretize_dense(A, B, dt, "gbt", alpha=0.5)
    b = ssm.discretize_dense(A, B, dt, "bilinear")
    assert_close(g, b, F64, "gbt(1/2) = bilinear")
    with pytest.raises(ValueError, match="alpha"):
        ssm.discretize_dense(A, B, dt, "gbt")
    with pytest.raises(ValueError, match="alpha"):
        ssm.discretize_dense(A, B, dt, "zoh", alpha=0.3)


def test_dense_zoh(x64):
    A, B = ssm.hippo_legs(6)
    dt = 0.05
    Ab, Bb = ssm.discretize_dense(A, B, dt, "zoh")
    E = scipy.linalg.expm(dt * A)
    assert_close(Ab, E, F64, "expm")
    assert_close(Bb, np.linalg.solve(A, (E - np.eye(6)) @ B), F64, "A^{-1}(e^{ΔA} - I)B")
    # Singular A (here A = 0) is fine: B̄ = ΔB.
    Z, Zb = ssm.discretize_dense(np.zeros((3, 3)), np.ones((3, 2)), dt, "zoh")
    assert_close(Z, np.eye(3), F64, "exp(0)")
    assert_close(Zb, dt * np.ones((3, 2)), F64, "ΔB")


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_dense_equals_diagonal_for_diagonal_A(x64, method):
    rng = np.random.default_rng(0)
    lam = -rng.uniform(0.1, 1, 5) + 1j * rng.normal(size=5) * 3
    Bt = rng.normal(size=(5, 2)) + 1j * rng.normal(size=(5, 2))
    dt = 0.07
    Ad, Bd = ssm.discretize_dense(np.diag(lam), Bt, dt, method)
    Lb, Bb = ssm.discretize_diag(lam, Bt, np.full(5, dt), method)
    assert_close(Ad, np.diag(np.asarray(Lb)), F64, "A_bar")
    assert_close(Bd, Bb, F64, "B_bar")


def test_dense_batched_dt(x64):
    A, B = ssm.hippo_legs(4)
    dts = np.array([1e-3, 1e-2, 1e-1])
    Ab, Bb = jax.jit(ssm.discretize_dense, static_argnames="method")(A, B, dts, method="bilinear")
    assert Ab.shape == (3, 4, 4) and Bb.shape == (3, 4, 1)
    for i, dt in enumerate(dts):
        a, b = ssm.discretize_dense(A, B, dt)
        assert_close(Ab[i], a, F64, "A_bar[i]")
        assert_close(Bb[i], b, F64, "B_bar[i]")
    with pytest.raises(ValueError, match="B must have rank"):
        ssm.discretize_dense(A, B[:, 0], 0.1)
    with pytest.raises(ValueError, match="do not broadcast"):
        ssm.discretize_dense(np.broadcast_to(A, (2, 4, 4)), B, np.ones(3))
