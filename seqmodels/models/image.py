"""``ImageModel``: an image classifier around any registered mixer (ViT layout).

    h = patchify(images) + pos              conv with stride = kernel = patch_size; a learned
                                            position embedding per patch of the training grid
    h = h + dropout(mixer(norm(h)))         × n_layers
    h = h + dropout(mlp(norm(h)))
    logits = head(pool(norm(h)))            "mean" over patches, or "corners": the four
                                            corner patches concatenated (head width 4·d)

Grid mixers (``spatial_ndim == 2``, not temporal) mix the ``(batch, H, W, d)`` patch
grid directly; sequence mixers (``spatial_ndim == 1``) mix the patches flattened in
raster order (row by row), as in the ViT experiments of S4, Hydra and Vision Mamba
(without a class token). ``pooling="corners"`` is pLSTM's (Pöppel et al., 2025;
upstream ``vision_model.py``'s default): the tokens at the four corners of the grid,
concatenated in the order top-left, top-right, bottom-left, bottom-right -- each
corner is where one of pLSTM's four orientations ends, so it has seen the whole
image. On a grid larger or smaller than the one the
model was built for, the position embedding is resized bilinearly
(``jax.image.resize``), the usual ViT recipe for a new resolution ("An Image is Worth
16x16 Words", Dosovitskiy et al., 2021, §3.2).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from .. import layers
from ..layers.common import Dense, check_positive_int
from .sequence import NORMS, Block, _norm, per_layer_options

POOLINGS = ("mean", "corners")


def _pair(name: str, value) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them; got {value!r}")
    return pair


class ImageModel(nnx.Module):
    """Patch embedding → ``n_layers`` pre-norm residual blocks → pooling → classifier.

    Args:
      mixer: a name from ``seqmodels.layers.names()``: a sequence mixer or a grid
        mixer (``spatial_ndim == 2``); video mixers are rejected.
      in_channels: channels ``C`` of the images ``(batch, H, W, C)``.
      num_classes: outputs of the classifier head.
      image_size: ``(H, W)`` (or one int) the model is built for; the position embedding
        has one vector per patch of that grid.
      patch_size: side of the square patches; ``H`` and ``W`` must be multiples of it.
      d_model, n_layers, mlp_ratio, dropout, norm: width, depth, MLP ratio, dropout
        rate, ``"layer"`` or ``"rms"``.
      mixer_options: keyword options for the mixer.
      layer_options: per-layer overrides of ``mixer_options``, cycled over the layers
        (``sequence.per_layer_options``), e.g. pLSTM's alternating ``[{"mode": "P"}, {"mode": "D"}]``.
      pooling: ``"mean"`` over the patches, or ``"corners"``: the four corner patches
        concatenated (the head then has ``4 · d_model`` inputs).
    """

    def __init__(self, mixer: str, *, in_channels: int, num_classes: int, image_size: int | Sequence[int],
                 patch_size: int = 4, d_model: int = 64, n_layers: int = 4, mlp_ratio: int = 4,
                 dropout: float = 0.0, norm: str = "layer", mixer_options: dict | None = None,
                 layer_options: Sequence[dict] | None = None, pooling: str = "mean", rngs: nnx.Rngs):
        cls = layers.spec(mixer).cls
        if cls.temporal or cls.spatial_ndim not in (1, 2):
            raise ValueError(f"mixer {mixer!r} takes {cls.layout()}: ImageModel needs a sequence mixer "
                             "(spatial_ndim=1) or a grid mixer (spatial_ndim=2, not temporal)")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        patch_size, image_size = check_positive_int("patch_size", patch_size), _pair("image_size", image_size)
        if image_size[0] % patch_size or image_size[1] % patch_size:
            raise ValueError(f"image_size={image_size} must be divisible by patch_size={patch_size}")
        self.mixer_cls, self.in_channels, self.patch_size, self.pooling = cls, in_channels, patch_size, pooling
        self.grid = (image_size[0] // patch_size, image_size[1] // patch_size)
        self.patch_embed = nnx.Conv(in_channels, d_model, (patch_size, patch_size),
                                    strides=(patch_size, patch_size), padding="VALID", rngs=rngs)
        self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), self.grid + (d_model,), jnp.float32))
        self.blocks = nnx.List([
            Block(mixer, d_model, mixer_options=options, mlp_ratio=mlp_ratio, dropout=dropout, norm=norm, rngs=rngs)
            for options in per_layer_options(mixer_options, layer_options, n_layers)
        ])
        self.final_norm = _norm(norm, d_model, rngs)
        self.head = Dense(d_model * (4 if pooling == "corners" else 1), num_classes, rngs=rngs)

    def _check_images(self, images) -> None:
        shape, p = jnp.shape(images), self.patch_size
        ok = (jnp.ndim(images) == 4 and shape[-1] == self.in_channels and shape[1] % p == 0
              and shape[2] % p == 0 and shape[1] > 0 and shape[2] > 0
              and jnp.issubdtype(jnp.result_type(images), jnp.floating))
        if not ok:
            raise ValueError(f"images must be floating (batch, H, W, C) with C=in_channels={self.in_channels} "
                             f"and H, W positive multiples of patch_size={p}; "
                             f"got {jnp.result_type(images)} {shape}")

    def position_embedding(self, grid: tuple[int, int]) -> jax.Array:
        """``(gh, gw, d_model)``: the learned embedding, bilinearly resized if ``grid`` differs."""
        pos = self.pos_embed[...]
        if tuple(grid) == self.grid:
            return pos
        return jax.image.resize(pos, tuple(grid) + pos.shape[-1:], method="bilinear")

    def __call__(self, images: jax.Array, *, dtype=jnp.float32) -> jax.Array:
        """Logits ``(batch, num_classes)`` (float32) for ``images (batch, H, W, C)``.

        ``dtype`` is the activation dtype (e.g. ``jnp.bfloat16``).
        """
        self._check_images(images)
        h = self.patch_embed(images.astype(jnp.float32))                      # (B, gh, gw, d)
        h = (h + self.position_embedding(h.shape[1:3])[None]).astype(dtype)
        B, gh, gw, d = h.shape
        if self.mixer_cls.spatial_ndim == 1:
            h = h.reshape(B, gh * gw, d)                                        # raster order
        for block in self.blocks:
            h = block(h)
        h = self.final_norm(h).astype(jnp.float32).reshape(B, gh, gw, d)
        return self.head(self._pool(h))

    def _pool(self, h):
        """``(B, gh, gw, d)`` -> ``(B, d)`` (mean) or ``(B, 4 d)`` (corners)."""
        if self.pooling == "mean":
            return jnp.mean(h, axis=(1, 2))
        corners = (h[:, 0, 0], h[:, 0, -1], h[:, -1, 0], h[:, -1, -1])
        return jnp.concatenate(corners, axis=-1)
