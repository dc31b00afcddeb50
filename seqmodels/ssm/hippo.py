"""HiPPO transition matrices and their normal / diagonal plus low-rank forms.

Papers:

* HiPPO: "HiPPO: Recurrent Memory with Optimal Polynomial Projections" (Gu, Dao, Ermon,
  Rudra, Ré, NeurIPS 2020) -- the LegS, LegT and LagT operators (Thm. 1 and 2, App. D).
* S4: "Efficiently Modeling Long Sequences with Structured State Spaces" (Gu, Goel, Ré,
  ICLR 2022) -- Thm. 1: every HiPPO matrix is normal plus low rank (NPLR),
  ``A = V Λ V^* - P Qᵀ``, hence unitarily equivalent to diagonal plus low rank (DPLR).
  FouT (Fourier, translated) follows "How to Train Your HiPPO" (Gu et al., ICLR 2023).
* S4D: "On the Parameterization and Initialization of Diagonal State Space Models"
  (Gu, Gupta, Goel, Ré, NeurIPS 2022) -- the diagonal inits S4D-LegS/Lin/Inv/Real (§4),
  and a random-imaginary-part baseline for the ablations of §5.
* S5: "Simplified State Space Layers for Sequence Modeling" (Smith, Warrington,
  Linderman, ICLR 2023) -- HiPPO-N: the normal part of LegS, all N eigenvalues, optionally
  repeated over J blocks (§4.2, App. B).

Conventions (those of state-spaces/s4 ``transition`` / ``nplr``):

* ``A`` is the *continuous-time* matrix of ``x' = A x + B u``, already stable (negated);
  everything here is NumPy float64 / complex128 and runs once at initialization, never
  under ``jit``.
* Conjugate halving: a real ``N``-state system has eigenvalues in conjugate pairs; the
  half form keeps the ``N // 2`` eigenvalues with **negative** imaginary part, ascending
  by imaginary part. Its real output is ``2·Re(...)``. The full form keeps all ``N``.
* Eigenvector phases come from LAPACK (``numpy.linalg.eigh`` on ``-i·S``) and are
  arbitrary per column; ``V``, ``P``, ``B`` (and the clipped ``B``) depend on them, while
  ``Λ``, ``|P|``, ``|B|`` and ``B·conj(P)`` do not.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MEASURES = ("legs", "legt", "lagt", "fout")


def _check_size(N, even=False) -> int:
    if not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"state size N must be a positive int; got {N!r}")
    if even and N % 2:
        raise ValueError(f"state size N must be even (conjugate pairs); got {N}")
    return int(N)


# ----------------------------------------------------------------------------------------
# Transition matrices (A, B)
# ----------------------------------------------------------------------------------------


def hippo_legs(N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO-LegS (scaled Legendre): ``A`` (N, N), ``B`` (N, 1), float64.

    ``A[n, k] = -sqrt(2n+1) sqrt(2k+1)`` below the diagonal, ``-(n+1)`` on it, 0 above;
    ``B[n] = sqrt(2n+1)``.
    """
    N = _check_size(N)
    n = np.arange(N, dtype=np.float64)
    r = np.sqrt(2.0 * n + 1.0)
    A = -np.tril(np.outer(r, r), k=-1) - np.diag(n + 1.0)
    return A, r[:, None].copy()


def hippo_legt(N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO-LegT (translated Legendre, window 1), with s4's extra factor 1/2 on A and B.

    ``A[n, k] = -½ sqrt(2n+1) sqrt(2k+1) · (1 if n ≥ k else (-1)^(n-k))``,
    ``B[n] = ½ sqrt(2n+1)``.
    """
    N = _check_size(N)
    n = np.arange(N, dtype=np.float64)
    r = np.sqrt(2.0 * n + 1.0)
    row, col = n[:, None], n[None, :]
    sign = np.where(row >= col, 1.0, (-1.0) ** (row - col))
    A = -0.5 * sign * np.outer(r, r)
    return A, 0.5 * r[:, None]


def hippo_lagt(N: int, beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO-LagT (translated Laguerre): ``A = I/2 - tril(ones)``, ``B = beta · ones``."""
    N = _check_size(N)
    A = 0.5 * np.eye(N) - np.tril(np.ones((N, N)))
    return A, np.full((N, 1), float(beta))


def hippo_fout(N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO-FouT (translated Fourier): 2×2 rotation generators minus the rank-1 term.

    ``B = [1, 0, √2, 0, √2, 0, ...]``; ``A = π·(D_low - D_up) - B Bᵀ`` where the
    off-diagonals hold the frequencies ``[0, 0, 1, 0, 2, 0, 3, ...]`` (``D_up`` above,
    ``D_low`` below the diagonal), i.e. state pair ``(2k-1, 2k)`` rotates at frequency
    ``π·k`` (cosine/sine coefficients).
    """
    N = _check_size(N)
    b = _fout_vector(N)
    # Off-diagonal entry i couples states i and i+1; it is k for i = 2k (k ≥ 1), else 0.
    i = np.arange(N - 1)
    freq = np.where(i % 2 == 0, i // 2, 0).astype(np.float64)
    A = np.pi * (np.diag(freq, -1) - np.diag(freq, 1)) - np.outer(b, b)
    return A, b[:, None]


def _fout_vector(N: int) -> np.ndarray:
    b = np.zeros(N)
    b[0::2] = np.sqrt(2.0)
    b[0] = 1.0
    return b


_TRANSITIONS = {"legs": hippo_legs, "legt": hippo_legt, "lagt": hippo_lagt, "fout": hippo_fout}


def transition(measure: str, N: int, **measure_args) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of the named HiPPO measure (``"legs" | "legt" | "lagt" | "fout"``).

    ``measure_args`` go to the measure (only ``lagt`` takes one: ``beta``).
    """
    if measure not in _TRANSITIONS:
        raise ValueError(f"unknown HiPPO measure {measure!r}; valid: {MEASURES}")
    return _TRANSITIONS[measure](N, **measure_args)


def rank_correction(measure: str, N: int, rank: int = 1) -> np.ndarray:
    """Low-rank ``P`` (rank, N), float64, such that ``A + Pᵀ P`` is normal.

    LegS: ``P = sqrt(n + ½)`` (rank 1), making ``A + PᵀP = -½ I + skew``. LegT: the even
    and odd entries of ``sqrt(2n+1)/√2`` as two rows (rank 2). FouT: ``P = B`` (rank 1).
    Rows of zeros pad the result up to ``rank``.
    """
    N = _check_size(N)
    n = np.arange(N, dtype=np.float64)
    if measure == "legs":
        P = np.sqrt(n + 0.5)[None, :]
    elif measure == "legt":
        r = np.sqrt(2.0 * n + 1.0) / np.sqrt(2.0)
        P = np.stack([np.where(n % 2 == 1, r, 0.0), np.where(n % 2 == 0, r, 0.0)])
    elif measure == "fout":
        P = _fout_vector(N)[None, :]
    elif measure in _TRANSITIONS:
        raise ValueError(f"measure {measure!r} has no normal-plus-low-rank form here")
    else:
        raise ValueError(f"unknown HiPPO measure {measure!r}; valid: {MEASURES}")
    if rank < P.shape[0]:
        raise ValueError(f"measure {measure!r} needs rank >= {P.shape[0]}; got rank={rank}")
    return np.concatenate([P, np.zeros((rank - P.shape[0], N))], axis=0)


# ----------------------------------------------------------------------------------------
# NPLR / DPLR
# ----------------------------------------------------------------------------------------


class NPLR(NamedTuple):
    """A HiPPO matrix in diagonal-plus-low-rank coordinates.

    With ``W = [V, conj V]`` (half form) or ``W = V`` (full form) unitary:
    ``A = W (diag(Λ_f) - P_f P_f^*) W^*`` and ``B = W B_f``, where ``Λ_f = [Λ, conj Λ]``,
    ``P_f = [P, conj P]``, ``B_f = [B, conj B]`` in the half form. Hence
    ``A + P_origᵀ P_orig = 2·Re(V diag(Λ) V^*)`` (half) or ``V diag(Λ) V^*`` (full).

    Fields: ``Lambda`` (M,) complex, ``P`` (rank, M) = ``V^* P_orig``, ``B`` (M,) =
    ``V^* B_orig`` (imaginary part clipped if asked), ``V`` (N, M); ``M = N // 2`` (half)
    or ``N`` (full).
    """

    Lambda: np.ndarray
    P: np.ndarray
    B: np.ndarray
    V: np.ndarray


def nplr(
    measure: str,
    N: int,
    *,
    rank: int = 1,
    b_clip: float | None = 2.0,
    conj_half: bool = True,
    check: bool = True,
) -> NPLR:
    """Normal-plus-low-rank decomposition of a HiPPO matrix, in float64 (S4 Thm. 1).

    ``S = A + Pᵀ P`` is ``c·I + skew`` for LegS/LegT/FouT. Its real part is the mean of
    its diagonal; its imaginary part and eigenvectors come from the Hermitian problem
    ``eigh(-i·S)`` (decomposing only the normal part, as s4 does -- never ``eig(A)``,
    which is ill-conditioned for HiPPO matrices).

    Args:
      measure: ``"legs" | "legt" | "fout"``.
      N: state size of the real system (even).
      rank: rank of the correction (LegS/FouT 1, LegT 2).
      b_clip: clip ``Im(B)`` to ``[-b_clip, b_clip]`` (s4's default 2.0); None: no clip.
        The clip depends on the eigenvector phases (see the module docstring).
      conj_half: keep one eigenvalue per conjugate pair (the ``N//2`` with negative
        imaginary part, ascending; S4) or all ``N`` ascending by imaginary part (S5).
      check: verify that ``S`` is ``c·I + skew`` and the reconstruction holds.

    Returns:
      ``NPLR(Lambda, P, B, V)``. ``Re Λ`` is -½ for LegS and 0 for LegT and FouT (FouT
      also has ``Λ = 0`` for one pair, whose eigenvectors are set to ``(u ± iv)/√2``).
    """
    N = _check_size(N, even=conj_half)
    A, B = transition(measure, N)
    P = rank_correction(measure, N, rank)
    S = A + P.T @ P
    if check:
        sym = S + S.T
        err = np.max(np.abs(sym - sym[0, 0] * np.eye(N)))
        if err > 1e-8 * max(1.0, np.max(np.abs(S))):
            raise ValueError(f"{measure}: A + PᵀP is not (const·I + skew-symmetric); error {err:.3g}")

    lam_re = np.mean(np.diag(S))
    lam_im, V = np.linalg.eigh(-1j * S)  # ascending; S's skew part = i·(Hermitian)
    order = np.argsort(lam_im, kind="stable")
    lam_im, V = lam_im[order], V[:, order]
    V = _pair_null_space(lam_im, V, scale=np.max(np.abs(S)))

    if conj_half:
        lam_im, V = lam_im[: N // 2], V[:, : N // 2]
    Lambda = lam_re + 1j * lam_im
    Vh = V.conj().T
    B_t = Vh @ B[:, 0].astype(np.complex128)
    P_t = (Vh @ P.T.astype(np.complex128)).T

    if check:
        recon = V @ np.diag(Lambda) @ Vh
        recon = 2.0 * recon.real if conj_half else recon
        err = np.max(np.abs(recon - S))
        if err > 1e-8 * max(1.0, np.max(np.abs(S))):
            raise ValueError(f"{measure}: diagonalization not accurate; error {err:.3g}")
    if b_clip is not None:
        B_t = B_t.real + 1j * np.clip(B_t.imag, -b_clip, b_clip)
    return NPLR(Lambda, P_t, B_t, V)


def _pair_null_space(lam_im: np.ndarray, V: np.ndarray, scale: float) -> np.ndarray:
    """Give (near-)zero eigenvalues conjugate-paired eigenvectors ``(u ± i v)/√2``.

    A real normal matrix's null space is spanned by real vectors; LAPACK returns an
    arbitrary complex basis of it, which breaks the conjugate-pair structure that the
    half form relies on (FouT has a 2-dimensional null space). The zeros sit in the
    middle of the ascending order, so the first half gets the ``+i`` members.
    """
    zero = np.abs(lam_im) <= 1e-9 * max(scale, 1.0)
    z = int(np.sum(zero))
    if z == 0:
        return V
    if z % 2:
        raise ValueError("odd-dimensional null space: cannot split into conjugate pairs")
    idx = np.flatnonzero(zero)
    W0 = V[:, idx]
    U, _, _ = np.linalg.svd(np.concatenate([W0.real, W0.imag], axis=1), full_matrices=False)
    U = U[:, :z]  # real orthonormal basis of the null space
    V = V.copy()
    k = z // 2
    for j in range(k):
        u, v = U[:, 2 * j], U[:, 2 * j + 1]
        V[:, idx[j]] = (u + 1j * v) / np.sqrt(2.0)
        V[:, idx[z - 1 - j]] = (u - 1j * v) / np.sqrt(2.0)
    return V


def nplr_legs(N: int, **kwargs) -> NPLR:
    """``nplr("legs", N, **kwargs)``: the S4 default (Λ = -½ + iω, rank 1)."""
    return nplr("legs", N, **kwargs)


# ----------------------------------------------------------------------------------------
# Diagonal initializations (S4D, S5)
# ----------------------------------------------------------------------------------------

S4D_INITS = ("legs", "lin", "inv", "real", "random")


def s4d_init(kind: str, N: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """S4D diagonal init: ``(Lambda, B)``, each (N // 2,) complex128 (conjugate-halved).

    * ``"lin"``: ``Λ_n = -½ - iπn`` (S4D-Lin);
    * ``"inv"``: ``Λ_n = -½ - i(N/π)(N/(2n+1) - 1)`` (S4D-Inv);
    * ``"legs"``: the diagonal part of NPLR-LegS (S4D-LegS), with its ``B = V^* B``
      (clipped, as in s4);
    * ``"real"``: ``Λ_n = -(n+1)`` (S4D-Real);
    * ``"random"``: ``Λ_n = -½ - i·exp(z_n)``, ``z_n ~ N(0, 1)`` i.i.d. -- no HiPPO
      structure: the real part of S4D-Lin with log-normal imaginary parts (mostly in
      ``[0.1, 7]``, no ordering), the ``init="rand"`` of state-spaces/s4's ``dplr``, the
      random baseline of S4D's initialization ablations (§5). Drawn from
      ``numpy.random.default_rng(seed)``, so a layer built with it is reproducible.

    Imaginary parts are **negative** (s4's ``dplr`` convention; the minimal S4D file uses
    ``+iπn``, which is the same model with ``C`` conjugated). ``B`` is ones except for
    ``legs``. Real output is ``2·Re`` of the half system. ``seed`` is used by
    ``"random"`` only.
    """
    N = _check_size(N, even=True)
    n = np.arange(N // 2, dtype=np.float64)
    ones = np.ones(N // 2, dtype=np.complex128)
    if kind == "lin":
        return -0.5 - 1j * np.pi * n, ones
    if kind == "inv":
        return -0.5 - 1j * (N / np.pi) * (N / (2.0 * n + 1.0) - 1.0), ones
    if kind == "real":
        return -(n + 1.0) + 0j, ones
    if kind == "legs":
        d = nplr("legs", N)
        return d.Lambda, d.B
    if kind == "random":
        z = np.random.default_rng(seed).standard_normal(N // 2)
        return -0.5 - 1j * np.exp(z), ones
    raise ValueError(f"unknown S4D init {kind!r}; valid: {S4D_INITS}")


class HippoN(NamedTuple):
    """S5's HiPPO-N init: ``Lambda`` (P',), ``V`` (P, P'), ``Vinv`` (P', P); ``P' = P`` or
    ``P/2`` (conj_sym). ``B̃ = Vinv @ B``, ``C̃ = C @ V`` for real ``B`` (P, H), ``C`` (H, P)."""

    Lambda: np.ndarray
    V: np.ndarray
    Vinv: np.ndarray


def s5_hippo_n(P: int, blocks: int = 1, conj_sym: bool = True) -> HippoN:
    """S5 HiPPO-N initialization, block-diagonal over ``blocks`` copies (S5 §4.2).

    Each block of size ``P // blocks`` gets the eigenvalues of the normal part of
    HiPPO-LegS (all of them, ascending by imaginary part); with ``conj_sym`` only the
    first half of each block (negative imaginary part) is kept and ``V`` keeps the
    matching columns, so the layer's real output is ``2·Re(C̃ x)``.
    """
    P = _check_size(P)
    if not isinstance(blocks, (int, np.integer)) or blocks < 1 or P % blocks:
        raise ValueError(f"blocks must be a positive divisor of P={P}; got {blocks!r}")
    size = P // blocks
    d = nplr("legs", size, b_clip=None, conj_half=False)
    Lambda, V = d.Lambda, d.V
    if conj_sym:
        if size % 2:
            raise ValueError(f"conj_sym needs an even block size; got P/blocks = {size}")
        Lambda, V = Lambda[: size // 2], V[:, : size // 2]
    Vinv = V.conj().T
    eye = np.eye(blocks)
    return HippoN(np.tile(Lambda, blocks), np.kron(eye, V), np.kron(eye, Vinv))
