"""ConvS5: "Convolutional State Space Models for Long-Range Spatiotemporal Modeling"
(Smith, De Mello, Kautz, Linderman, Byeon, NeurIPS 2023).

A convolutional SSM (ConvSSM) keeps a state *image* ``X ∈ R^{H×W×P}`` and
replaces the matrix products of a linear SSM by 2-D convolutions:
``X' = 𝒜 ∗ X + ℬ ∗ U``, ``Y = 𝒞 ∗ X + 𝒟 ∗ U``. With a pointwise (1×1) state kernel
``𝒜`` it is a block-diagonal SSM (one shared ``P×P`` block per pixel), so diagonalizing
that block imports S5's parametrization and HiPPO-N initialization. Discrete ConvS5,
per frame ``k`` (``∗`` is a 'SAME' cross-correlation over H, W):

    X_k = Λ̄ ⊙ X_{k-1} + B̄ ∗ U_k          Λ̄ ∈ C^P broadcast over space
    Y_k = act(2·Re(C̃ ∗ X_k) + D ∗ U_k)

* ``Λ``: HiPPO-N (``ssm.s5_hippo_n``, ``P/2`` conjugate modes), one ``Δ_p`` per state
  channel, zero-order hold ``Λ̄ = e^{ΛΔ}`` and ``B̄ = B̃ ⊙ (Λ̄-1)/Λ`` per output channel
  ``p`` (or bilinear), exactly S5's rules (shared ``s5.DiagonalStateMatrix``).
* ``B̃``: a complex ``k_B×k_B`` kernel ``U → P``; ``C̃``: a complex ``k_C×k_C`` kernel
  ``P → U``; ``D``: a real ``k_D×k_D`` kernel ``U → U``. Init: real ``B``
  he-normal (fan-in ``U·k_B²``), ``B̃ = V⁻¹B``; complex ``C`` with real and imaginary
  parts of variance ``1/(P·k_C²)``, ``C̃ = CV``; ``D`` lecun-normal.
* Because ``Λ̄`` is pointwise, the recurrence over time is ``scans.linear_scan`` with a
  ``(P,)`` decay broadcast over ``(batch, H, W)`` -- parallel over frames; the
  ``step`` form feeds one frame. Both are :func:`apply_convssm`.
* Output paths (``output_path``; the official code's ``C_D_config``): ``"plain"``
  ``act(Y + 𝒟∗U)`` (norms and residuals left to the backbone, ``models.VideoModel``);
  ``"standard"`` ``act(GroupNorm(Y + 𝒟∗U))``; ``"resnet"`` (the Moving-MNIST models)
  a ResNet block on ``Y`` alone, ``act(Y + conv(act(GN(conv(act(GN(Y)))))))`` with two
  biased ``k_D×k_D`` convolutions and no ``𝒟∗U`` term. GroupNorm statistics are per
  frame (over H, W and the channels of a group), so every path stays causal.

Complex convolutions run as real ones: ``B̄ ∗ U`` is one convolution with the kernel
``[Re B̄, Im B̄]`` (``2P`` outputs), ``2·Re(C̃ ∗ X)`` one with ``[Re C̃; -Im C̃]`` on
``[Re X, Im X]``. Parameters are real: ``A.Lambda_re``, ``A.Lambda_im``, ``A.log_step``
(P,) and ``B`` (k_B, k_B, U, P, 2) (HWIO, (real, imag) last) are ``SSMParam`` (own
learning rate, no weight decay); ``C`` (k_C, k_C, P, U, 2) and ``D`` are ``nnx.Param``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Complex, Float, Inexact

from .. import scans, ssm
from .base import Mixer, register
from .options import POSITIVE
from .common import SSMParam
from .s5 import DiagonalStateMatrix, as_real_pair, complex_param, truncated_normal

ACTIVATIONS = ("gelu", "none")
OUTPUT_PATHS = ("plain", "standard", "resnet")


def activate(name: str, y):
    """The nonlinearity ``name`` (one of ``ACTIVATIONS``) applied to ``y``."""
    return jax.nn.gelu(y) if name == "gelu" else y


# ----------------------------------------------------------------------------------------
# The ConvSSM as pure functions (checked against NVlabs/ConvSSM's apply_convSSM_*)
# ----------------------------------------------------------------------------------------


def _accumulation_dtypes(*arrays):
    dtype = jnp.promote_types(jnp.result_type(*arrays), jnp.complex64)
    return dtype, jnp.finfo(dtype).dtype


def conv_frames(x: Float[Array, "*batch H W Cin"], kernel: Float[Array, "kh kw Cin Cout"], dtype=None,
                accumulate=None) -> Float[Array, "*batch H W Cout"]:
    """'SAME' 2-D cross-correlation (NHWC, HWIO, stride 1) over any leading batch axes,
    computed in ``dtype`` (default ``x``'s) and accumulated in ``accumulate``."""
    dtype = x.dtype if dtype is None else dtype
    lead = x.shape[:-3]
    flat = x.reshape((-1,) + x.shape[-3:]).astype(dtype)
    y = jax.lax.conv_general_dilated(flat, kernel.astype(dtype), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     preferred_element_type=accumulate)
    return y.reshape(lead + y.shape[1:])


def conv_inputs(b: Inexact[Array, "kh kw U P"], u: Float[Array, "*batch H W U"]) -> Complex[Array, "*batch H W P"]:
    """``B ∗ u`` for a complex kernel and a real input: one real convolution in ``u``'s
    dtype against ``[Re B, Im B]``, accumulated in float32 (or wider)."""
    cdtype, rdtype = _accumulation_dtypes(b, u)
    w = jnp.concatenate([jnp.real(b), jnp.imag(b)], axis=-1)
    bu = conv_frames(u, w, u.dtype, jnp.promote_types(u.dtype, rdtype)).astype(rdtype)
    re, im = jnp.split(bu, 2, axis=-1)
    return jax.lax.complex(re, im).astype(cdtype)


def conv_read_out(c: Inexact[Array, "kh kw P U"], x: Complex[Array, "*batch H W P"], conj_sym: bool,
                  dtype=None) -> Float[Array, "*batch H W U"]:
    """``2·Re(C ∗ x)`` (``conj_sym``) or ``Re(C ∗ x)``: one real convolution of
    ``[Re x, Im x]`` against ``[Re C; -Im C]`` in ``dtype`` (default: the state's real
    dtype), accumulated in float32 (or wider)."""
    rdtype = jnp.finfo(x.dtype).dtype
    dtype = rdtype if dtype is None else dtype
    xs = jnp.concatenate([jnp.real(x), jnp.imag(x)], axis=-1)
    w = jnp.concatenate([jnp.real(c), -jnp.imag(c)], axis=-2)
    y = conv_frames(xs, w, dtype, jnp.promote_types(dtype, rdtype))
    return 2.0 * y if conj_sym else y


def apply_convssm(lambda_bar: Complex[Array, "P"], b_bar: Complex[Array, "kh kw U P"],
                  c_tilde: Complex[Array, "kh2 kw2 P U"], u: Float[Array, "B T H W U"], *,
                  conj_sym: bool = True, h0: Complex[Array, "B H W P"] | None = None,
                  method: str = "auto") -> tuple[Float[Array, "B T H W U"], Complex[Array, "B H W P"]]:
    """The discrete ConvS5 SSM on a batch of videos (batch-first; no ``D`` term).

    ``X_k = Λ̄ ⊙ X_{k-1} + B̄ ∗ U_k`` with ``X_{-1} = h0`` (zeros if None), and
    ``Y_k = 2·Re(C̃ ∗ X_k)`` (``conj_sym``) or ``Re(C̃ ∗ X_k)``. Kernels are HWIO.
    Returns ``(Y (B, T, H, W, U), X_last (B, H, W, P))``.
    """
    if lambda_bar.ndim != 1:
        raise ValueError(f"lambda_bar must have shape (P,); got {lambda_bar.shape}")
    P = lambda_bar.shape[0]
    if u.ndim != 5:
        raise ValueError(f"u must have shape (batch, T, H, W, U); got {u.shape}")
    U = u.shape[-1]
    if b_bar.ndim != 4 or b_bar.shape[2:] != (U, P):
        raise ValueError(f"b_bar must have shape (k, k, U={U}, P={P}) (HWIO); got {b_bar.shape}")
    if c_tilde.ndim != 4 or c_tilde.shape[2:] != (P, U):
        raise ValueError(f"c_tilde must have shape (k, k, P={P}, U={U}) (HWIO); got {c_tilde.shape}")
    x, x_last = scans.linear_scan(lambda_bar, conv_inputs(b_bar, u), h0, method=method)
    return conv_read_out(c_tilde, x, conj_sym, u.dtype), x_last


# ----------------------------------------------------------------------------------------
# The mixer
# ----------------------------------------------------------------------------------------


class FrameGroupNorm(nnx.Module):
    """GroupNorm of each frame ``(..., H, W, C)``: statistics over H, W and a group's channels.

    (The leading axes are merged into one batch axis first: ``nnx.GroupNorm`` with explicit
    ``reduction_axes`` broadcasts its statistics back along axis 1, wrong for (B, T, H, W, C).)
    """

    def __init__(self, channels: int, groups: int, *, param_dtype, rngs: nnx.Rngs):
        self.norm = nnx.GroupNorm(channels, groups, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        return self.norm(x.reshape((-1,) + x.shape[-3:])).reshape(x.shape)


class ResNetOutput(nnx.Module):
    """ConvS5's "resnet" output path on ``y (..., H, W, C)``:
    ``act(y + conv₂(act(GN₂(conv₁(act(GN₁(y)))))))``, biased 'SAME' ``k×k`` convolutions."""

    def __init__(self, channels: int, kernel: int, groups: int, activation: str, *, param_dtype,
                 rngs: nnx.Rngs):
        self.activation = activation
        self.norm1 = FrameGroupNorm(channels, groups, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = nnx.Conv(channels, channels, (kernel, kernel), param_dtype=param_dtype, rngs=rngs)
        self.norm2 = FrameGroupNorm(channels, groups, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, (kernel, kernel), param_dtype=param_dtype, rngs=rngs)

    def __call__(self, y):
        h = self.conv1(activate(self.activation, self.norm1(y)))
        h = self.conv2(activate(self.activation, self.norm2(h)))
        return activate(self.activation, y + h.astype(y.dtype))


@register("convs5", example_options={"state_size": 8})
class ConvS5(Mixer):
    """ConvS5 mixer on videos ``(batch, T, H, W, d_model)``; ``step`` takes one frame.

    Args:
      d_model: ``U``, input and output channels.
      state_size: ``P`` of the real system per pixel (the paper's ``ssm_size``); with
        ``conj_sym`` ``P/2`` complex state channels are stored.
      blocks: block-diagonal copies of the HiPPO-N init.
      conj_sym, clip_eigs, discretization, dt_min, dt_max, step_rescale: as in S5
        (``clip_eigs`` defaults to True, as in the paper's long-rollout configs).
      timescale: multiplies ``dt_min`` and ``dt_max`` at initialization: ``log Δ`` is drawn
        uniformly in ``[log(timescale·dt_min), log(timescale·dt_max)]``. The default
        range ``[1e-3, 1e-1]`` is the paper's for training on 300-frame clips; for clips of
        ``T`` frames use ``timescale = 300 / T`` (16 frames: 18.75, ``Δ ∈ [0.019, 1.9]``),
        so that the slowest and fastest modes span the same fraction of a training clip
        (with ``Re Λ = -1/2``, a mode decays by ``e^{-Δ·T/2}`` over a clip). With the
        paper's range on short clips no mode reaches steady state inside a clip and
        rollouts past the training length drift (issue 16). ``step_rescale`` instead
        rescales the learned ``Δ`` at run time (a change of frame rate).
      kernel_b, kernel_c: sizes of the ``B̃`` and ``C̃`` kernels (paper: 3).
      kernel_d: size of the ``D`` kernel (paper: 3); None drops the ``D`` term. With
        ``output_path="resnet"`` the size of the ResNet block's convolutions (required).
      activation: ``"gelu"`` or ``"none"`` (the output path's nonlinearity).
      output_path: ``"plain"`` (default), ``"standard"`` or ``"resnet"`` (module docstring).
      groups: GroupNorm groups of the ``"standard"`` and ``"resnet"`` paths (paper: 32);
        must divide ``d_model``.
      method: ``scans.linear_scan`` method; param_dtype: dtype of the real parameters.

    State: ``(batch, H, W, P_stored)`` complex64; ``init_state(batch)`` returns a
    ``(batch, 1, 1, P_stored)`` zero state that broadcasts over any frame size (pass
    ``spatial_shape=(H, W)`` for a state of fixed shape, e.g. as a ``lax.scan`` carry).
    """

    option_choices = {"discretization": ssm.discretize.DIAG_METHODS, "activation": ACTIVATIONS,
                      "output_path": OUTPUT_PATHS, "method": scans.METHODS}
    option_ranges = {"dt_min": POSITIVE, "dt_max": POSITIVE, "timescale": POSITIVE, "step_rescale": POSITIVE}

    causal = True
    spatial_ndim = 2
    temporal = True

    def __init__(self, d_model: int, *, state_size: int = 256, blocks: int = 1, conj_sym: bool = True,
                 clip_eigs: bool = True, discretization: str = "zoh", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, timescale: float = 1.0, step_rescale: float = 1.0, kernel_b: int = 3,
                 kernel_c: int = 3, kernel_d: int | None = 3, activation: str = "gelu",
                 output_path: str = "plain",
                 groups: int = 32, method: str = "auto", param_dtype=jnp.float32, rngs: nnx.Rngs):
        if output_path == "resnet" and kernel_d is None:
            raise ValueError("ConvS5 option kernel_d must be an int with output_path='resnet' (the size of its "
                             "convolutions); got None")
        if output_path != "plain" and d_model % groups:
            raise ValueError(f"ConvS5 option groups={groups} must divide d_model={d_model} (output_path={output_path!r})")
        hippo = ssm.s5_hippo_n(state_size, blocks, conj_sym)
        self.d_model, self.state_size, self.conj_sym = d_model, state_size, conj_sym
        self.activation, self.method, self.param_dtype = activation, method, param_dtype
        self.num_modes = hippo.Lambda.shape[0]
        self.A = DiagonalStateMatrix(hippo.Lambda, clip_eigs=clip_eigs, discretization=discretization,
                                     dt_min=timescale * dt_min, dt_max=timescale * dt_max,
                                     step_rescale=step_rescale,
                                     param_dtype=param_dtype, rngs=rngs)
        U, P = d_model, state_size
        b = truncated_normal(rngs.params(), (kernel_b, kernel_b, U, P), np.sqrt(2.0 / (U * kernel_b**2)))
        b_tilde = np.einsum("hwup,qp->hwuq", np.asarray(b, np.float64), hippo.Vinv)
        self.B = SSMParam(jnp.asarray(as_real_pair(b_tilde), param_dtype))
        c = truncated_normal(rngs.params(), (kernel_c, kernel_c, P, U, 2), np.sqrt(1.0 / (P * kernel_c**2)))
        c = np.asarray(c, np.float64)
        c_tilde = np.einsum("hwpu,pq->hwqu", c[..., 0] + 1j * c[..., 1], hippo.V)
        self.C = nnx.Param(jnp.asarray(as_real_pair(c_tilde), param_dtype))
        self.D = None if kernel_d is None or output_path == "resnet" else nnx.Param(truncated_normal(
            rngs.params(), (kernel_d, kernel_d, U, U), np.sqrt(1.0 / (U * kernel_d**2))).astype(param_dtype))
        self.output_norm = (FrameGroupNorm(U, groups, param_dtype=param_dtype, rngs=rngs)
                            if output_path == "standard" else None)
        self.resnet = (ResNetOutput(U, kernel_d, groups, activation, param_dtype=param_dtype, rngs=rngs)
                       if output_path == "resnet" else None)

    def discretized(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(Λ̄ (P,), B̄ (k_B, k_B, U, P), C̃ (k_C, k_C, P, U))`` at the learned steps."""
        lambda_bar, b_bar = self.A.discretize(jnp.moveaxis(complex_param(self.B), -1, 0))
        return lambda_bar, jnp.moveaxis(b_bar, 0, -1), complex_param(self.C)

    def _output(self, y, u):
        y = y.astype(u.dtype)
        if self.resnet is not None:
            return self.resnet(y).astype(u.dtype)
        if self.D is not None:
            y = y + conv_frames(u, self.D[...], u.dtype, jnp.promote_types(u.dtype, jnp.float32)).astype(u.dtype)
        if self.output_norm is not None:
            y = self.output_norm(y).astype(u.dtype)
        return activate(self.activation, y)

    def forward(self, x):
        lambda_bar, b_bar, c_tilde = self.discretized()
        y, _ = apply_convssm(lambda_bar, b_bar, c_tilde, x, conj_sym=self.conj_sym, method=self.method)
        return self._output(y, x)

    def init_state(self, batch_size: int, spatial_shape: Sequence[int] | None = None) -> jax.Array:
        """Zero state ``(batch, H, W, P)``, or ``(batch, 1, 1, P)`` without ``spatial_shape``."""
        grid = (1, 1) if spatial_shape is None else tuple(spatial_shape)
        return jnp.zeros((batch_size,) + grid + (self.num_modes,), jnp.promote_types(self.param_dtype, jnp.complex64))

    def forward_step(self, x_t, state):
        lambda_bar, b_bar, c_tilde = self.discretized()
        shape = x_t.shape[:-1] + (self.num_modes,)
        try:
            ok = state.ndim == 4 and np.broadcast_shapes(state.shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"state must broadcast to (batch, H, W, P) = {shape}; got {state.shape}")
        y, state = apply_convssm(lambda_bar, b_bar, c_tilde, x_t[:, None], conj_sym=self.conj_sym,
                                 h0=jnp.broadcast_to(state, shape), method="sequential")
        return self._output(y[:, 0], x_t), state
