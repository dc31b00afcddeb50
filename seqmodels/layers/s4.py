"""S4 and S4D: ``H = d_model`` independent single-input single-output state-space models.

Papers:

* S4: "Efficiently Modeling Long Sequences with Structured State Spaces" (Gu, Goel, Ré,
  ICLR 2022) -- the DPLR state matrix ``A = Λ - P P^*`` (Thm. 1, HiPPO-LegS by default),
  the bilinear discretization (eq. 3), the convolution view ``y = K̄ * u`` (eq. 4-5) and
  the kernel from the truncated generating function (Alg. 1, parameterized by ``C̃``).
* S4D: "On the Parameterization and Initialization of Diagonal State Space Models"
  (Gu, Gupta, Goel, Ré, NeurIPS 2022) -- diagonal ``A = Λ`` with the S4D-Lin / S4D-Inv /
  S4D-LegS / S4D-Real inits (§4), zero-order hold, Vandermonde kernel (eq. 5-6).

Per channel ``h`` the layer runs ``x' = A x + B u_h``, ``y_h = C x + D u_h`` at step
``Δ_h`` and returns ``W · GELU(y + D ⊙ u)`` (``common.SSMOutput``; ``output="glu"``
for the paper block's ``Linear(H, 2H)`` + GLU; ``output="none"`` for the bare SSM
``y + D ⊙ u``, without activation or projection, to go into a block of one's own). ``state_size = N`` is the size of the
real state; it is stored as ``N/2`` complex modes, one per conjugate pair, and the real
output is ``2·Re`` of the half system (s4's convention, ``ssm.kernels``).

Three evaluations of the same map, which agree to rounding (tests/test_s4.py):

* ``mode="conv"`` (default): the kernel ``K_l = C Ā^l B̄`` for the call's length ``L`` is
  computed from the parameters on every call (S4: ``ssm.dplr_kernel``, Cauchy sums +
  Woodbury; S4D: ``ssm.s4d_kernel``), then ``scans.fft_conv``.
  The FFT also spreads a NaN or inf at one step to every output of the sequence,
  earlier ones included (each output is a sum over all frequencies, each of which
  sums over all steps): to keep non-finite inputs isolated, use ``mode="scan"`` or
  ``step``, whose outputs before the step stay finite;
* ``mode="scan"``: the discretized recurrence over the sequence (S4: ``scans.matrix_scan``
  over the dense conjugate-doubled ``N × N`` system; S4D: ``scans.diagonal_ssm`` over the
  ``N/2`` complex modes, read out inside the scan);
* ``step``: one token of the same recurrence (S4: ``O(N²)`` per channel, S4D: ``O(N)``),
  on the discrete system that ``init_state`` computed once (``SSMStepState``, below).

**S4: ``C̃`` parameterization.** As in the paper (Alg. 1) and state-spaces/s4, the
learned output vector is ``C̃ = C (I - Ā^{l_max})`` for a fixed reference length
``l_max`` (option), which makes the kernel of length ``l_max`` a pure Cauchy/Woodbury
computation (``O(N·l_max)`` per channel, no matrix powers). ``C`` is drawn complex
normal at init and converted. A call of length ``L ≤ l_max`` uses the first ``L`` taps of
the length-``l_max`` kernel; ``L > l_max`` converts ``C̃`` to ``C̃_L = C (I - Ā^L)`` through
the dense discrete system (``ssm.dplr_c_from_c_tilde`` then ``ssm.dplr_c_tilde``,
``O(N³ log L)`` per channel) -- exact, but set ``l_max`` to the training length. The
recurrent forms need ``C`` itself: ``discrete_system()`` materializes ``Ā, B̄`` of the
conjugate-doubled system (``ssm.dplr_dense`` + bilinear ``ssm.discretize_dense``) and
solves for ``C`` (``ssm.dplr_c_from_c_tilde``), ``O(N³ log l_max)`` per channel: once per
``forward`` in scan mode, and once per generation for ``step``.

**Step state (state-spaces/s4's ``setup_step``).** ``init_state(batch_size)`` returns an
``SSMStepState(h, system)``: the zero hidden state and ``discrete_system()`` of the
current parameters; ``step`` only runs ``h ← Ā h + B̄ u``, ``y = readout(C, h)`` and the
output stage (``D`` and the projection are read from the module). The state is a pytree
of arrays, so it passes through ``jax.jit``/``lax.scan`` like any other, and gradients
reach the parameters through ``system`` when ``init_state`` is called inside the
differentiated function. After the SSM parameters change (an optimizer update, a
checkpoint load) call ``init_state`` again: a state from before keeps stepping with the
old system. S4's dense step is the conjugate-doubled system: ``h`` holds ``N`` complex
numbers (``N/2`` independent, their conjugates repeated) and ``Ā`` is a dense complex
``N × N`` matrix, ``N²`` complex multiply-adds per channel and token -- four times the
real operations of an equivalent real ``N``-state system (``[Re x; Im x]`` of the half
state), and ``8·H·N²`` bytes for ``Ā`` (complex64), shared by the batch (8 MiB at
``H = 256, N = 64``). state-spaces/s4's ``O(N)`` "linear" (Woodbury) and "diagonal"
step modes are not offered: at these sizes the dense step is already flat in ``L`` and
far cheaper than the convolution. S4D's system is three ``(H, N/2)`` complex arrays.

**Discretization.** S4: bilinear (required by the DPLR kernel), in every mode. S4D:
``discretization="zoh"`` (default, as in S4D) or ``"bilinear"``, the same rule in every
mode (``ssm.discretize_diag``, one ``Δ_h`` per channel: ``dt[:, None]``).

**Bidirectional** (``s4_bidirectional``, ``s4d_bidirectional``; not causal): as in
state-spaces/s4 ``FFTConv(bidirectional=True)``, a second output vector ``C₁`` (sharing
``Λ, P, B, Δ``) gives an anti-causal kernel ``K¹``; the layer computes
``y_t = Σ_{s≤t} K⁰_{t-s} u_s + Σ_{s>t} K¹_{s-t-1} u_s`` -- the reverse branch is shifted
by one (s4's deliberate off-by-one, so ``u_t`` is counted once). Convolution mode uses one
centred ("same") convolution with the odd kernel ``[flip(K¹[:L-1]), K⁰]``; scan mode adds
a reverse scan whose outputs are shifted by one step.

**Shared SSMs** (``n_ssm``, state-spaces/s4's option of the same name): ``n_ssm = k``
keeps ``k`` independent copies of ``(Λ, P, B)`` (S4D: ``(Λ, B)``), channel ``h`` using
copy ``h mod k`` (s4's ``repeat(..., '(v n)')`` order); ``Δ``, ``C`` and ``D`` stay per
channel. ``None`` (default) is ``k = H``, every channel its own; the official S4 configs
use ``n_ssm = 1``. At init every copy is the same HiPPO matrix, so sharing changes only
how training moves them (and the parameter count).

**Parameters.** ``Λ = -exp(log_A_real) + i·A_imag`` (``Re Λ < 0`` always; the real parts
of LegT, which are 0, start at ``-1e-4``), ``P`` (S4), ``B`` and ``log_dt``
(``Δ = exp(log_dt)``, log-uniform in ``[dt_min, dt_max]``) are ``common.SSMParam``: the
training loop gives them their own learning rate and no weight decay (the S4 recipe).
``C`` (S4: ``C̃``), ``D`` and the output projection are ordinary ``nnx.Param``. Complex
parameters are stored as real pairs ``(..., 2)`` (real, imaginary), float32.

Shapes: ``H = d_model``, ``N = state_size``, ``M = N // 2``, ``R`` = rank of ``P``,
``dirs`` = 1 (causal) or 2 (bidirectional), ``K = n_ssm`` (``H`` unless set).
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Complex, Float, Inexact

from .. import scans, ssm
from .base import Mixer, register
from .common import SSM_OUTPUTS, SSMOutput, SSMParam, check_positive_int, expand_to
from .options import POSITIVE

MODES = ("conv", "scan")
S4_INITS = ("legs", "legt")
S4_RANKS = {"legs": 1, "legt": 2}
# "hippo": the measure's rank correction; "zero": P = 0 at init (A = Λ, still trained).
S4_P_INITS = ("hippo", "zero")
S4D_DISCRETIZATIONS = ssm.discretize.DIAG_METHODS
# LegT has Re Λ = 0; the exp parameterization needs Re Λ < 0.
MIN_DECAY = 1e-4


class DiscreteSSM(NamedTuple):
    """A discretized layer: ``x_t = Ā x_{t-1} + B̄ u_t``, ``y_t = Re(scale · Σ C x_t)``.

    S4 (dense, conjugate-doubled, ``scale = 1``): ``A_bar (H, N, N)``, ``B_bar (H, N)``,
    ``C (dirs, H, N)``. S4D (diagonal half system, ``scale = 2``): ``A_bar (H, M)``,
    ``B_bar (H, M)``, ``C (dirs, H, M)``. ``C[1]`` is the reverse direction.
    """

    A_bar: jax.Array
    B_bar: jax.Array
    C: jax.Array


class SSMStepState(NamedTuple):
    """Recurrent state of S4, S4D and LSSL: ``h`` and the discrete system it is stepped with.

    ``h``: ``(batch, H, S)`` (S4: ``S = N`` complex; S4D: ``S = N/2`` complex; LSSL:
    ``S = N`` real), in the accumulation dtype. ``system``: the layer's
    ``discrete_system()`` when ``init_state`` made the state (S4/S4D: ``DiscreteSSM``;
    LSSL: ``lssl.DenseDiscreteSSM``), no batch axis. ``step`` reads ``Ā, B̄`` (and
    S4/S4D's ``C``) from here, never from the parameters: after the parameters change,
    make a new state with ``init_state``.
    """

    h: jax.Array
    system: NamedTuple

    @staticmethod
    def check(state, mixer: str) -> None:
        """Raise ``TypeError`` unless ``state`` is an ``SSMStepState`` (e.g. a bare ``h`` array)."""
        if not isinstance(state, SSMStepState):
            raise TypeError(f"state must be the SSMStepState(h, system) returned by {mixer}.init_state(batch_size), "
                            f"which carries the discretized system; got {type(state).__name__}")


def _as_complex(pair: jax.Array) -> jax.Array:
    """``(..., 2)`` real pairs -> complex ``(...)``."""
    return jax.lax.complex(pair[..., 0], pair[..., 1])


def _as_pair(z) -> jax.Array:
    z = np.asarray(z)
    return jnp.asarray(np.stack([z.real, z.imag], axis=-1), jnp.float32)


def _complex_normal(key, shape) -> jax.Array:
    """Standard complex normal (``E|z|² = 1``) as real pairs ``shape + (2,)``."""
    return jax.random.normal(key, shape + (2,), jnp.float32) * math.sqrt(0.5)


def _two_sided(K: Float[Array, "2 H L"]) -> Float[Array, "K H"]:
    """Odd "same"-convolution kernel ``[flip(K¹[:L-1]), K⁰]`` (length ``2L - 1``), time first.

    Tap ``c + m`` (``c = L - 1``) multiplies ``u_{t-m}``: ``K⁰_m`` for ``m ≥ 0``, ``K¹_{-m-1}``
    for ``m < 0``.
    """
    L = K.shape[-1]
    return jnp.concatenate([jnp.flip(K[1, :, : L - 1], axis=-1), K[0]], axis=-1).T


def _shift_back(y: jax.Array) -> jax.Array:
    """``y_{t+1}`` at ``t`` (zero at the end), along axis 1."""
    pad = [(0, 0), (0, 1)] + [(0, 0)] * (y.ndim - 2)
    return jnp.pad(y[:, 1:], pad)


class _ConvSSM(Mixer):
    """Shared plumbing of S4 and S4D: kernel or scan, bidirectional combination, step.

    Subclasses provide ``kernel(L)``, ``discrete_system()``, ``_recur`` and ``_readout``.
    """

    option_choices = {"mode": MODES, "output": SSM_OUTPUTS}
    option_ranges = {"dt_min": POSITIVE, "dt_max": POSITIVE}

    bidirectional: ClassVar[bool] = False

    def _init_common(self, d_model, state_size, n_ssm, dt_min, dt_max, mode, output, rngs):
        self.d_model = d_model
        if n_ssm is not None and d_model % n_ssm:
            raise ValueError(f"{type(self).__name__}: n_ssm must divide d_model={d_model}; got n_ssm={n_ssm}")
        self.n_ssm = d_model if n_ssm is None else n_ssm
        self.state_size = check_positive_int("state_size", state_size, even=True)
        self.mode = mode
        self.directions = 2 if self.bidirectional else 1
        self.log_dt = SSMParam(ssm.log_uniform_log_dt(rngs.params(), (d_model,), dt_min, dt_max))
        self.output = SSMOutput(d_model, 1, output=output, rngs=rngs)

    def _tile(self, a: np.ndarray) -> np.ndarray:
        """An init-time array repeated over the ``n_ssm`` copies: ``(K,) + a.shape``."""
        return np.broadcast_to(a, (self.n_ssm,) + a.shape)

    def _per_channel(self, x: jax.Array) -> jax.Array:
        """``(K, ...)`` shared-SSM array -> ``(H, ...)``: channel ``h`` reads copy ``h mod K``."""
        if self.n_ssm == self.d_model:
            return x
        return jnp.tile(x, (self.d_model // self.n_ssm,) + (1,) * (x.ndim - 1))

    @property
    def Lambda(self) -> Complex[Array, "H M"]:
        """Diagonal (part) of the continuous state matrix per channel, ``-exp(log_A_real) + i·A_imag``."""
        return self._per_channel(jax.lax.complex(-jnp.exp(self.log_A_real[...]), self.A_imag[...]))

    @property
    def channel_B(self) -> Complex[Array, "H M"]:
        """``B`` per channel, complex."""
        return self._per_channel(_as_complex(self.B[...]))

    @property
    def dt(self) -> Float[Array, " H"]:
        return jnp.exp(self.log_dt[...])

    # --- the three evaluations -----------------------------------------------------

    def ssm_outputs(self, u: Float[Array, "B L H"]) -> Float[Array, "B L H"]:
        """``y = K * u`` (without the ``D`` term), by convolution or scan per ``mode``."""
        L = u.shape[1]
        if self.mode == "conv":
            K = self.kernel(L)
            if self.bidirectional:
                return scans.fft_conv(u, _two_sided(K), causal=False)
            return scans.fft_conv(u, K[0].T)
        system = self.discrete_system()
        y = self._scan_outputs(system, u, system.C[0])
        if self.bidirectional:
            y = y + _shift_back(self._scan_outputs(system, u, system.C[1], reverse=True))
        return y

    def _scan_outputs(self, system: DiscreteSSM, u, C, reverse: bool = False):
        """Scan mode for one direction: the states over the sequence, then the readout ``C``."""
        h, _ = self._recur(system.A_bar, self._input_term(system, u), reverse=reverse)
        return self._readout(C, h)

    def forward(self, x):
        return self.output(self.ssm_outputs(x).astype(x.dtype)[..., None], x)

    def init_state(self, batch_size: int) -> SSMStepState:
        """``SSMStepState(h, system)``: zero ``h`` ``(batch, H, N)`` (S4) or ``(batch, H, M)`` (S4D),
        complex64 (complex128 for float64 parameters), and ``system = discrete_system()`` of
        the current parameters, computed here once (S4: ``O(N³ log l_max)`` per channel)
        so that ``step`` costs ``O(N²)`` (S4) or ``O(N)`` (S4D) per channel and token.

        The state holds the system: call ``init_state`` again after the parameters change.
        Memory beyond ``h``: S4 ``Ā (H, N, N)``, ``B̄ (H, N)``, ``C (1, H, N)`` complex
        (``8·H·N²`` bytes for ``Ā``), S4D three ``(H, M)`` complex arrays.
        """
        if not self.causal:
            raise NotImplementedError(f"{type(self).__name__} is not causal and has no recurrent state")
        dtype = jnp.promote_types(self.log_dt[...].dtype, jnp.complex64)
        return SSMStepState(jnp.zeros((batch_size, self.d_model, self._state_width), dtype), self.discrete_system())

    def forward_step(self, x_t, state: SSMStepState):
        SSMStepState.check(state, type(self).__name__)
        system = state.system
        _, h = self._recur(system.A_bar, self._input_term(system, x_t[:, None]), h0=state.h, method="sequential")
        y = self._readout(system.C[0], h)
        return self.output(y.astype(x_t.dtype)[..., None], x_t), SSMStepState(h.astype(state.h.dtype), system)

    @staticmethod
    def _input_term(system: DiscreteSSM, u):
        """``B̄ u``: ``(B, L, H, S)`` for ``u (B, L, H)``."""
        return expand_to(system.B_bar, u.ndim + 1) * u[..., None]


@register("s4", example_options={"state_size": 8, "l_max": 128})
class S4(_ConvSSM):
    """S4 (DPLR) mixer: ``A = Λ - P P^*`` per channel, bilinear, ``C̃``-parameterized.

    Options:
      state_size: ``N`` (even), the real state size per channel (paper default 64).
      l_max: reference length of ``C̃`` (set it to the training length; see the module
        docstring).
      init: HiPPO measure of ``A``: ``"legs"`` (default, rank 1) or ``"legt"`` (rank 2),
        diagonalized by ``ssm.nplr``. (FouT is not offered: its eigenvalue ``Λ = 0`` makes
        the ``C̃`` conversion and the kernel's ``ω = 1`` node ill-conditioned in float32.)
      n_ssm: number of independent ``(Λ, P, B)`` copies shared by the channels (a divisor
        of ``d_model``; None: one per channel). See the module docstring.
      p_init: ``"hippo"`` (default): ``P`` is the measure's rank correction, so ``Λ - P P^*``
        is the HiPPO matrix itself (for LegS lower-triangular with diagonal ``-1 … -N``:
        real eigenvalues, a non-oscillating initial kernel). ``"zero"``: ``P = 0`` at init,
        so ``A = Λ`` starts as the diagonal normal part (``-½ + iω``, the S4D-LegS
        spectrum) -- a control that isolates the low-rank term; ``P`` is still trained.
      dt_min, dt_max: range of the log-uniform ``Δ`` init.
      mode: ``"conv"`` (kernel + FFT) or ``"scan"`` (dense recurrence); same outputs.
      output: ``"linear"`` (``Dense(H, H)``), ``"glu"`` (``Dense(H, 2H)`` + GLU) or ``"none"``
        (the bare SSM ``y = K * u + D ⊙ u``).

    Parameters: ``log_A_real, A_imag (K, M)``, ``P (K, R, M, 2)``, ``B (K, M, 2)``,
    ``log_dt (H,)`` -- SSMParam; ``C_tilde (dirs, H, M, 2)``, ``output.*`` -- Param.

    State (``init_state``): ``SSMStepState(h (batch, H, N) complex64, system)`` where
    ``system`` is ``discrete_system()`` -- dense ``Ā (H, N, N)``, ``B̄``, ``C`` -- computed
    once per state (``8·H·N²`` bytes for ``Ā``); make a new state after a parameter update.
    """

    option_choices = {"init": S4_INITS, "p_init": S4_P_INITS}

    causal = True

    def __init__(self, d_model: int, *, state_size: int = 64, l_max: int = 1024, init: str = "legs",
                 p_init: str = "hippo", n_ssm: int | None = None, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 mode: str = "conv", output: str = "linear", rngs: nnx.Rngs):
        self.l_max = check_positive_int("l_max", l_max)
        self._init_common(d_model, state_size, n_ssm, dt_min, dt_max, mode, output, rngs)
        d = ssm.nplr(init, self.state_size, rank=S4_RANKS[init])
        tile = self._tile
        self.log_A_real = SSMParam(jnp.asarray(tile(np.log(np.maximum(-d.Lambda.real, MIN_DECAY))), jnp.float32))
        self.A_imag = SSMParam(jnp.asarray(tile(d.Lambda.imag), jnp.float32))
        self.P = SSMParam(_as_pair(tile(d.P if p_init == "hippo" else np.zeros_like(d.P))))
        self.B = SSMParam(_as_pair(tile(d.B)))
        # C ~ complex normal, stored as C̃ = C (I - Ā^l_max) (state-spaces/s4 converts the same way).
        C = _as_complex(_complex_normal(rngs.params(), (self.directions, d_model, self.state_size // 2)))
        A_bar, _ = self._dense_discretization()
        self.C_tilde = nnx.Param(_as_pair(ssm.dplr_c_tilde(C, A_bar, self.l_max)))

    @property
    def _state_width(self) -> int:
        return self.state_size

    @property
    def channel_P(self) -> Complex[Array, "H R M"]:
        """``P`` per channel, complex."""
        return self._per_channel(_as_complex(self.P[...]))

    def _dense_discretization(self):
        """Bilinear ``Ā (H, N, N)``, ``B̄ (H, N)`` of the conjugate-doubled DPLR system."""
        A, B = ssm.dplr_dense(self.Lambda, self.channel_P, self.channel_B)
        A_bar, B_bar = ssm.discretize_dense(A, B[..., None], self.dt, method="bilinear")
        return A_bar, B_bar[..., 0]

    def kernel(self, L: int) -> Float[Array, "dirs H L"]:
        """``K_l = Re(C_f Ā^l B̄)``, ``l < L``, per direction and channel (``ssm.dplr_kernel``)."""
        L = check_positive_int("L", L)
        C_tilde = _as_complex(self.C_tilde[...])
        length = self.l_max
        if L > self.l_max:
            A_bar, _ = self._dense_discretization()
            C = ssm.dplr_c_from_c_tilde(C_tilde, A_bar, self.l_max)
            C_tilde, length = ssm.dplr_c_tilde(C, A_bar, L), L
        K = ssm.dplr_kernel(self.Lambda, self.channel_P, self.channel_B, C_tilde,
                            self.dt, length)
        return K[..., :L]

    def discrete_system(self) -> DiscreteSSM:
        """Dense conjugate-doubled ``Ā, B̄`` and ``C_f = [C, conj C]`` with ``C`` recovered from ``C̃``."""
        A_bar, B_bar = self._dense_discretization()
        C = ssm.dplr_c_from_c_tilde(_as_complex(self.C_tilde[...]), A_bar, self.l_max)
        return DiscreteSSM(A_bar, B_bar, jnp.concatenate([C, jnp.conj(C)], axis=-1))

    @staticmethod
    def _recur(A_bar, b, h0=None, reverse=False, method="auto"):
        return scans.matrix_scan(A_bar, b, h0, reverse=reverse, method=method)

    @staticmethod
    def _readout(C, h):
        return jnp.einsum("...hn,hn->...h", h, C).real


@register("s4_bidirectional", example_options={"state_size": 8, "l_max": 128})
class S4Bidirectional(S4):
    """S4 with a second, anti-causal kernel (not causal; see the module docstring)."""

    causal = False
    bidirectional = True


@register("s4d", example_options={"state_size": 8})
class S4D(_ConvSSM):
    """S4D mixer: diagonal complex ``A = Λ`` per channel.

    Options:
      state_size: ``N`` (even); ``N/2`` complex modes per channel (paper default 64).
      init: ``"lin"`` (S4D-Lin, default: ``Λ_n = -½ - iπn``), ``"inv"`` (S4D-Inv),
        ``"legs"`` (S4D-LegS, with its ``B``), ``"real"`` (S4D-Real) -- ``ssm.s4d_init``.
      discretization: ``"zoh"`` (default) or ``"bilinear"``, used by every mode.
      n_ssm: number of independent ``(Λ, B)`` copies shared by the channels (a divisor of
        ``d_model``; None: one per channel). See the module docstring.
      dt_min, dt_max: range of the log-uniform ``Δ`` init.
      mode: ``"conv"`` (Vandermonde kernel + FFT) or ``"scan"`` (``scans.linear_scan``).
      output: ``"linear"``, ``"glu"`` or ``"none"`` (the bare SSM ``y = K * u + D ⊙ u``:
        no GELU, no projection).

    Parameters: ``log_A_real, A_imag (K, M)``, ``B (K, M, 2)``, ``log_dt (H,)`` --
    SSMParam; ``C (dirs, H, M, 2)``, ``output.*`` -- Param.

    State (``init_state``): ``SSMStepState(h (batch, H, M) complex64, system)``, ``system``
    the diagonal ``discrete_system()`` (three ``(H, M)`` complex arrays) computed once per
    state; make a new state after a parameter update.
    """

    option_choices = {"init": ssm.hippo.S4D_INITS, "discretization": S4D_DISCRETIZATIONS}

    causal = True

    def __init__(self, d_model: int, *, state_size: int = 64, init: str = "lin", discretization: str = "zoh",
                 n_ssm: int | None = None, dt_min: float = 1e-3, dt_max: float = 1e-1, mode: str = "conv",
                 output: str = "linear", rngs: nnx.Rngs):
        self.discretization = discretization
        self._init_common(d_model, state_size, n_ssm, dt_min, dt_max, mode, output, rngs)
        Lambda, B = ssm.s4d_init(init, self.state_size)
        tile = self._tile
        self.log_A_real = SSMParam(jnp.asarray(tile(np.log(-Lambda.real)), jnp.float32))
        self.A_imag = SSMParam(jnp.asarray(tile(Lambda.imag), jnp.float32))
        self.B = SSMParam(_as_pair(tile(B)))
        self.C = nnx.Param(_complex_normal(rngs.params(), (self.directions, d_model, self.state_size // 2)))

    @property
    def _state_width(self) -> int:
        return self.state_size // 2

    def kernel(self, L: int) -> Float[Array, "dirs H L"]:
        """``K_l = 2·Re Σ_n C_n B̄_n Λ̄_n^l``, ``l < L`` (``ssm.s4d_kernel``)."""
        L = check_positive_int("L", L)
        return ssm.s4d_kernel(_as_complex(self.C[...]), self.channel_B, self.Lambda,
                              self.dt[:, None], L, method=self.discretization)

    def discrete_system(self) -> DiscreteSSM:
        """Diagonal ``Λ̄, B̄ (H, M)`` and ``C (dirs, H, M)``."""
        A_bar, B_bar = ssm.discretize_diag(self.Lambda, self.channel_B, self.dt[:, None],
                                           method=self.discretization)
        return DiscreteSSM(A_bar, B_bar, _as_complex(self.C[...]))

    @staticmethod
    def _recur(A_bar, b, h0=None, reverse=False, method="auto"):
        return scans.linear_scan(A_bar, b, h0, reverse=reverse, method=method)

    @staticmethod
    def _readout(C, h: Inexact[Array, "... H M"]):
        return 2.0 * jnp.einsum("...hn,hn->...h", h, C).real

    def _scan_outputs(self, system: DiscreteSSM, u, C, reverse: bool = False):
        """``scans.diagonal_ssm``: the readout inside the scan, no ``(B, L, H, M)`` states
        (20× faster on CPU); under sequence parallelism the shardable ``linear_scan`` path."""
        if scans.sequence_parallel_active():
            return super()._scan_outputs(system, u, C, reverse)
        return scans.diagonal_ssm(system.A_bar, system.B_bar, 2.0 * C, u, reverse=reverse)[0]


@register("s4d_bidirectional", example_options={"state_size": 8})
class S4DBidirectional(S4D):
    """S4D with a second, anti-causal kernel (not causal; see the module docstring)."""

    causal = False
    bidirectional = True
