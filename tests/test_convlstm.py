"""ConvLSTM (the ConvS5 baseline): its gate equations against a NumPy transcription of
eq. 3 of Shi et al. (2015), options, and its use as the video backbone's mixer.

Step == parallel, prefix invariance, gradients and bfloat16 come from the conformance
suite (tests/test_mixer_conformance.py), which picks the registered mixer up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_close
from seqmodels.layers.convlstm import ConvLSTM
from seqmodels.models import VideoModel
from seqmodels.models.video import rollout


def conv_same(x, w):
    """'SAME' 2-D cross-correlation of ``x (B, H, W, I)`` with ``w (k, k, I, O)``, by loops."""
    k = w.shape[0]
    p = k // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    H, W = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (w.shape[-1],))
    for dy in range(k):
        for dx in range(k):
            out += padded[:, dy:dy + H, dx:dx + W] @ w[dy, dx]
    return out


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def reference_convlstm(x, W_x, W_h, b, w_c):
    """Eq. 3 of the paper frame by frame, gates (i, f, c, o), per-channel peepholes."""
    d = W_h.shape[2]
    h = np.zeros(x.shape[:1] + x.shape[2:4] + (d,))
    c = np.zeros_like(h)
    outs = []
    for t in range(x.shape[1]):
        z = conv_same(x[:, t], W_x) + conv_same(h, W_h) + b
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
        i = sigmoid(z_i + w_c[0] * c)
        f = sigmoid(z_f + w_c[1] * c)
        c = f * c + i * np.tanh(z_c)
        o = sigmoid(z_o + w_c[2] * c)
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1)


def test_gate_equations_match_the_paper():
    d, k = 3, 3
    m = ConvLSTM(d, kernel_size=k, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    # non-zero biases and peepholes, so every term of eq. 3 is exercised
    m.b[...] = jnp.asarray(rng.normal(size=4 * d), jnp.float32)
    m.w_c[...] = jnp.asarray(rng.normal(size=(3, d)), jnp.float32)
    x = rng.normal(size=(2, 4, 5, 6, d)).astype(np.float32)
    expected = reference_convlstm(x, np.asarray(m.W_x[...]), np.asarray(m.W_h[...]), np.asarray(m.b[...]),
                                  np.asarray(m.w_c[...]))
    assert_close(m(jnp.asarray(x)), expected, 1e-5, "parallel")
    # one step from a given state is one frame of the same equations
    state = m.init_state(2, (5, 6))
    for t in range(2):
        y_t, state = m.step(jnp.asarray(x[:, t]), state)
    assert_close(y_t, expected[:, 1], 1e-5, "step")
    assert state.h.shape == state.c.shape == (2, 5, 6, d)


def test_initialization_and_options():
    m = ConvLSTM(4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(m.b[...], np.r_[np.zeros(4), np.ones(4), np.zeros(8)])
    np.testing.assert_array_equal(m.w_c[...], np.zeros((3, 4)))
    assert m.W_x.shape == m.W_h.shape == (3, 3, 4, 16)
    plain = ConvLSTM(4, kernel_size=5, peephole=False, forget_bias=0.0, rngs=nnx.Rngs(0))
    assert plain.w_c is None and plain.W_h.shape == (5, 5, 4, 16)
    np.testing.assert_array_equal(plain.b[...], np.zeros(16))
    y = plain(jax.random.normal(jax.random.PRNGKey(0), (1, 3, 4, 4, 4)))
    assert y.shape == (1, 3, 4, 4, 4) and bool(jnp.all(jnp.abs(y) < 1))  # |o·tanh(c)| < 1
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvLSTM(4, kernel_size=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kernel_size must be a positive"):
        ConvLSTM(4, kernel_size=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"state.h must broadcast to \(batch, H, W, d\)"):
        m.step(jnp.zeros((2, 4, 4, 4)), m.init_state(2, (3, 3)))


def test_video_model_rollout_with_convlstm():
    model = VideoModel(in_channels=1, d_model=8, n_layers=1, n_down=1, mixer="convlstm", rngs=nnx.Rngs(0))
    frames = jax.random.uniform(jax.random.PRNGKey(1), (2, 5, 8, 8, 1))
    preds = model(frames)
    assert preds.shape == frames.shape
    generated = rollout(model, frames[:, :3], 2)
    assert generated.shape == (2, 2, 8, 8, 1)
    # the first generated frame is the parallel prediction after the context
    assert_close(generated[:, 0], preds[:, 2], 1e-4, "rollout vs parallel")
