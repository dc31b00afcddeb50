"""ImageModel: shapes for sequence and grid mixers, a larger grid with an interpolated
position embedding, mean and corner pooling, and clear errors for bad inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import seqmodels.layers as layers
from seqmodels.models import ImageModel

GRID_MIXERS = [n for n in layers.names()
               if layers.spec(n).cls.spatial_ndim == 2 and not layers.spec(n).cls.temporal]


def make(mixer, *, image_size=8, patch_size=2, **kwargs):
    return ImageModel(mixer, in_channels=3, num_classes=5, image_size=image_size, patch_size=patch_size,
                      d_model=16, n_layers=1, mlp_ratio=2, mixer_options=layers.spec(mixer).example_options,
                      rngs=nnx.Rngs(0), **kwargs)


def images(batch, height, width, channels=3, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, height, width, channels))


@pytest.mark.parametrize("mixer", ["hydra", "aaren"] + GRID_MIXERS)
def test_shapes_and_mixer_layout(mixer, monkeypatch):
    """Logits ``(batch, num_classes)``; a grid mixer gets the ``(batch, gh, gw, d)`` patch
    grid, a sequence mixer the same patches flattened row by row (raster order)."""
    model = make(mixer, image_size=(8, 12))
    x = images(2, 8, 12)                                                     # 4 × 6 patches
    seen = []
    cls = type(model.blocks[0].mixer)
    original = cls.forward
    monkeypatch.setattr(cls, "forward", lambda self, h: (seen.append(h), original(self, h))[1])
    logits = model(x)
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    block = model.blocks[0]
    grid = block.mixer_norm(model.patch_embed(x) + model.pos_embed[...][None])
    expected = grid if cls.spatial_ndim == 2 else grid.reshape(2, 24, 16)
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], expected, rtol=1e-5, atol=1e-6)


def test_larger_grid_interpolates_position_embedding():
    model = make("hydra", image_size=24, patch_size=2)                     # built at 12 × 12 patches
    assert model.pos_embed[...].shape == (12, 12, 16)
    logits = model(images(1, 48, 48))                                        # runs at 24 × 24 patches
    assert logits.shape == (1, 5) and bool(jnp.all(jnp.isfinite(logits)))
    assert model.position_embedding((12, 12)) is not None
    np.testing.assert_array_equal(model.position_embedding((12, 12)), model.pos_embed[...])
    # Bilinear resizing keeps a constant embedding constant and a smooth one smooth.
    model.pos_embed.set_value(jnp.ones((12, 12, 16)) * jnp.arange(16.0)[None, None, :])
    np.testing.assert_allclose(model.position_embedding((24, 24)),
                               jnp.ones((24, 24, 16)) * jnp.arange(16.0)[None, None, :], rtol=1e-6)
    ramp = jnp.broadcast_to(jnp.arange(12.0)[:, None, None], (12, 12, 16))
    model.pos_embed.set_value(ramp)
    up = model.position_embedding((24, 24))
    # half-pixel centres: output row r samples input row (r + 0.5) / 2 - 0.5 (clamped at the edges)
    expected_rows = np.clip((np.arange(24) + 0.5) / 2 - 0.5, 0, 11)
    np.testing.assert_allclose(up[:, 0, 0], expected_rows, atol=1e-5)


@pytest.mark.parametrize("mixer", ["aaren", "plstm2d"])
def test_corner_pooling_concatenates_the_four_corner_tokens(mixer):
    """The head sees ``[top-left, top-right, bottom-left, bottom-right]`` of the final-norm
    grid (``4 · d_model`` features), for a grid mixer and a raster-order sequence mixer."""
    model = make(mixer, image_size=(8, 12), pooling="corners")
    assert model.head.kernel[...].shape == (4 * 16, 5)
    x = images(2, 8, 12)
    h = model.patch_embed(x) + model.pos_embed[...][None]                 # (2, 4, 6, 16)
    if model.mixer_cls.spatial_ndim == 1:
        h = h.reshape(2, 24, 16)
    for block in model.blocks:
        h = block(h)
    grid = model.final_norm(h).reshape(2, 4, 6, 16)
    pooled = jnp.concatenate([grid[:, 0, 0], grid[:, 0, 5], grid[:, 3, 0], grid[:, 3, 5]], axis=-1)
    np.testing.assert_allclose(model(x), model.head(pooled), rtol=1e-5, atol=1e-6)
    assert make(mixer, image_size=(8, 12)).head.kernel[...].shape == (16, 5)   # mean: d_model


def test_bad_images_raise_naming_the_argument():
    model = make("hydra")
    with pytest.raises(ValueError, match=r"images must .*patch_size=2"):
        model(images(2, 8, 8)[0])                       # no batch axis
    with pytest.raises(ValueError, match=r"images must .*in_channels=3"):
        model(images(2, 8, 8, channels=4))
    with pytest.raises(ValueError, match=r"images must .*multiples of patch_size=2"):
        model(images(2, 9, 8))
    with pytest.raises(ValueError, match=r"images must be floating"):
        model(images(2, 8, 8).astype(jnp.int32))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="convs5"):
        make("convs5")
    with pytest.raises(ValueError, match="image_size"):
        make("hydra", image_size=9)
    with pytest.raises(ValueError, match="patch_size"):
        make("hydra", patch_size=0)
    with pytest.raises(ValueError, match=r"pooling must be one of \('mean', 'corners'\); got 'max'"):
        make("hydra", pooling="max")
