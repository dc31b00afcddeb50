"""LSSL: "Combining Recurrent, Convolutional, and Continuous-time Models with Linear
State-Space Layers" (Gu, Johnson, Goel, Saab, Dao, Rudra, Ré, NeurIPS 2021).

Each of the ``H = d_model`` input channels drives the continuous-time system
``x' = A x + B u_h`` with a dense HiPPO state matrix ``A`` (N × N, real) and is read out
by ``M = channels`` output vectors (§3, eq. 1-2):

    Ā_h, B̄_h = GBT(A, B, Δ_h)                  (eq. 3; α = ½ bilinear by default)
    x_t = Ā_h x_{t-1} + B̄_h u_{t,h},   y_{t,h,m} = C_{h,m} · x_t            (recurrent view)
    y_{:,h,m} = K_{h,m} * u_{:,h},      K_{h,m,l} = C_{h,m} Ā_h^l B̄_h          (convolutional view)
    out = W · GELU(y + D ⊙ u)            (``common.SSMOutput``: W over the H·M features)

**Channel structure.** One ``(A, B)`` pair is shared by all channels and each channel
``h`` has its own step ``Δ_h``, log-uniform in ``[dt_min, dt_max]``: the paper's
"multiple timescales" (§3, §4: every feature sees the same HiPPO memory at a different
speed), which is also state-spaces/s4's ``Platypus`` with one ``A`` and per-feature
``dt``. The discrete ``Ā_h`` therefore differ per channel (``(H, N, N)``).

**Evaluations** (they agree to rounding; tests/test_lssl.py):

* ``mode="conv"`` (default): the Krylov kernel ``[B̄, ĀB̄, …, Ā^{L-1}B̄]`` by repeated
  squaring (``ssm.krylov_kernel``, ``O(N³ log L + N² L)`` per channel) for the call's
  length, then ``scans.fft_conv``.
  The FFT also spreads a NaN or inf at one step to every output of the sequence,
  earlier ones included (each output is a sum over all frequencies, each of which
  sums over all steps): to keep non-finite inputs isolated, use ``mode="scan"`` or
  ``step``, whose outputs before the step stay finite;
* ``mode="scan"``: ``scans.matrix_scan`` of the dense recurrence;
* ``step``: one token of it, ``O(N²)`` per channel. The ``O(N³)`` discretization is
  done once, by ``init_state``: the state is an ``s4.SSMStepState(h, system)`` that
  carries ``DenseDiscreteSSM`` ``Ā (H, N, N)``, ``B̄ (H, N)`` (``4·H·N²`` bytes for
  ``Ā`` in float32, shared by the batch), so ``step`` never rediscretizes (the analogue
  of state-spaces/s4's ``setup_step``). ``C``, ``D`` and the projection are read from the
  module. After ``A``, ``B`` or ``Δ`` change, call ``init_state`` again.

**Fixed or trainable.** ``trainable_A=True`` makes ``A`` and ``B`` (the HiPPO pair,
initialized from ``measure``) trainable, as dense parameters shared over channels
(the paper's learned-A LSSL; the repo's ``learn`` flag also covers both); ``False`` is
LSSL-fixed. ``trainable_dt`` does the same for ``log Δ``. Trainable ones are
``common.SSMParam`` (own learning rate, no weight decay); fixed ones are
``SSMConstant``, an ``nnx.Variable`` that is not an ``nnx.Param``, so gradients taken
with respect to ``nnx.Param`` and ``nnx.Optimizer(..., wrt=nnx.Param)`` leave them alone.
``C ~ N(0, 1)`` ``(H, M, N)``, ``D`` and the projection are ordinary ``nnx.Param``.

Options: ``measure`` in ``("legs", "legt", "lagt", "fout")`` (``ssm.transition``);
``discretization`` in ``("bilinear", "zoh", "forward_euler", "backward_euler")``
(``ssm.discretize_dense``; forward Euler is unstable for stiff ``A`` and large ``Δ``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from .. import scans, ssm
from .base import Mixer, register
from .common import SSM_OUTPUTS, SSMOutput, SSMParam, check_positive_int, expand_to
from .options import POSITIVE
from .s4 import SSMStepState

MODES = ("conv", "scan")
DISCRETIZATIONS = ("bilinear", "zoh", "forward_euler", "backward_euler")


class SSMConstant(nnx.Variable):
    """A fixed state-space array (LSSL-fixed ``A``, ``B`` or ``log Δ``): state, not a parameter."""


class DenseDiscreteSSM(NamedTuple):
    """``A_bar (H, N, N)``, ``B_bar (H, N)``: ``x_t = Ā_h x_{t-1} + B̄_h u_{t,h}``."""

    A_bar: jax.Array
    B_bar: jax.Array


@register("lssl", example_options={"state_size": 8})
class LSSL(Mixer):
    """Linear State-Space Layer with a dense HiPPO ``A`` shared over channels, one ``Δ`` per channel.

    Options:
      state_size: ``N``, the state size (default 64).
      measure: HiPPO measure of ``(A, B)``: ``"legs"`` (default), ``"legt"``, ``"lagt"``, ``"fout"``.
      channels: ``M`` output channels per input channel (default 1).
      trainable_A: learn ``A`` and ``B`` (default True); False: LSSL-fixed.
      trainable_dt: learn ``log Δ`` (default True).
      dt_min, dt_max: range of the log-uniform ``Δ`` init.
      discretization: rule of ``ssm.discretize_dense`` (default ``"bilinear"``).
      mode: ``"conv"`` (Krylov kernel + FFT) or ``"scan"`` (``scans.matrix_scan``).
      output: ``"linear"``, ``"glu"`` or ``"none"`` (the bare SSM, ``channels=1`` only; see ``common.SSMOutput``).

    Variables: ``A (N, N)``, ``B (N,)``, ``log_dt (H,)`` (SSMParam or SSMConstant),
    ``C (H, M, N)`` and ``output.*`` (Param).

    State (``init_state``): ``SSMStepState(h (batch, H, N) float32, system)``, ``system``
    the ``discrete_system()`` computed once per state (``4·H·N²`` bytes for ``Ā``); make
    a new state after ``A``, ``B`` or ``Δ`` change.
    """

    option_choices = {"measure": ssm.hippo.MEASURES, "discretization": DISCRETIZATIONS, "mode": MODES,
                      "output": SSM_OUTPUTS}
    option_ranges = {"dt_min": POSITIVE, "dt_max": POSITIVE}

    causal = True

    def __init__(self, d_model: int, *, state_size: int = 64, measure: str = "legs", channels: int = 1,
                 trainable_A: bool = True, trainable_dt: bool = True, dt_min: float = 1e-3,
                 dt_max: float = 1e-1, discretization: str = "bilinear", mode: str = "conv",
                 output: str = "linear", rngs: nnx.Rngs):
        self.d_model = d_model
        self.state_size = check_positive_int("state_size", state_size)
        self.channels = check_positive_int("channels", channels)
        self.measure, self.discretization, self.mode = measure, discretization, mode
        A, B = ssm.transition(measure, state_size)
        hippo = SSMParam if trainable_A else SSMConstant
        self.A = hippo(jnp.asarray(A, jnp.float32))
        self.B = hippo(jnp.asarray(B[:, 0], jnp.float32))
        timescale = SSMParam if trainable_dt else SSMConstant
        self.log_dt = timescale(ssm.log_uniform_log_dt(rngs.params(), (d_model,), dt_min, dt_max))
        self.C = nnx.Param(jax.random.normal(rngs.params(), (d_model, channels, state_size), jnp.float32))
        self.output = SSMOutput(d_model, channels, output=output, rngs=rngs)

    @property
    def dt(self) -> Float[Array, " H"]:
        return jnp.exp(self.log_dt[...])

    def discrete_system(self) -> DenseDiscreteSSM:
        """``Ā_h, B̄_h`` for every channel (``ssm.discretize_dense``)."""
        A_bar, B_bar = ssm.discretize_dense(self.A[...], self.B[...][:, None], self.dt, method=self.discretization)
        return DenseDiscreteSSM(A_bar, B_bar[..., 0])

    def kernel(self, L: int) -> Float[Array, "H M L"]:
        """``K_{h,m,l} = C_{h,m} Ā_h^l B̄_h``, ``l < L`` (``ssm.krylov_kernel``)."""
        L = check_positive_int("L", L)
        A_bar, B_bar = self.discrete_system()
        return ssm.krylov_kernel(self.C[...], A_bar[:, None], B_bar[:, None], L)

    def ssm_outputs(self, u: Float[Array, "B L H"]) -> Float[Array, "B L H M"]:
        """``y = K * u`` (without the ``D`` term), by convolution or scan per ``mode``."""
        if self.mode == "conv":
            K = self.kernel(u.shape[1])
            return scans.fft_conv(u[..., None], jnp.moveaxis(K, -1, 0))
        A_bar, B_bar = self.discrete_system()
        h, _ = scans.matrix_scan(A_bar, expand_to(B_bar, u.ndim + 1) * u[..., None])
        return self._readout(h)

    def _readout(self, h):
        return jnp.einsum("...hn,hmn->...hm", h, self.C[...].astype(h.dtype))

    def forward(self, x):
        return self.output(self.ssm_outputs(x).astype(x.dtype), x)

    def init_state(self, batch_size: int) -> SSMStepState:
        """``SSMStepState(h, system)``: zero ``h`` ``(batch, H, N)``, float32 (float64 for
        float64 parameters), and ``system = discrete_system()`` of the current ``A, B, Δ``,
        computed here once (``O(N³)`` per channel) so that ``step`` costs ``O(N²)`` per
        channel and token.

        The state holds the system: call ``init_state`` again after ``A``, ``B`` or ``Δ``
        change. Memory beyond ``h``: ``Ā (H, N, N)`` and ``B̄ (H, N)`` (``4·H·N²`` bytes for
        ``Ā`` in float32).
        """
        dtype = jnp.promote_types(self.log_dt[...].dtype, jnp.float32)
        return SSMStepState(jnp.zeros((batch_size, self.d_model, self.state_size), dtype), self.discrete_system())

    def forward_step(self, x_t, state: SSMStepState):
        SSMStepState.check(state, type(self).__name__)
        A_bar, B_bar = state.system
        b = (expand_to(B_bar, x_t.ndim + 1) * x_t[..., None])[:, None]
        _, h = scans.matrix_scan(A_bar, b, state.h, method="sequential")
        y = self._readout(h)
        return self.output(y.astype(x_t.dtype), x_t), SSMStepState(h.astype(state.h.dtype), state.system)
