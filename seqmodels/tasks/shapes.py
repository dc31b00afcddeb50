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
"""

from __future__ import annotations

from dataclasses import dataclass

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
