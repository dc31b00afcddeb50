"""seqmodels.ssm.hippo: HiPPO matrices, NPLR/DPLR forms, S4D and S5 inits vs the reference vectors."""

from __future__ import annotations

import numpy as np
import pytest

from seqmodels import ssm
from helpers import assert_close

F64 = 1e-10


def load(reference, name):
    return np.load(reference / f"{name}.npz")


def column_phases(V, V_ref):
    """Per-column unit phases φ with V ≈ V_ref · φ (eigenvectors are defined up to phase)."""
    inner = np.sum(np.conj(V_ref) * V, axis=0)
    assert np.allclose(np.abs(inner), 1.0, atol=1e-10), "eigenvectors span different lines"
    return inner / np.abs(inner)


@pytest.mark.parametrize("measure", ["legs", "legt", "lagt", "fout"])
def test_transition_matches_reference(reference, measure):
    ref = load(reference, f"hippo_{measure}")
    N = int(ref["N"])
    A, B = ssm.transition(measure, N)
    assert A.dtype == np.float64 and B.dtype == np.float64
    assert A.shape == (N, N) and B.shape == (N, 1)
    assert_close(A, ref["A"], F64, f"{measure} A")
    assert_close(B, ref["B"], F64, f"{measure} B")
    named = {"legs": ssm.hippo_legs, "legt": ssm.hippo_legt, "lagt": ssm.hippo_lagt, "fout": ssm.hippo_fout}
    A2, B2 = named[measure](N)
    np.testing.assert_array_equal(A2, A)
    np.testing.assert_array_equal(B2, B)


def test_transition_conventions():
    A, B = ssm.hippo_legs(5)
    n = np.arange(5)
    np.testing.assert_allclose(np.diag(A), -(n + 1.0))
    assert A[3, 1] == pytest.approx(-np.sqrt(7 * 3)) and A[1, 3] == 0.0
    A, B = ssm.hippo_lagt(4, beta=0.5)
    np.testing.assert_array_equal(B, np.full((4, 1), 0.5))
    with pytest.raises(ValueError, match="unknown HiPPO measure"):
        ssm.transition("legx", 4)
    with pytest.raises(ValueError, match="positive int"):
        ssm.hippo_legs(0)


def test_nplr_legs_matches_reference(reference):
    ref = load(reference, "hippo_legs_nplr")
    N = ref["A"].shape[0]
    d = ssm.nplr_legs(N, b_clip=2.0)
    d_nc = ssm.nplr("legs", N, b_clip=None)
    assert d.Lambda.shape == (N // 2,) and d.P.shape == (1, N // 2)
    assert d.B.shape == (N // 2,) and d.V.shape == (N, N // 2)

    # Phase-invariant quantities (README §1b).
    assert_close(d.Lambda, ref["Lambda"], F64, "Lambda")
    assert_close(np.abs(d.P), np.abs(ref["P"]), F64, "|P|")
    assert_close(np.abs(d_nc.B), np.abs(ref["B_noclip"]), F64, "|B_noclip|")
    assert_close(d_nc.B * np.conj(d_nc.P), ref["B_noclip_P_conj"], F64, "B_noclip conj(P)")
    assert_close(np.real(d_nc.B * np.conj(d_nc.P)), np.sqrt(2) * np.abs(d_nc.P) ** 2, F64, "√2|P|²")
    assert_close(ssm.rank_correction("legs", N), ref["P_full"], F64, "P_full")
    assert_close(ssm.hippo_legs(N)[1][:, 0], ref["B_orig"], F64, "B_orig")

    # Conventions: Re Λ = -1/2, negative imaginary parts ascending.
    np.testing.assert_allclose(d.Lambda.real, -0.5, atol=1e-12)
    assert np.all(d.Lambda.imag < 0) and np.all(np.diff(d.Lambda.imag) > 0)

    # After aligning each column's phase, V, P and the unclipped B agree exactly.
    phi = column_phases(d.V, ref["V"])
    assert_close(d.V, ref["V"] * phi, F64, "V (phase-aligned)")
    assert_close(d.P, ref["P"] * np.conj(phi), F64, "P (phase-aligned)")
    assert_close(d_nc.B, ref["B_noclip"] * np.conj(phi), F64, "B_noclip (phase-aligned)")
    # The clip acts on the imaginary part in whatever phase LAPACK returned.
    np.testing.assert_allclose(d.B, d_nc.B.real + 1j * np.clip(d_nc.B.imag, -2, 2), rtol=0, atol=1e-15)
    assert np.max(np.abs(d.B.imag)) <= 2.0
    if np.allclose(phi.imag, 0.0, atol=1e-12):  # phases are ±1: the clip commutes with them
        assert_close(d.B, ref["B"] * np.conj(phi), F64, "B clipped (sign-aligned)")

    # Identity of README §1b: A + PᵀP = 2 Re(V Λ V^*).
    recon = 2 * (d.V @ np.diag(d.Lambda) @ d.V.conj().T).real
    assert_close(recon, ref["A"] + ref["P_full"].T @ ref["P_full"], F64, "A + PᵀP")


def test_dplr_s5_matches_reference(reference):
    ref = load(reference, "hippo_legs_dplr_s5")
    N = ref["A"].shape[0]
    d = ssm.nplr("legs", N, b_clip=None, conj_half=False)
    assert d.Lambda.shape == (N,) and d.V.shape == (N, N)
    assert_close(d.Lambda, ref["Lambda"], F64, "Lambda")
    assert_close(np.abs(d.P[0]), np.abs(ref["P"]), F64, "|P|")
    assert_close(np.abs(d.B), np.abs(ref["B"]), F64, "|B|")
    assert_close(d.B * np.conj(d.P[0]), ref["B_P_conj"], F64, "B conj(P)")
    phi = column_phases(d.V, ref["V"])
    assert_close(d.V, ref["V"] * phi, F64, "V (phase-aligned)")
    assert_close(d.B, ref["B"] * np.conj(phi), F64, "B (phase-aligned)")
    assert_close(d.V @ np.diag(d.Lambda) @ d.V.conj().T,
                 ref["A"] + np.outer(np.sqrt(np.arange(N) + 0.5), np.sqrt(np.arange(N) + 0.5)) + 0j,
                 F64, "V Λ V^* = A + ppᵀ")

    # S5's HiPPO-N init: conj_sym keeps the first half; blocks repeat it block-diagonally.
    h = ssm.s5_hippo_n(N, blocks=1, conj_sym=True)
    assert_close(h.Lambda, ref["Lambda"][: N // 2], F64, "HiPPO-N Lambda")
    assert_close(np.abs(h.V), np.abs(ref["V"][:, : N // 2]), F64, "HiPPO-N |V|")
    h2 = ssm.s5_hippo_n(2 * N, blocks=2, conj_sym=True)
    assert h2.Lambda.shape == (N,) and h2.V.shape == (2 * N, N) and h2.Vinv.shape == (N, 2 * N)
    assert_close(h2.Lambda, np.tile(ref["Lambda"][: N // 2], 2), F64, "blocks Lambda")
    np.testing.assert_allclose(h2.Vinv @ h2.V, np.eye(N), atol=1e-12)
    np.testing.assert_array_equal(h2.V[:N, N // 2:], 0)
    h3 = ssm.s5_hippo_n(N, blocks=2, conj_sym=False)
    assert h3.Lambda.shape == (N,) and h3.V.shape == (N, N)
    np.testing.assert_allclose(h3.V @ h3.Vinv, np.eye(N), atol=1e-12)
    with pytest.raises(ValueError, match="divisor"):
        ssm.s5_hippo_n(8, blocks=3)


@pytest.mark.parametrize("measure,rank", [("legs", 1), ("legt", 2), ("fout", 1)])
@pytest.mark.parametrize("N", [8, 16])
def test_nplr_reconstructs_hippo(measure, rank, N):
    """A = W (Λ_f - P_f P_f^*) W^*, B = W B_f with W = [V, conj V] unitary (S4 Thm. 1)."""
    A, B = ssm.transition(measure, N)
    d = ssm.nplr(measure, N, rank=rank, b_clip=None)
    W = np.concatenate([d.V, d.V.conj()], axis=1)
    np.testing.assert_allclose(W.conj().T @ W, np.eye(N), atol=1e-12)
    lam = np.concatenate([d.Lambda, d.Lambda.conj()])
    P = np.concatenate([d.P, d.P.conj()], axis=1)
    Bf = np.concatenate([d.B, d.B.conj()])
    A_rec = W @ (np.diag(lam) - P.T @ P.conj()) @ W.conj().T
    assert_close(A_rec, A + 0j, F64, f"{measure} A")
    assert_close(W @ Bf, B[:, 0] + 0j, F64, f"{measure} B")
    assert np.all(d.Lambda.imag <= 1e-12)


def test_nplr_errors():
    with pytest.raises(ValueError, match="rank >= 2"):
        ssm.nplr("legt", 8, rank=1)
    with pytest.raises(ValueError, match="no normal-plus-low-rank"):
        ssm.nplr("lagt", 8)
    with pytest.raises(ValueError, match="even"):
        ssm.nplr("legs", 7)


def test_s4d_inits():
    N = 8
    n = np.arange(N // 2)
    lam, B = ssm.s4d_init("lin", N)
    np.testing.assert_allclose(lam, -0.5 - 1j * np.pi * n)
    np.testing.assert_array_equal(B, np.ones(N // 2))
    lam, _ = ssm.s4d_init("inv", N)
    np.testing.assert_allclose(lam, -0.5 - 1j * N / np.pi * (N / (2 * n + 1) - 1))
    lam, _ = ssm.s4d_init("real", N)
    np.testing.assert_allclose(lam, -(n + 1.0))
    lam, B = ssm.s4d_init("legs", N)
    d = ssm.nplr_legs(N)
    np.testing.assert_array_equal(lam, d.Lambda)
    np.testing.assert_array_equal(B, d.B)
    with pytest.raises(ValueError, match="unknown S4D init"):
        ssm.s4d_init("foo", N)


def test_s4d_random_init():
    """``"random"``: real part -1/2, imaginary parts -exp(z), z ~ N(0, 1), reproducible by seed."""
    N = 64
    lam, B = ssm.s4d_init("random", N, seed=3)
    assert lam.shape == B.shape == (N // 2,) and lam.dtype == np.complex128
    np.testing.assert_array_equal(lam.real, -0.5)
    np.testing.assert_array_equal(B, np.ones(N // 2))
    z = np.log(-lam.imag)                                       # the normal draws behind it
    np.testing.assert_allclose(z, np.random.default_rng(3).standard_normal(N // 2), rtol=1e-12)
    np.testing.assert_array_equal(ssm.s4d_init("random", N, seed=3)[0], lam)
    assert not np.array_equal(ssm.s4d_init("random", N, seed=4)[0], lam)
    np.testing.assert_array_equal(ssm.s4d_init("random", N)[0], ssm.s4d_init("random", N, seed=0)[0])
    # no HiPPO structure: not S4D-Lin's ordered ladder -πn
    assert not np.allclose(np.sort(-lam.imag), np.pi * np.arange(N // 2), atol=1.0)
