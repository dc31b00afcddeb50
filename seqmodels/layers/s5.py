"""S5: "Simplified State Space Layers for Sequence Modeling" (Smith, Warrington,
Linderman, ICLR 2023).

One multi-input multi-output (MIMO) linear SSM with a diagonal complex state matrix
acts on all ``H = d_model`` channels at once:

    x_k = Λ̄ ⊙ x_{k-1} + B̄ u_k                     (state x ∈ C^P, input u ∈ R^H)
    y_k = 2·Re(C̃ x_k) + D ⊙ u_k                    (conj_sym; Re(C̃ x_k) without it)

* Continuous ``Λ ∈ C^P``, ``B̃ = V⁻¹B ∈ C^{P×H}``, ``C̃ = CV ∈ C^{H×P}``, one step
  ``Δ_p = step_rescale · exp(log Δ_p)`` per state, discretized by zero-order hold
  (``Λ̄ = e^{ΛΔ}``, ``B̄ = (Λ̄-1)/Λ · B̃``) or bilinear (``ssm.discretize_diag``).
* Initialization HiPPO-N (§4.2; ``ssm.s5_hippo_n``): ``Λ`` = eigenvalues of the
  normal part of HiPPO-LegS (``-½ + iω``), repeated over ``blocks`` block-diagonal
  copies; ``B`` (P×H, real) and ``C`` (H×P, complex) truncated-normal with variance
  ``1/P`` per real entry (what the S5 code's lecun-normal gives on its shapes),
  ``B̃ = V⁻¹B``, ``C̃ = CV``; ``D ~ N(0, 1)``; ``log Δ ~ U[log dt_min, log dt_max]``.
* ``conj_sym`` keeps one state per conjugate pair (``P/2`` complex modes, output
  ``2·Re``); ``clip_eigs`` clamps ``Re Λ ≤ -1e-4`` where Λ is used (as the S5 code does,
  after S4D's left-half-plane condition; recommended for autoregressive use and
  unbounded lengths).
* Bidirectional (the ``s5_bidirectional`` mixer): a second, reversed scan over
  the same ``(Λ̄, B̄u)`` and ``C̃ = [C̃₁ C̃₂] ∈ C^{H×2P}`` (forward columns first).
* Irregular sampling (the paper's pendulum experiment with variable observation
  intervals): ``apply_with_timesteps(x, dt)`` discretizes per
  token with ``Δ_{k,p} = dt_k · Δ_p``.
* The S5 block (``SequenceLayer``) applies GELU (or a GLU variant) after the SSM; the
  norm, dropout and residual belong to the backbone (``models.SequenceModel``).

The recurrence runs in ``scans.linear_scan`` with complex coefficients (a time-invariant
``Λ̄`` broadcast over batch and time); the parallel forward and the recurrent ``step``
are the same function, :func:`apply_ssm`, on a sequence of length L or 1.

Parameters are real: ``A.Lambda_re``, ``A.Lambda_im``, ``A.log_step`` (P,) and ``B``
(P, H, 2) (real and imaginary parts of ``B̃`` on the last axis) are ``SSMParam`` -- the
training loop gives them their own learning rate and no weight decay, the S5 paper's
optimizer split; ``C`` (H, P, 2) (``(H, 2P, 2)`` bidirectional) and ``D`` (H,) are
ordinary ``nnx.Param``. ``P`` here is the number of stored modes (``state_size / 2``
under ``conj_sym``).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Complex, Float, Inexact

from .. import scans, ssm
from ..ssm.discretize import DIAG_METHODS
from .base import Mixer, register
from .options import POSITIVE
from .common import Dense, SSMParam, expand_to

ACTIVATIONS = ("gelu", "half_glu1", "half_glu2", "full_glu", "none")
EIG_CLIP = -1e-4  # clip_eigs: Re Λ ≤ EIG_CLIP


# ----------------------------------------------------------------------------------------
# The SSM as pure functions (checked against lindermanlab/S5's apply_ssm)
# ----------------------------------------------------------------------------------------


def _real_dtype(dtype):
    return jnp.finfo(dtype).dtype


def _accumulation_dtypes(*arrays):
    """``(complex, real)`` dtypes the state lives in: at least complex64/float32."""
    dtype = jnp.promote_types(jnp.result_type(*arrays), jnp.complex64)
    return dtype, _real_dtype(dtype)


def project_inputs(b: Inexact[Array, "P H"], u: Float[Array, "*batch H"]) -> Complex[Array, "*batch P"]:
    """``B u`` per position for a complex ``B`` and real ``u``: one real matmul against
    ``[Re B; Im B]`` in ``u``'s dtype, accumulated in float32 (or wider)."""
    cdtype, rdtype = _accumulation_dtypes(b, u)
    w = jnp.concatenate([jnp.real(b), jnp.imag(b)], axis=0).T.astype(u.dtype)  # (H, 2P)
    bu = jnp.matmul(u, w, preferred_element_type=jnp.promote_types(u.dtype, rdtype))
    re, im = jnp.split(bu.astype(rdtype), 2, axis=-1)
    return jax.lax.complex(re, im).astype(cdtype)


def read_out(c: Inexact[Array, "H P"], x: Complex[Array, "*batch P"], conj_sym: bool,
             dtype=None) -> Float[Array, "*batch H"]:
    """``2·Re(C x)`` (``conj_sym``) or ``Re(C x)``: one real matmul of ``[Re x, Im x]``
    against ``[Re Cᵀ; -Im Cᵀ]`` in ``dtype`` (default: the state's real dtype),
    accumulated in float32 (or wider)."""
    rdtype = _real_dtype(x.dtype)
    dtype = rdtype if dtype is None else dtype
    xs = jnp.concatenate([jnp.real(x), jnp.imag(x)], axis=-1).astype(dtype)
    w = jnp.concatenate([jnp.real(c).T, -jnp.imag(c).T], axis=0).astype(dtype)  # (2P, H)
    y = jnp.matmul(xs, w, preferred_element_type=jnp.promote_types(dtype, rdtype))
    return 2.0 * y if conj_sym else y


def scan_ssm(lambda_bar: Complex[Array, "*#batch P"], bu: Complex[Array, "B L P"],
             c_tilde: Complex[Array, "H P_out"], *, conj_sym: bool, bidirectional: bool = False,
             h0: Complex[Array, "B P"] | None = None,
             lambda_bar_reverse: Complex[Array, "*#batch P"] | None = None,
             bu_reverse: Complex[Array, "B L P"] | None = None,
             method: str = "auto", out_dtype=None) -> tuple[Float[Array, "B L H"], Complex[Array, "B P"]]:
    """Run ``x_k = Λ̄_k ⊙ x_{k-1} + (B̄u)_k`` and read ``y_k`` out through ``C̃``.

    Args:
      lambda_bar: ``(P,)`` time-invariant, or ``(B, L, P)`` per token (irregular steps).
      bu: ``(B, L, P)`` the inputs ``B̄_k u_k``.
      c_tilde: ``(H, P)``, or ``(H, 2P)`` when ``bidirectional`` (forward columns first).
      conj_sym: output ``2·Re`` (half spectrum) or ``Re``.
      bidirectional: add a reversed scan ``x'_k = Λ̄ ⊙ x'_{k+1} + (B̄u)_k`` read by the
        second half of ``C̃``; ``lambda_bar_reverse``/``bu_reverse`` replace its
        coefficients (irregular steps), by default the forward ones.
      h0: ``(B, P)`` state before the first step (forward scan only); zeros if None.
      method: ``scans.linear_scan``'s method.
      out_dtype: dtype of the read-out matmul (the activation dtype).

    Returns:
      ``(y, x_last)``: ``y`` (B, L, H) real, without the ``D`` term; ``x_last`` (B, P)
      the forward state after the last step (complex64 or wider).
    """
    P = bu.shape[-1]
    width = 2 * P if bidirectional else P
    if c_tilde.ndim != 2 or c_tilde.shape[1] != width:
        raise ValueError(f"c_tilde must have shape (H, {width}) for P={P}"
                         f"{' (bidirectional: 2P)' if bidirectional else ''}; got {c_tilde.shape}")
    x, x_last = scans.linear_scan(lambda_bar, bu, h0, method=method)
    if bidirectional:
        a_rev = lambda_bar if lambda_bar_reverse is None else lambda_bar_reverse
        b_rev = bu if bu_reverse is None else bu_reverse
        x_rev, _ = scans.linear_scan(a_rev, b_rev, reverse=True, method=method)
        x = jnp.concatenate([x, x_rev], axis=-1)
    return read_out(c_tilde, x, conj_sym, out_dtype), x_last


def apply_ssm(lambda_bar: Complex[Array, "P"], b_bar: Complex[Array, "P H"], c_tilde: Complex[Array, "H P_out"],
              u: Float[Array, "B L H"], *, conj_sym: bool, bidirectional: bool = False,
              h0: Complex[Array, "B P"] | None = None, method: str = "auto",
              ) -> tuple[Float[Array, "B L H"], Complex[Array, "B P"]]:
    """The discrete S5 SSM on a batch: lindermanlab/S5's ``apply_ssm``, batch-first.

    ``y_k = 2·Re(C̃ x_k)`` (``conj_sym``) or ``Re(C̃ x_k)``, ``x_k = Λ̄ ⊙ x_{k-1} + B̄ u_k``,
    ``x_{-1} = h0`` (zeros); bidirectional adds the reversed scan (see :func:`scan_ssm`).
    No ``D`` term. Returns ``(y (B, L, H), x_last (B, P))``.
    """
    if lambda_bar.ndim != 1 or b_bar.ndim != 2 or b_bar.shape[0] != lambda_bar.shape[0]:
        raise ValueError(f"need lambda_bar (P,) and b_bar (P, H); got {lambda_bar.shape} and {b_bar.shape}")
    if u.ndim != 3 or u.shape[-1] != b_bar.shape[1]:
        raise ValueError(f"u must have shape (batch, length, H={b_bar.shape[1]}); got {u.shape}")
    return scan_ssm(lambda_bar, project_inputs(b_bar, u), c_tilde, conj_sym=conj_sym,
                    bidirectional=bidirectional, h0=h0, method=method, out_dtype=u.dtype)


# ----------------------------------------------------------------------------------------
# Λ and Δ: the diagonal state matrix shared by S5 and ConvS5
# ----------------------------------------------------------------------------------------


class DiagonalStateMatrix(nnx.Module):
    """``Λ`` (HiPPO-N init) and the per-state steps ``Δ`` of S5/ConvS5, as real SSMParams.

    ``Lambda_re``, ``Lambda_im``, ``log_step``: ``(P,)`` with ``P`` the number of stored
    complex modes (half the state size under ``conj_sym``).
    """

    def __init__(self, Lambda: np.ndarray, *, clip_eigs: bool, discretization: str,
                 dt_min: float, dt_max: float, step_rescale: float, param_dtype, rngs: nnx.Rngs):
        if discretization not in DIAG_METHODS:
            raise ValueError(f"discretization must be one of {DIAG_METHODS}; got {discretization!r}")
        self.clip_eigs, self.discretization, self.step_rescale = clip_eigs, discretization, float(step_rescale)
        self.Lambda_re = SSMParam(jnp.asarray(Lambda.real, param_dtype))
        self.Lambda_im = SSMParam(jnp.asarray(Lambda.imag, param_dtype))
        self.log_step = SSMParam(ssm.log_uniform_log_dt(rngs.params(), Lambda.shape, dt_min, dt_max, param_dtype))

    def eigenvalues(self) -> jax.Array:
        """Continuous ``Λ`` (P,) complex; ``Re Λ`` clipped to ``≤ -1e-4`` with ``clip_eigs``."""
        re = self.Lambda_re[...]
        if self.clip_eigs:
            re = jnp.minimum(re, EIG_CLIP)
        return jax.lax.complex(re, self.Lambda_im[...])

    def steps(self) -> jax.Array:
        """``Δ = step_rescale · exp(log Δ)``, (P,)."""
        return self.step_rescale * jnp.exp(self.log_step[...])

    def discretize(self, b_tilde: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(Λ̄ (P,), B̄)`` for a ``B̃`` whose leading axis is the state axis ``P``."""
        return ssm.discretize_diag(self.eigenvalues(), b_tilde, self.steps(), method=self.discretization)


def complex_param(p: nnx.Param) -> jax.Array:
    """A complex array stored as a real parameter with (real, imag) on its last axis."""
    v = p[...]
    return jax.lax.complex(v[..., 0], v[..., 1])


def as_real_pair(z) -> jax.Array:
    return jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1)


def truncated_normal(key, shape, std):
    """float32 normal(0, std²) truncated to ±2σ, rescaled to keep the variance (lecun_normal's)."""
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32) * (std / 0.87962566103423978)


# ----------------------------------------------------------------------------------------
# The mixer
# ----------------------------------------------------------------------------------------


@register("s5", example_options={"state_size": 16, "blocks": 2})
class S5(Mixer):
    """S5 mixer: ``activation(SSM(x) + D ⊙ x)`` on ``(batch, length, d_model)``.

    Args:
      d_model: ``H``, input and output channels.
      state_size: ``P`` of the real system (the paper's ``ssm_size``); with ``conj_sym``
        ``P/2`` complex modes are stored and scanned.
      blocks: ``J`` block-diagonal copies of the HiPPO-N init (``P/J`` each, even with
        ``conj_sym``).
      conj_sym: conjugate symmetry (half spectrum, output ``2·Re``).
      clip_eigs: clamp ``Re Λ ≤ -1e-4`` (stable for any length).
      discretization: ``"zoh"`` or ``"bilinear"``.
      dt_min, dt_max: range of the log-uniform initial ``Δ``.
      step_rescale: multiplies every ``Δ`` (a test-time change of sampling rate).
      activation: after the SSM, as in the S5 block: ``"gelu"``; ``"half_glu1"``
        (``g·σ(W g)``, ``g = gelu(y)``; S5's run-script default), ``"half_glu2"``
        (``y·σ(W gelu(y))``), ``"full_glu"`` (``W₁g·σ(W₂g)``), or ``"none"``.
      method: ``scans.linear_scan`` method.
      param_dtype: dtype of the (real) parameters; the state is its complex counterpart.

    State (``init_state``): ``(batch, P_stored)`` complex64 (for float32 parameters).
    """

    option_choices = {"discretization": DIAG_METHODS, "activation": ACTIVATIONS, "method": scans.METHODS}
    option_ranges = {"dt_min": POSITIVE, "dt_max": POSITIVE, "step_rescale": POSITIVE}

    causal = True
    bidirectional: ClassVar[bool] = False

    def __init__(self, d_model: int, *, state_size: int = 256, blocks: int = 8, conj_sym: bool = True,
                 clip_eigs: bool = False, discretization: str = "zoh", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, step_rescale: float = 1.0, activation: str = "gelu",
                 method: str = "auto", param_dtype=jnp.float32, rngs: nnx.Rngs):
        hippo = ssm.s5_hippo_n(state_size, blocks, conj_sym)
        self.d_model, self.state_size, self.conj_sym = d_model, state_size, conj_sym
        self.activation, self.method, self.param_dtype = activation, method, param_dtype
        self.num_modes = hippo.Lambda.shape[0]
        self.A = DiagonalStateMatrix(hippo.Lambda, clip_eigs=clip_eigs, discretization=discretization,
                                     dt_min=dt_min, dt_max=dt_max, step_rescale=step_rescale,
                                     param_dtype=param_dtype, rngs=rngs)
        H, P = d_model, state_size  # P: size of the real system the init samples B, C in
        b = np.asarray(truncated_normal(rngs.params(), (P, H), 1.0 / np.sqrt(P)), np.float64)
        self.B = SSMParam(jnp.asarray(as_real_pair(hippo.Vinv @ b), param_dtype))
        c = [self._init_c(rngs, hippo.V, H, P) for _ in range(2 if self.bidirectional else 1)]
        self.C = nnx.Param(jnp.asarray(np.concatenate(c, axis=1), param_dtype))
        self.D = nnx.Param(jax.random.normal(rngs.params(), (H,), param_dtype))
        if activation in ("half_glu1", "half_glu2", "full_glu"):
            self.gate = Dense(H, H, rngs=rngs)
        if activation == "full_glu":
            self.gate_value = Dense(H, H, rngs=rngs)

    @staticmethod
    def _init_c(rngs, V, H, P):
        """``C̃ = C V`` with ``C`` complex, real and imaginary parts truncated-normal, variance ``1/P``."""
        c = np.asarray(truncated_normal(rngs.params(), (H, P, 2), 1.0 / np.sqrt(P)), np.float64)
        return as_real_pair((c[..., 0] + 1j * c[..., 1]) @ V)

    # -- parameters -> discrete system ---------------------------------------------------

    def discretized(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(Λ̄ (P,), B̄ (P, H), C̃ (H, P or 2P))`` at the learned steps."""
        lambda_bar, b_bar = self.A.discretize(complex_param(self.B))
        return lambda_bar, b_bar, complex_param(self.C)

    def _output(self, y, u):
        y = y.astype(u.dtype) + expand_to(self.D[...].astype(u.dtype), u.ndim) * u
        if self.activation == "none":
            return y
        g = jax.nn.gelu(y)
        if self.activation == "gelu":
            return g
        if self.activation == "half_glu1":
            return g * jax.nn.sigmoid(self.gate(g))
        if self.activation == "half_glu2":
            return y * jax.nn.sigmoid(self.gate(g))
        return self.gate_value(g) * jax.nn.sigmoid(self.gate(g))

    # -- Mixer protocol -------------------------------------------------------------------

    def forward(self, x):
        lambda_bar, b_bar, c_tilde = self.discretized()
        y, _ = apply_ssm(lambda_bar, b_bar, c_tilde, x, conj_sym=self.conj_sym,
                         bidirectional=self.bidirectional, method=self.method)
        return self._output(y, x)

    def init_state(self, batch_size: int) -> jax.Array:
        if not self.causal:
            return super().init_state(batch_size)
        return jnp.zeros((batch_size, self.num_modes), jnp.promote_types(self.param_dtype, jnp.complex64))

    def forward_step(self, x_t, state):
        lambda_bar, b_bar, c_tilde = self.discretized()
        y, state = apply_ssm(lambda_bar, b_bar, c_tilde, x_t[:, None], conj_sym=self.conj_sym,
                             h0=state, method="sequential")
        return self._output(y[:, 0], x_t), state

    # -- irregular sampling ---------------------------------------------------------------

    def _irregular(self, x, dt, h0, method):
        """Per-token discretization: ``Δ_{k,p} = dt_k · Δ_p`` (dt: (B, L) > 0)."""
        if dt.shape != x.shape[:2]:
            raise ValueError(f"dt must have shape (batch, length) = {x.shape[:2]}; got {dt.shape}")
        Lambda, step = self.A.eigenvalues(), self.A.steps()
        bu = project_inputs(complex_param(self.B), x)                       # B̃ u_k, (B, L, P)
        shape = bu.shape

        def discretize(scale):  # (B, L) -> Λ̄_k (B, L, P), B̄_k u_k (B, L, P)
            steps = scale.astype(step.dtype)[..., None] * expand_to(step, 3)
            return ssm.discretize_diag(jnp.broadcast_to(Lambda, shape), bu, steps, method=self.A.discretization)

        lambda_bar, b_bar_u = discretize(dt)
        rev = {}
        if self.bidirectional:  # x'_k = Λ̄(dt_{k+1}) x'_{k+1} + B̄(dt_{k+1}) u_k, dt_L := dt_{L-1}
            dt_next = jnp.concatenate([dt[:, 1:], dt[:, -1:]], axis=1)
            rev = dict(zip(("lambda_bar_reverse", "bu_reverse"), discretize(dt_next)))
        y, h_last = scan_ssm(lambda_bar, b_bar_u, complex_param(self.C), conj_sym=self.conj_sym,
                             bidirectional=self.bidirectional, h0=h0, method=method, out_dtype=x.dtype, **rev)
        return self._output(y, x), h_last

    def apply_with_timesteps(self, x: jax.Array, dt: jax.Array) -> jax.Array:
        """Forward pass for irregularly sampled inputs (variable observation intervals).

        ``dt`` (batch, length), positive: the time elapsed between observation ``k-1`` and
        ``k`` (``dt[:, 0]``: since the initial state) in units of the learned step, so
        that token ``k`` is discretized with ``Δ_k = dt_k · step_rescale · exp(log Δ)``.
        ``dt ≡ 1`` gives ``self(x)``; ``dt ≡ c`` gives ``self(x)`` with
        ``step_rescale`` multiplied by ``c``. The bidirectional scan discretizes the
        step from ``k+1`` back to ``k`` with ``dt_{k+1}``, and its first step (into the
        last token) with ``dt_{L-1}`` (the S5 code uses 1 there, which breaks the
        ``dt ≡ c`` equivalence).
        """
        self._check_inputs(x, dt, per_step=False)
        return self._irregular(x, dt, None, self.method)[0].astype(x.dtype)

    def step_with_timestep(self, x_t: jax.Array, dt_t: jax.Array, state: jax.Array):
        """``step`` for irregular sampling: ``dt_t`` (batch,) as in :meth:`apply_with_timesteps`."""
        if not self.causal:
            raise NotImplementedError(f"{type(self).__name__} is not causal and has no recurrent step")
        self._check_inputs(x_t[:, None], dt_t[:, None], per_step=True)
        y, state = self._irregular(x_t[:, None], dt_t[:, None], state, "sequential")
        return y[:, 0].astype(x_t.dtype), state

    def _check_inputs(self, x, dt, per_step):
        name = "x_t" if per_step else "x"
        layout = "(batch, d_model)" if per_step else "(batch, length, d_model)"
        if x.ndim != 3 or x.shape[-1] != self.d_model or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating with shape {layout}, d_model={self.d_model}; "
                             f"got {x.dtype} with shape {x[:, 0].shape if per_step else x.shape}")
        if not jnp.issubdtype(dt.dtype, jnp.floating):
            raise ValueError(f"dt must have a floating dtype; got {dt.dtype}")


@register("s5_bidirectional", example_options={"state_size": 16, "blocks": 2})
class S5Bidirectional(S5):
    """Bidirectional S5: forward and reversed scans over the same ``(Λ̄, B̄u)``,
    read out by ``C̃ = [C̃₁ C̃₂]`` (H, 2P). Not causal: no ``step``."""

    causal = False
    bidirectional = True
