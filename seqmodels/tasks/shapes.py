"""Moving shapes: classify a short video of one shape moving in a straight line; our
own generator in the spirit of Moving MNIST ("Unsupervised Learning of Video
Representations using LSTMs", Srivastava et al., 2015) as used for ConvS5
("Convolutional State Space Models for Long-Range Spatiotemporal Modeling", Smith
et al., 2023).

A 3×3 shape (``square``, ``plus``, ``cross`` or ``ring``) starts at a random place
and moves ``speed`` pixels per frame up, down, left or right, staying in the frame.
``label="direction"`` asks for the motion (4 classes: needs more than one frame),
``label="shape"`` for the shape (4 classes), ``label="both"`` for the pair (16).
Inputs are ``(batch, frames, size, size, 1)``.

``bouncing_shapes`` is the next-frame prediction counterpart: shapes that bounce off
the edges, the target of every frame is the next one (regression).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Task, TaskIO, positive, register_task

SHAPES = {
    "square": np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1]], np.float32),
    "plus": np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32),
    "cross": np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float32),
    "ring": np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32),
}
DIRECTIONS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])   # up, down, left, right as (dy, dx)
LABELS = ("direction", "shape", "both")


@register_task("moving_shapes")
@dataclass(frozen=True)
class MovingShapes(Task):
    """Options: ``frames``, ``size`` (frame side), ``speed`` (pixels per frame), ``label``."""

    frames: int = 8
    size: int = 12
    speed: int = 1
    label: str = "direction"

    def __post_init__(self):
        positive(self.name, frames=self.frames, size=self.size, speed=self.speed)
        if self.label not in LABELS:
            raise ValueError(f"moving_shapes: label must be one of {LABELS}; got {self.label!r}")
        if self.size < 3 + (self.frames - 1) * self.speed:
            raise ValueError(f"moving_shapes: size={self.size} too small for {self.frames} frames at speed {self.speed}")

    @property
    def num_classes(self) -> int:
        return {"direction": 4, "shape": len(SHAPES), "both": 4 * len(SHAPES)}[self.label]

    def io(self) -> TaskIO:
        return TaskIO(input_dim=1, output_dim=self.num_classes, pooling="mean")

    def chance(self) -> float:
        return 1.0 / self.num_classes

    def make_batch(self, rng, split, index, batch_size):
        shapes = rng.integers(0, len(SHAPES), batch_size)
        directions = rng.integers(0, 4, batch_size)
        video = np.zeros((batch_size, self.frames, self.size, self.size, 1), np.float32)
        travel = (self.frames - 1) * self.speed
        templates = list(SHAPES.values())
        for i in range(batch_size):
            step = DIRECTIONS[directions[i]] * self.speed
            # the start range keeps every frame inside the image
            lo = np.where(step < 0, travel, 0)
            hi = self.size - 3 - np.where(step > 0, travel, 0)
            y, x = rng.integers(lo, hi + 1)
            for t in range(self.frames):
                video[i, t, y + t * step[0]:y + t * step[0] + 3, x + t * step[1]:x + t * step[1] + 3, 0] = templates[shapes[i]]
        labels = {"direction": directions, "shape": shapes, "both": 4 * shapes + directions}[self.label]
        return {"inputs": video, "targets": labels.astype(np.int32), "weights": np.ones(batch_size, np.float32)}


@register_task("bouncing_shapes")
@dataclass(frozen=True)
class BouncingShapes(Task):
    """Next-frame prediction: ``num_shapes`` 3×3 shapes move at a constant speed and
    bounce off the frame's edges (each axis reflects on its own), the dynamics of
    Moving MNIST at toy size. Inputs ``(B, frames, size, size, 1)``; the target of frame
    ``t`` is frame ``t + 1`` (the last frame has no target: weight 0), ``loss="mse"``.
    A model trained on ``frames`` frames can be rolled out for longer
    (``seqmodels.models.video.rollout``): the motion continues by the same rule.

    Options: ``frames``, ``size`` (frame side), ``num_shapes``, ``max_speed`` (pixels per
    frame along each axis, drawn from ``1..max_speed`` with a random sign).
    ``chance()`` is the MSE of the best constant (per-pixel mean) prediction.
    """

    loss: ClassVar[str] = "mse"
    metric: ClassVar[str] = "mse"
    requires_causal: ClassVar[bool] = True

    frames: int = 16
    size: int = 16
    num_shapes: int = 1
    max_speed: int = 1

    def __post_init__(self):
        positive(self.name, frames=self.frames, size=self.size, num_shapes=self.num_shapes,
                 max_speed=self.max_speed)
        if self.size < 3 + 2 * self.max_speed:
            raise ValueError(f"bouncing_shapes: size={self.size} too small for max_speed={self.max_speed}")

    def io(self) -> TaskIO:
        return TaskIO(input_dim=1, output_dim=1, pooling="none")

    def chance(self) -> float:
        frames = self.videos(np.random.default_rng(0), 256, self.frames)
        return float(np.mean(np.var(frames, axis=0)))

    def videos(self, rng: np.random.Generator, batch_size: int, frames: int) -> np.ndarray:
        """``(batch_size, frames, size, size, 1)`` float32 videos (values in [0, 1])."""
        span = self.size - 3                                   # top-left corners lie in [0, span]
        templates = np.stack(list(SHAPES.values()))
        shapes = rng.integers(0, len(SHAPES), (batch_size, self.num_shapes))
        position = rng.integers(0, span + 1, (batch_size, self.num_shapes, 2))
        velocity = rng.integers(1, self.max_speed + 1, position.shape) * rng.choice([-1, 1], position.shape)
        video = np.zeros((batch_size, frames, self.size, self.size, 1), np.float32)
        for t in range(frames):
            for i in range(batch_size):
                for s in range(self.num_shapes):
                    y, x = position[i, s]
                    patch = video[i, t, y:y + 3, x:x + 3, 0]
                    np.maximum(patch, templates[shapes[i, s]], out=patch)
            position = position + velocity
            for bound, sign in ((0, -1), (span, 1)):           # reflect at the edges
                over = (position - bound) * sign > 0
                position = np.where(over, 2 * bound - position, position)
                velocity = np.where(over, -velocity, velocity)
        return video

    def make_batch(self, rng, split, index, batch_size):
        video = self.videos(rng, batch_size, self.frames)
        targets = np.concatenate([video[:, 1:], np.zeros_like(video[:, :1])], axis=1)
        weights = np.ones((batch_size, self.frames), np.float32)
        weights[:, -1] = 0.0
        return {"inputs": video, "targets": targets, "weights": weights}
