"""ConvLSTM: "Convolutional LSTM Network: A Machine Learning Approach for Precipitation
Nowcasting" (Shi, Chen, Wang, Yeung, Wong, Woo, NeurIPS 2015) -- a **baseline** video
mixer, the recurrent model ConvS5 is compared with ("Convolutional State Space Models for
Long-Range Spatiotemporal Modeling", Smith et al., NeurIPS 2023, §5).

An LSTM whose matrix products are 2-D convolutions, so that its state is an image
``(H, W, d)``. Per frame ``t`` (eq. 3 of the paper; ``∗`` a 'SAME' cross-correlation
over H, W, ``∘`` the elementwise product):

    i_t = σ(W_xi ∗ X_t + W_hi ∗ H_{t-1} + w_ci ∘ C_{t-1} + b_i)
    f_t = σ(W_xf ∗ X_t + W_hf ∗ H_{t-1} + w_cf ∘ C_{t-1} + b_f)
    C_t = f_t ∘ C_{t-1} + i_t ∘ tanh(W_xc ∗ X_t + W_hc ∗ H_{t-1} + b_c)
    o_t = σ(W_xo ∗ X_t + W_ho ∗ H_{t-1} + w_co ∘ C_t + b_o)
    H_t = o_t ∘ tanh(C_t)                                   (the output of frame t)

The hidden width is ``d_model`` (the output is ``H_t``). The peephole weights
``w_c·`` are one per channel (the paper's are per pixel too, which ties the layer to
one frame size); ``peephole=False`` drops them. ``b_f`` starts at ``forget_bias``
(1.0, the usual LSTM practice), the other biases at 0, the peepholes at 0, the kernels
lecun-normal.

**Not a scan-core mixer.** The recurrence is nonlinear in ``(H, C)``, so it has no
associative form: it runs through ``scans.nonlinear_scan`` (one sequential scan over
frames), the only core recurrence without a parallel method. The input convolutions
``W_x· ∗ X_t`` of all frames are computed at once before the scan; only the hidden
convolutions are sequential (and, for the same reason, the layer cannot split its frames
across devices: ``supports_sequence_parallel = False``). ``step`` is one iteration of
the same cell. Convolutions of the input run in its dtype with float32 accumulation;
the state and the recurrence are float32.

Parameters (``nnx.Param``): ``W_x (k, k, d, 4d)`` and ``W_h (k, k, d, 4d)`` (HWIO,
gates in the order i, f, c, o), ``b (4d,)``, ``w_c (3, d)`` (i, f, o) if ``peephole``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from .. import scans
from .base import Mixer, register
from .common import check_positive_int, expand_to
from .convs5 import conv_frames


class ConvLSTMState(NamedTuple):
    """``h`` and ``c``, each ``(batch, H, W, d)`` float32 (or ``(batch, 1, 1, d)``,
    broadcast over the frame on the first step)."""

    h: jax.Array
    c: jax.Array


@register("convlstm", example_options={"kernel_size": 3})
class ConvLSTM(Mixer):
    """ConvLSTM mixer on videos ``(batch, T, H, W, d_model)``; ``step`` takes one frame.

    Options:
      kernel_size: ``k`` of the input-to-state and state-to-state kernels (odd; paper: 3-5).
      peephole: per-channel peephole terms ``w_c· ∘ C`` (default True, as in the paper).
      forget_bias: initial ``b_f``.
    """

    causal = True
    spatial_ndim = 2
    temporal = True
    # a nonlinear recurrence over frames (scans.nonlinear_scan): it cannot be split over devices
    supports_sequence_parallel = False

    def __init__(self, d_model: int, *, kernel_size: int = 3, peephole: bool = True, forget_bias: float = 1.0,
                 rngs: nnx.Rngs):
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('SAME' padding centres the kernel); got {kernel_size}")
        self.d_model, self.kernel_size, self.peephole = d_model, kernel_size, peephole
        shape = (kernel_size, kernel_size, d_model, 4 * d_model)
        init = nnx.initializers.lecun_normal()  # HWIO: fan-in k·k·d
        self.W_x = nnx.Param(init(rngs.params(), shape, jnp.float32))
        self.W_h = nnx.Param(init(rngs.params(), shape, jnp.float32))
        bias = np.zeros((4, d_model), np.float32)
        bias[1] = forget_bias
        self.b = nnx.Param(jnp.asarray(bias.reshape(-1)))
        self.w_c = nnx.Param(jnp.zeros((3, d_model), jnp.float32)) if peephole else None

    def input_terms(self, x: Float[Array, "*batch H W d"]) -> Float[Array, "*batch H W 4d"]:
        """``W_x ∗ X + b`` for every frame at once (float32)."""
        z = conv_frames(x, self.W_x[...], x.dtype, jnp.promote_types(x.dtype, jnp.float32))
        return z.astype(jnp.float32) + expand_to(self.b[...], z.ndim)

    def cell(self, z_x: Float[Array, "B H W 4d"], state: ConvLSTMState) -> ConvLSTMState:
        """One frame of eq. 3 from the input terms ``z_x = W_x ∗ X_t + b``: the new ``(H_t, C_t)``."""
        h, c = (jnp.broadcast_to(s, z_x.shape[:-1] + (self.d_model,)) for s in state)
        z = z_x + conv_frames(h, self.W_h[...], jnp.float32, jnp.float32)
        z_i, z_f, z_c, z_o = jnp.split(z, 4, axis=-1)
        if self.peephole:
            w_i, w_f, w_o = (expand_to(w, z.ndim) for w in self.w_c[...])
            z_i, z_f = z_i + w_i * c, z_f + w_f * c
        c = jax.nn.sigmoid(z_f) * c + jax.nn.sigmoid(z_i) * jnp.tanh(z_c)
        if self.peephole:
            z_o = z_o + w_o * c
        return ConvLSTMState(jax.nn.sigmoid(z_o) * jnp.tanh(c), c)

    def forward(self, x):
        z_x = self.input_terms(x)                                      # (B, T, H, W, 4d)
        zeros = jnp.zeros(z_x.shape[:1] + z_x.shape[2:-1] + (self.d_model,), jnp.float32)

        def frame(state, z_t):
            state = self.cell(z_t, state)
            return state, state.h

        hs, _ = scans.nonlinear_scan(frame, z_x, ConvLSTMState(zeros, zeros))
        return hs

    def init_state(self, batch_size: int, spatial_shape: Sequence[int] | None = None) -> ConvLSTMState:
        """Zero ``(h, c)``, each ``(batch, H, W, d)``, or ``(batch, 1, 1, d)`` without ``spatial_shape``."""
        grid = (1, 1) if spatial_shape is None else tuple(spatial_shape)
        zeros = jnp.zeros((batch_size,) + grid + (self.d_model,), jnp.float32)
        return ConvLSTMState(zeros, zeros)

    def forward_step(self, x_t, state):
        shape = x_t.shape[:-1] + (self.d_model,)
        for name, s in zip(ConvLSTMState._fields, state):
            try:
                ok = s.ndim == 4 and np.broadcast_shapes(s.shape, shape) == shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"state.{name} must broadcast to (batch, H, W, d) = {shape}; got {s.shape}")
        state = self.cell(self.input_terms(x_t), ConvLSTMState(*state))
        return state.h, state
