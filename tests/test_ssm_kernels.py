"""seqmodels.ssm.kernels: S4D Vandermonde, S4 DPLR (Cauchy + Woodbury) and LSSL Krylov kernels."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqmodels import ssm
from helpers import assert_close

F64 = 1e-10
F32 = 1e-5

# The public kernels are jitted (L and the flags static); calling them inside another
# jit must give the same result.
s4d_jit = jax.jit(ssm.s4d_kernel, static_argnames=("L", "method", "conj_pairs"))
dplr_jit = jax.jit(ssm.dplr_kernel, static_argnames=("L", "conj_pairs"))


def load(reference, name):
    return np.load(reference / f"{name}.npz")


def power_kernel(C, Ab, Bb, L):
    """The oracle: K_l = C Ā^l B̄ by an explicit loop (NumPy)."""
    out, x = [], np.asarray(Bb)
    for _ in range(L):
        out.append(np.asarray(C) @ x)
        x = np.asarray(Ab) @ x
    return np.stack(out, axis=-1)


def crandn(rng, *shape):
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


# ---------------------------------------------------------------------------------------
# S4D
# ---------------------------------------------------------------------------------------


def test_s4d_kernel_matches_reference(reference, x64):
    ref = load(reference, "s4d_kernel")
    L = int(ref["L"])
    dt = np.exp(ref["log_dt"])[:, None]  # one step per channel
    K = s4d_jit(ref["C"], None, ref["A"], dt, L=L)  # B ≡ 1, ZOH, 2·Re
    assert K.shape == (3, L) and K.dtype == jnp.float64
    assert_close(K, ref["K"], F64, "K")


def test_s4d_kernel_float32(reference):
    ref = load(reference, "s4d_kernel")
    dt = np.exp(ref["log_dt"]).astype(np.float32)[:, None]
    K = s4d_jit(ref["C"].astype(np.complex64), None, ref["A"].astype(np.complex64), dt, L=int(ref["L"]))
    assert K.dtype == jnp.float32
    assert_close(K, ref["K"], F32, "K f32")


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4_diag_kernel_matches_reference(reference, x64, method):
    ref = load(reference, "s4_diag_kernel")
    L = int(ref["L"])
    K = s4d_jit(ref["C"], ref["B"], ref["A"], ref["dt"][:, None], L=L, method=method)
    assert_close(K[None], ref[f"K_{method}"], F64, f"K_{method}")
    # The same from the discretized (dA, dB): K = 2 Re Σ C dB dA^l.
    dA, dB = ssm.discretize_diag(ref["A"], ref["B"], ref["dt"][:, None], method)
    K2 = 2 * ssm.vandermonde(ref["C"] * dB, jnp.log(dA), L).real
    assert_close(K2, K, F64, "vandermonde of dA, dB")


def test_s4d_kernel_equals_powers(x64):
    rng = np.random.default_rng(1)
    lam = -rng.uniform(0.1, 1, (2, 3)) + 1j * rng.normal(size=(2, 3)) * 5
    B, C = crandn(rng, 2, 3), crandn(rng, 2, 3)
    dt = np.array([[0.1], [0.02]])
    for method in ["zoh", "bilinear"]:
        dA, dB = ssm.discretize_diag(lam, B, dt, method)
        for conj_pairs, f in [(True, 2.0), (False, 1.0)]:
            K = ssm.s4d_kernel(C, B, lam, dt, 20, method=method, conj_pairs=conj_pairs)
            want = f * np.real(np.stack([np.sum(C * dB * np.asarray(dA) ** l, -1) for l in range(20)], -1))
            assert_close(K, want, F64, f"{method} conj_pairs={conj_pairs}")


# ---------------------------------------------------------------------------------------
# S4 DPLR
# ---------------------------------------------------------------------------------------


def test_dplr_kernel_matches_annotated_s4(reference, x64):
    """annotated-s4 `kernel_DPLR`: full N, a ∈ {conj C̃, conj Q}; our C enters unconjugated."""
    ref = load(reference, "s4_nplr_kernel")
    L = int(ref["L"])
    K = dplr_jit(ref["Lambda"], ref["P"][None], ref["B"], np.conj(ref["C_tilde"]), ref["step"], L=L,
                 Q=ref["Q"][None], conj_pairs=False)
    assert K.shape == (L,) and K.dtype == jnp.float64
    assert_close(K, ref["K"], F64, "K")
    # C̄ from C̃ (annotated-s4's Cb = conj(C̃)(I - Ā^L)^{-1}) and the dense kernel.
    A, B = ssm.dplr_dense(ref["Lambda"], ref["P"][None], ref["B"], Q=ref["Q"][None], conj_pairs=False)
    Ab, Bb = ssm.discretize_dense(A, B[:, None], ref["step"])
    Cb = ssm.dplr_c_from_c_tilde(np.conj(ref["C_tilde"]), Ab, L, conj_pairs=False)
    assert_close(Cb, ref["Cb"][0], F64, "Cb")
    K_conv = ssm.krylov_kernel(Cb, Ab, Bb[:, 0], L)
    assert_close(K_conv, ref["K_conv"], F64, "K_conv")
    assert_close(ssm.dplr_c_tilde(Cb, Ab, L, conj_pairs=False), np.conj(ref["C_tilde"]), F64, "C̃ round trip")


def test_dplr_kernel_matches_state_spaces_s4(reference, x64):
    """state-spaces/s4 SSMKernelDPLR: half N (conj pairs), C → C̃ on first forward."""
    ref = load(reference, "s4_nplr_kernel_s4repo")
    L = int(ref["L"])
    P = np.moveaxis(ref["P"], 0, 1)  # (rank, H, N) -> (H, rank, N)
    A, B = ssm.dplr_dense(ref["Lambda"], P, ref["B"])
    dA, dB = ssm.discretize_dense(A, B[..., None], ref["dt"])
    C_tilde = ssm.dplr_c_tilde(ref["C"][0], dA, L)
    assert_close(C_tilde, ref["C_tilde"][0], F64, "C_tilde")
    K = dplr_jit(ref["Lambda"], P, ref["B"], C_tilde, ref["dt"], L=L)
    assert K.shape == (3, L)
    assert_close(K[None], ref["K"], F64, "K")
    # Semantics (README §4): K = Re(c_fᵀ dA^l dB) with c_f = [C, conj C].
    cf = np.concatenate([ref["C"][0], np.conj(ref["C"][0])], -1)
    want = np.stack([power_kernel(cf[h], ref["dA"][h], ref["dB"][h], L).real for h in range(3)])
    assert_close(K, want, F64, "dense powers")


def test_dplr_kernel_float32(reference):
    ref = load(reference, "s4_nplr_kernel_s4repo")
    P = np.moveaxis(ref["P"], 0, 1).astype(np.complex64)
    K = dplr_jit(ref["Lambda"].astype(np.complex64), P, ref["B"].astype(np.complex64),
                 ref["C_tilde"][0].astype(np.complex64), ref["dt"].astype(np.float32), L=int(ref["L"]))
    assert K.dtype == jnp.float32
    assert_close(K[None], ref["K"], F32, "K f32")


@pytest.mark.parametrize("rank,L,conj_pairs", [(1, 16, True), (2, 17, True), (1, 17, False), (2, 16, False)])
def test_dplr_kernel_equals_power_loop(x64, rank, L, conj_pairs):
    """Random DPLR system, Q ≠ P: the generating-function kernel = C Ā^l B̄ of the dense discrete system."""
    rng = np.random.default_rng(rank * 100 + L)
    H, N = 2, 4
    lam = -rng.uniform(0.2, 1.0, (H, N)) + 1j * rng.normal(size=(H, N)) * 4
    P, Q = 0.3 * crandn(rng, H, rank, N), 0.3 * crandn(rng, H, rank, N)
    B, C = crandn(rng, H, N), crandn(rng, H, N)
    dt = np.array([0.05, 0.2])
    A, Bf = ssm.dplr_dense(lam, P, B, Q=Q, conj_pairs=conj_pairs)
    Ab, Bb = ssm.discretize_dense(A, Bf[..., None], dt)
    C_tilde = ssm.dplr_c_tilde(C, Ab, L, conj_pairs=conj_pairs)
    K = dplr_jit(lam, P, B, C_tilde, dt, L=L, Q=Q, conj_pairs=conj_pairs)
    Cf = np.concatenate([C, C.conj()], -1) if conj_pairs else C
    want = np.stack([power_kernel(Cf[h], Ab[h], Bb[h, :, 0], L).real for h in range(H)])
    assert_close(K, want, F64, "DPLR vs powers")
    assert_close(ssm.krylov_kernel(Cf, Ab, Bb[..., 0], L).real, want, F64, "Krylov vs powers")
    assert_close(ssm.dplr_c_from_c_tilde(C_tilde, Ab, L, conj_pairs=conj_pairs), C, F64, "C round trip")


@pytest.mark.parametrize("measure,rank", [("legs", 1), ("legt", 2)])
def test_dplr_kernel_equals_dense_hippo(x64, measure, rank):
    """NPLR is exact: the DPLR kernel with C_half = Vᵀc equals the kernel of the dense HiPPO A."""
    N, L, dt = 8, 32, 0.05
    A, B = ssm.transition(measure, N)
    d = ssm.nplr(measure, N, rank=rank, b_clip=None)
    c = np.random.default_rng(2).normal(size=N)
    Ab, Bb = ssm.discretize_dense(A, B, dt)
    want = power_kernel(c, Ab, Bb[:, 0], L)
    Ad, Bd = ssm.dplr_dense(d.Lambda, d.P, d.B)
    Adb, _ = ssm.discretize_dense(Ad, Bd[:, None], dt)
    C_tilde = ssm.dplr_c_tilde(d.V.T @ c, Adb, L)
    K = ssm.dplr_kernel(d.Lambda, d.P, d.B, C_tilde, dt, L)
    assert_close(K, want, F64, f"{measure} DPLR vs dense")


def test_dplr_without_low_rank_is_s4d_bilinear(x64):
    rng = np.random.default_rng(3)
    lam = -rng.uniform(0.2, 1.0, (2, 5)) - 1j * rng.uniform(0, 10, (2, 5))
    B, C = crandn(rng, 2, 5), crandn(rng, 2, 5)
    dt = np.array([0.01, 0.1])
    L = 33
    want = ssm.s4d_kernel(C, B, lam, dt[:, None], L, method="bilinear")
    # The DPLR kernel takes C̃ = C (1 - Λ̄^L) (truncated generating function).
    dA, _ = ssm.discretize_bilinear_diag(lam, B, dt[:, None])
    C_tilde = C * (1 - np.asarray(dA) ** L)
    assert_close(ssm.dplr_kernel(lam, np.zeros((2, 1, 5)), B, C_tilde, dt, L), want, F64, "P = 0")
    assert_close(ssm.dplr_kernel(lam, np.zeros((2, 0, 5)), B, C_tilde, dt, L), want, F64, "rank 0")


def test_dplr_kernel_gradients_finite():
    d = ssm.nplr_legs(8)
    lam_re, lam_im = jnp.asarray(d.Lambda.real, jnp.float32), jnp.asarray(d.Lambda.imag, jnp.float32)
    C = jnp.asarray(crandn(np.random.default_rng(4), 4), jnp.complex64)

    def loss(lam_re, lam_im, C, log_dt):
        lam = lam_re + 1j * lam_im
        K = ssm.dplr_kernel(lam, d.P.astype(np.complex64), d.B.astype(np.complex64), C, jnp.exp(log_dt), 64)
        return jnp.sum(K ** 2) + jnp.sum(ssm.s4d_kernel(C, None, lam, jnp.exp(log_dt), 64) ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(lam_re, lam_im, C, jnp.float32(np.log(0.01)))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0)


def test_long_kernels_finite_and_decaying():
    """L = 65536 in float32: both S4 kernels stay finite and decay (small N keeps it fast)."""
    L, N = 65536, 8
    d = ssm.nplr_legs(N)
    rng = np.random.default_rng(5)
    C = jnp.asarray(crandn(rng, 2, N // 2), jnp.complex64)
    dt = jnp.asarray([1e-3, 1e-2], jnp.float32)
    to32 = functools.partial(jnp.asarray, dtype=jnp.complex64)
    K_dplr = dplr_jit(to32(d.Lambda), to32(d.P), to32(d.B), C, dt, L=L)
    lam, _ = ssm.s4d_init("lin", N)
    K_s4d = s4d_jit(C, None, to32(lam), dt[:, None], L=L)
    for name, K in [("dplr", K_dplr), ("s4d", K_s4d)]:
        K = np.asarray(K)
        assert K.shape == (2, L) and K.dtype == np.float32
        assert np.all(np.isfinite(K)), name
        head = np.max(np.abs(K[:, :256]), axis=-1)
        tail = np.max(np.abs(K[:, -4096:]), axis=-1)
        assert np.all(head > 0) and np.all(tail < 1e-3 * head), (name, head, tail)
    # Against float64: DPLR by the same algorithm, S4D by the exact formula at sampled lags.
    with jax.enable_x64(True):
        K64 = ssm.dplr_kernel(d.Lambda, d.P, d.B, np.asarray(C, np.complex128), np.asarray(dt, np.float64), L)
        assert_close(K_dplr, np.asarray(K64), F32, "dplr f32 vs f64 at L = 65536")
        lags = np.array([0, 1, 100, 1000, 10000, 65535])
        dt64 = np.array([1e-3, 1e-2])[:, None]
        Cn = np.asarray(C, np.complex128)
        want = 2 * np.real(np.sum((Cn * np.expm1(dt64 * lam) / lam)[..., None]
                                  * np.exp(dt64[..., None] * lam[:, None] * lags), axis=-2))
    scale = np.max(np.abs(want), axis=-1, keepdims=True)
    assert np.max(np.abs(np.asarray(K_s4d)[:, lags] - want) / scale) < 1e-4


# ---------------------------------------------------------------------------------------
# LSSL Krylov, building blocks, errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [1, 5, 64, 100])
def test_krylov_equals_power_loop(x64, L):
    A, B = ssm.hippo_legs(6)
    dts = np.array([0.01, 0.1])
    Ab, Bb = ssm.discretize_dense(A, B, dts)  # (2, 6, 6), (2, 6, 1)
    X = jax.jit(ssm.krylov, static_argnames="L")(Ab, Bb[..., 0], L=L)
    assert X.shape == (2, 6, L)
    for h in range(2):
        want = np.stack([np.linalg.matrix_power(np.asarray(Ab[h]), l) @ np.asarray(Bb[h, :, 0]) for l in range(L)], -1)
        assert_close(X[h], want, F64, "Krylov matrix")
    C = np.random.default_rng(6).normal(size=(3, 1, 6))  # (channels, H-broadcast, N)
    K = ssm.krylov_kernel(C, Ab, Bb[..., 0], L)
    assert K.shape == (3, 2, L)
    assert_close(K[:, 1], np.stack([power_kernel(C[m, 0], Ab[1], Bb[1, :, 0], L) for m in range(3)]), F64, "kernel")


def test_krylov_float32_hippo_long():
    """LSSL at default precision: LegS, Δ = 1e-2, L = 4096 agrees with float64 to 1e-5 (scale-relative)."""
    A, B = ssm.hippo_legs(16)
    c = np.random.default_rng(7).normal(size=16)
    Ab, Bb = ssm.discretize_dense(A.astype(np.float32), B.astype(np.float32), np.float32(1e-2))
    K = ssm.krylov_kernel(c.astype(np.float32), Ab, Bb[:, 0], 4096)
    with jax.enable_x64(True):
        Ab64, Bb64 = ssm.discretize_dense(A, B, 1e-2)
        want = ssm.krylov_kernel(c, Ab64, Bb64[:, 0], 4096)
    assert K.dtype == jnp.float32
    assert_close(K, np.asarray(want), F32, "f32 Krylov")


def test_cauchy_and_vandermonde(x64):
    rng = np.random.default_rng(8)
    v, w, z = crandn(rng, 2, 3), crandn(rng, 2, 3), crandn(rng, 5)
    want = np.sum(v[..., None] / (z - w[..., None]), -2)
    assert_close(ssm.cauchy(v, z, w), want, F64, "cauchy")
    want2 = want + np.sum(v.conj()[..., None] / (z - w.conj()[..., None]), -2)
    assert_close(ssm.cauchy(v, z, w, conj_pairs=True), want2, F64, "cauchy conj")
    x = -rng.uniform(0, 0.1, (2, 3)) + 1j * rng.normal(size=(2, 3))
    want3 = np.stack([np.sum(v * np.exp(l * x), -1) for l in range(7)], -1)
    assert_close(ssm.vandermonde(v, x, 7), want3, F64, "vandermonde")


def test_kernel_argument_errors():
    lam = jnp.ones((2, 4), jnp.complex64)
    with pytest.raises(ValueError, match="positive int"):
        ssm.s4d_kernel(lam, None, lam, jnp.ones((2, 1)), 0)
    with pytest.raises(ValueError, match="dt"):
        ssm.s4d_kernel(lam, None, lam, jnp.ones((2,)), 8)  # per channel needs (2, 1)
    with pytest.raises(ValueError, match="method"):
        ssm.s4d_kernel(lam, None, lam, jnp.ones((2, 1)), 8, method="euler")
    with pytest.raises(ValueError, match="rank at least 2"):
        ssm.dplr_kernel(lam[0], lam[0], lam[0], lam[0], 1.0, 8)  # P must be (..., R, N)
    with pytest.raises(ValueError, match="dt"):
        ssm.dplr_kernel(lam, lam[:, None], lam, lam, jnp.ones((2, 4)), 8)
    with pytest.raises(ValueError, match="last axis"):
        ssm.dplr_kernel(lam, lam[:, None], lam[:, :3], lam, jnp.ones(2), 8)
    with pytest.raises(ValueError, match="square"):
        ssm.dplr_c_tilde(lam, jnp.ones((2, 4, 4)), 8)  # conj pairs: A_bar is (2N, 2N)
    with pytest.raises(ValueError, match="square"):
        ssm.krylov(jnp.ones((3, 3)), jnp.ones(4), 8)
