"""``VideoModel``: a small next-frame predictor around a video mixer (ConvS5 by default).

    z = encoder(frames)                     per frame: 3×3 conv, then ``n_down`` stride-2
                                            convs to a grid 2^n_down times smaller
    z = z + mixer(norm(z))                  × n_layers (ConvS5 mixes over time and space)
    z = z + mlp(norm(z))                    per pixel
    out = bound(decoder(norm(z)))           per frame: ``n_down`` stride-2 transposed convs
                                            back to the frame size, then a 3×3 conv

``norm_position="post"`` gives the official ConvS5 layer's order instead,
``z = norm(z + mixer(z))``, ``z = norm(z + mlp(z))``, and decodes the last block's
output without a final norm (the official layer has no MLP; ours keeps one).
``output`` bounds the predictions: ``"linear"`` (none), ``"sigmoid"`` for frames in
[0, 1] (this library's video tasks), ``"tanh"`` for frames in [−1, 1] (the official
Moving-MNIST models, which map pixels to ``2·x − 1``; they train on the decoder's
logits and apply tanh when generating, we apply it in both). The model does not map
the data: with ``"tanh"`` the task must give frames in [−1, 1].

``out[:, t]`` predicts ``frames[:, t + 1]``. Everything but the mixer acts on each frame
alone (the norms are LayerNorms over channels), so the model is causal in time and runs
frame by frame: ``init_state``/``step`` give the parallel outputs exactly, and
:func:`rollout` conditions on context frames and then feeds its own predictions back.
The layout follows ConvS5's Moving-MNIST model ("Convolutional State Space Models for
Long-Range Spatiotemporal Modeling", Smith et al., NeurIPS 2023: a conv encoder to a
16×16 latent, ConvS5 layers, a mirrored decoder) at toy size.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from .. import layers
from .sequence import EMBED_BIAS_INIT, MLP, NORMS, _norm, per_layer_options

NORM_POSITIONS = ("pre", "post")
OUTPUTS = {"linear": lambda x: x, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}


class VideoBlock(nnx.Module):
    """On ``(batch, T, H, W, d)``: pre-norm ``z + mixer(norm(z))`` then ``z + mlp(norm(z))``,
    or post-norm ``norm(z + mixer(z))`` then ``norm(z + mlp(z))``."""

    def __init__(self, mixer: str, d_model: int, *, mixer_options: dict, mlp_ratio: int, norm: str,
                 norm_position: str = "pre", rngs: nnx.Rngs):
        self.post = norm_position == "post"
        self.mixer_norm = _norm(norm, d_model, rngs)
        self.mixer = layers.build(mixer, d_model, rngs=rngs, **mixer_options)
        self.mlp_norm = _norm(norm, d_model, rngs)
        self.mlp = MLP(d_model, mlp_ratio, rngs=rngs)

    def _mlp(self, z):
        if self.post:
            return self.mlp_norm(z + self.mlp(z)).astype(z.dtype)
        return z + self.mlp(self.mlp_norm(z))

    def _after_mixer(self, z, y):
        return self.mixer_norm(z + y).astype(z.dtype) if self.post else z + y

    def __call__(self, z):
        return self._mlp(self._after_mixer(z, self.mixer(z if self.post else self.mixer_norm(z))))

    def step(self, z_t, state):
        y_t, state = self.mixer.step(z_t if self.post else self.mixer_norm(z_t), state)
        return self._mlp(self._after_mixer(z_t, y_t)), state


class VideoModel(nnx.Module):
    """Conv encoder → ``n_layers`` video-mixer blocks → conv decoder, frame to frame.

    Args:
      in_channels: channels of the input frames ``(batch, T, H, W, in_channels)``.
      out_channels: channels of the predicted frames (default ``in_channels``).
      d_model: channels of the latent grid (the mixer's width).
      n_layers: number of mixer blocks.
      n_down: stride-2 stages; frames must have H and W divisible by ``2**n_down``.
      mixer: a registered video mixer (``temporal``, ``spatial_ndim == 2``).
      mixer_options: keyword options for the mixer.
      layer_options: per-layer overrides of ``mixer_options``, cycled over the layers
        (``sequence.per_layer_options``).
      mlp_ratio, norm: per-pixel MLP width ratio; ``"layer"`` or ``"rms"`` norm.
      norm_position: ``"pre"`` (default) or ``"post"`` (the official ConvS5 layers).
      output: ``"linear"`` (default), ``"sigmoid"`` (frames in [0, 1]) or ``"tanh"``
        (frames in [−1, 1]); applied to every prediction, in ``__call__`` and ``step``.
    """

    def __init__(self, *, in_channels: int, out_channels: int | None = None, d_model: int = 64,
                 n_layers: int = 2, n_down: int = 2, mixer: str = "convs5", mixer_options: dict | None = None,
                 layer_options: Sequence[dict] | None = None, mlp_ratio: int = 2, norm: str = "layer",
                 norm_position: str = "pre", output: str = "linear", rngs: nnx.Rngs):
        cls = layers.spec(mixer).cls
        if not (cls.temporal and cls.spatial_ndim == 2):
            raise ValueError(f"mixer {mixer!r} is not a video mixer (needs temporal=True, spatial_ndim=2)")
        if not cls.causal:
            raise ValueError(f"mixer {mixer!r} is not causal: it cannot predict the next frame")
        for name, value, valid in (("norm", norm, NORMS), ("norm_position", norm_position, NORM_POSITIONS),
                                   ("output", output, tuple(OUTPUTS))):
            if value not in valid:
                raise ValueError(f"{name} must be one of {valid}; got {value!r}")
        if n_down < 0 or d_model % (2**n_down):
            raise ValueError(f"d_model={d_model} must be divisible by 2**n_down = {2**n_down}")
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.n_down, self.output = n_down, output
        widths = [d_model // 2 ** (n_down - i) for i in range(n_down + 1)]  # ..., d_model/2, d_model
        # blank frames must not encode to zero latents (see EMBED_BIAS_INIT)
        self.stem = nnx.Conv(in_channels, widths[0], (3, 3), bias_init=EMBED_BIAS_INIT, rngs=rngs)
        self.down = nnx.List([nnx.Conv(widths[i], widths[i + 1], (3, 3), strides=(2, 2), rngs=rngs)
                              for i in range(n_down)])
        self.blocks = nnx.List([
            VideoBlock(mixer, d_model, mixer_options=options, mlp_ratio=mlp_ratio, norm=norm,
                       norm_position=norm_position, rngs=rngs)
            for options in per_layer_options(mixer_options, layer_options, n_layers)
        ])
        self.final_norm = _norm(norm, d_model, rngs) if norm_position == "pre" else None
        self.up = nnx.List([nnx.ConvTranspose(widths[i + 1], widths[i], (4, 4), strides=(2, 2), rngs=rngs)
                            for i in reversed(range(n_down))])
        self.head = nnx.Conv(widths[0], self.out_channels, (3, 3), rngs=rngs)

    def _check_frames(self, name: str, frames, ndim: int) -> None:
        f = 2**self.n_down
        shape = jnp.shape(frames)
        ok = (jnp.ndim(frames) == ndim and shape[-1] == self.in_channels
              and shape[-3] % f == 0 and shape[-2] % f == 0
              and jnp.issubdtype(jnp.result_type(frames), jnp.floating))
        if not ok:
            layout = "(batch, T, H, W, C)" if ndim == 5 else "(batch, H, W, C)"
            raise ValueError(f"{name} must be floating {layout} with C=in_channels={self.in_channels} and "
                             f"H, W divisible by 2**n_down={f}; got {jnp.result_type(frames)} {shape}")

    def encode(self, frames):
        z = jax.nn.gelu(self.stem(frames))
        for conv in self.down:
            z = jax.nn.gelu(conv(z))
        return z

    def decode(self, z):
        if self.final_norm is not None:
            z = self.final_norm(z)
        for conv in self.up:
            z = jax.nn.gelu(conv(z))
        return OUTPUTS[self.output](self.head(z))

    def __call__(self, frames: jax.Array, *, dtype=jnp.float32) -> jax.Array:
        """Predictions ``(batch, T, H, W, out_channels)``: ``out[:, t]`` ≈ ``frames[:, t+1]``.

        ``dtype`` is the activation dtype of the mixer blocks (e.g. ``jnp.bfloat16``); the
        encoder, decoder and outputs are float32.
        """
        self._check_frames("frames", frames, 5)
        z = self.encode(frames.astype(jnp.float32)).astype(dtype)
        for block in self.blocks:
            z = block(z)
        return self.decode(z.astype(jnp.float32))

    def latent_shape(self, frame_shape: Sequence[int]) -> tuple[int, int]:
        f = 2**self.n_down
        return (frame_shape[0] // f, frame_shape[1] // f)

    def init_state(self, batch_size: int, frame_shape: Sequence[int] | None = None) -> tuple[Any, ...]:
        """Per-block mixer states; with ``frame_shape=(H, W)`` they have a fixed latent
        grid shape (needed for a ``lax.scan`` carry), else they broadcast on first use."""
        grid = None if frame_shape is None else self.latent_shape(frame_shape)
        return tuple(block.mixer.init_state(batch_size, grid) for block in self.blocks)

    def step(self, frame_t: jax.Array, state: tuple[Any, ...]) -> tuple[jax.Array, tuple[Any, ...]]:
        """One frame ``(batch, H, W, C)`` -> ``(prediction of the next frame, state)``."""
        self._check_frames("frame_t", frame_t, 4)
        z = self.encode(frame_t.astype(jnp.float32))
        new_state = []
        for block, s in zip(self.blocks, state):
            z, s = block.step(z, s)
            new_state.append(s)
        return self.decode(z), tuple(new_state)


def rollout(model: VideoModel, context: jax.Array, num_frames: int) -> jax.Array:
    """Autoregressive generation: feed ``context`` (batch, T_c, H, W, C) frame by frame,
    then feed back each prediction; returns the ``num_frames`` frames after the context,
    ``(batch, num_frames, H, W, C)``. Needs ``out_channels == in_channels``."""
    if model.out_channels != model.in_channels:
        raise ValueError("rollout feeds predictions back: needs out_channels == in_channels")
    if context.ndim != 5 or context.shape[1] < 1 or num_frames < 1:
        raise ValueError(f"context must be (batch, T ≥ 1, H, W, C) and num_frames ≥ 1; got "
                         f"{context.shape} and {num_frames}")
    graphdef, params = nnx.split(model)

    @jax.jit
    def run(params, context):
        m = nnx.merge(graphdef, params)
        state = m.init_state(context.shape[0], context.shape[2:4])

        def feed(state, frame):
            pred, state = m.step(frame, state)
            return state, pred

        state, preds = jax.lax.scan(feed, state, jnp.moveaxis(context, 1, 0))

        def generate(carry, _):
            frame, state = carry
            pred, state = m.step(frame, state)
            return (pred, state), pred

        first = preds[-1]
        _, more = jax.lax.scan(generate, (first, state), None, length=num_frames - 1)
        return jnp.moveaxis(jnp.concatenate([first[None], more], axis=0), 0, 1)

    return run(params, context)
