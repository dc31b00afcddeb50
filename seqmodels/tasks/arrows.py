"""Arrow pointing: does the arrow point at the target? An image task in the spirit of
the arrow-pointing extrapolation task of "pLSTM: parallelizable Linear Source
Transition Mark networks" (Pöppel et al., 2025); our own generator.

Each ``size × size`` image holds an arrow (a shaft, channel 0, ending in a head,
channel 1) and a round target (channel 2). The label is 1 when the ray leaving the
arrow's head along its direction passes through the target disk. Positives aim
well inside the disk and negatives well outside it (a margin in angle), so the
label is unambiguous at pixel resolution; classes are balanced. ``test_size`` adds
a split ``"test_<n>px"`` of larger images with objects of the same pixel scale
(extrapolation in image size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import Task, TaskIO, positive, register_task

ARROW_LENGTH = 6.0   # pixels, shaft included
HEAD_LENGTH = 2.0    # pixels at the tip drawn in the head channel
TARGET_RADIUS = 1.5
MIN_SIZE = 14        # below this, valid arrow/target layouts are too rare to draw in reasonable time


def ray_hits_disk(tip, direction, center, radius: float) -> bool:
    """Whether the ray ``tip + s·direction`` (``s ≥ 0``, unit ``direction``) meets the disk."""
    offset = np.asarray(center, float) - np.asarray(tip, float)
    along = float(offset @ direction)
    across = abs(float(offset[0] * direction[1] - offset[1] * direction[0]))
    return along > 0 and across <= radius


def draw_segments(images: np.ndarray, start: np.ndarray, end: np.ndarray, channel: int) -> None:
    """Set the pixels along each segment ``start[i] → end[i]`` (``(B, 2)`` as (y, x))."""
    steps = np.linspace(0.0, 1.0, int(4 * ARROW_LENGTH) + 1)[None, :, None]
    points = np.rint(start[:, None] + steps * (end - start)[:, None]).astype(int)       # (B, K, 2)
    rows = np.broadcast_to(np.arange(len(images))[:, None], points.shape[:2])
    images[rows, points[..., 0], points[..., 1], channel] = 1.0


def draw_disks(images: np.ndarray, centers: np.ndarray, radius: float, channel: int) -> None:
    ys, xs = np.mgrid[:images.shape[1], :images.shape[2]]
    distance = np.hypot(ys[None] - centers[:, 0, None, None], xs[None] - centers[:, 1, None, None])
    images[..., channel] = np.maximum(images[..., channel], distance <= radius)


@register_task("arrows")
@dataclass(frozen=True)
class ArrowPointing(Task):
    """Options: ``size`` (image side in pixels), ``test_size`` (side of the
    extrapolation split; equal to ``size`` for none)."""

    size: int = 16
    test_size: int = 24

    def __post_init__(self):
        positive(self.name, size=self.size, test_size=self.test_size)
        if min(self.size, self.test_size) < MIN_SIZE:
            raise ValueError(f"arrows: size and test_size must be at least {MIN_SIZE} pixels (room for an "
                             f"arrow and a target far enough apart); got {self.size}, {self.test_size}")

    def io(self) -> TaskIO:
        return TaskIO(input_dim=3, output_dim=2, pooling="mean")

    def chance(self) -> float:
        return 0.5

    def eval_splits(self) -> tuple[str, ...]:
        return ("test",) + ((f"test_{self.test_size}px",) if self.test_size != self.size else ())

    def split_size(self, split: str) -> int:
        return self.test_size if split.endswith("px") else self.size

    def _geometry(self, rng, size: int, labels: np.ndarray):
        """Tails, tips and target centers for ``labels``: candidates are drawn in vectors and
        the first valid ones of each label kept (a pure function of ``rng``)."""
        lo, hi = 1.0, size - 2.0
        chosen = {0: [], 1: []}
        needed = {y: int(np.sum(labels == y)) for y in (0, 1)}
        while any(len(chosen[y]) < needed[y] for y in (0, 1)):
            m = 4 * len(labels) + 16
            label = rng.integers(0, 2, m)
            center = rng.uniform(lo + TARGET_RADIUS, hi - TARGET_RADIUS, (m, 2))
            tail = rng.uniform(lo, hi, (m, 2))
            to_center = center - tail
            distance = np.hypot(to_center[:, 0], to_center[:, 1])
            far = distance >= ARROW_LENGTH + TARGET_RADIUS + 3.0
            cone = np.arcsin(np.clip(TARGET_RADIUS / np.maximum(distance - ARROW_LENGTH, 1e-6), 0, 1))
            aim = np.arctan2(to_center[:, 1], to_center[:, 0])
            hit_offset = rng.uniform(-0.3, 0.3, m) * cone
            miss_offset = rng.choice([-1.0, 1.0], m) * rng.uniform(np.minimum(2.5 * cone, math.pi), math.pi)
            angle = aim + np.where(label == 1, hit_offset, miss_offset)
            direction = np.stack([np.cos(angle), np.sin(angle)], axis=1)
            tip = tail + ARROW_LENGTH * direction
            inside = (tip.min(axis=1) >= lo) & (tip.max(axis=1) <= hi)
            for i in np.flatnonzero(far & inside):
                y = int(label[i])
                if len(chosen[y]) < needed[y] and ray_hits_disk(tip[i], direction[i], center[i], TARGET_RADIUS) == bool(y):
                    chosen[y].append((tail[i], tip[i], center[i]))
        order = {0: iter(chosen[0]), 1: iter(chosen[1])}
        tails, tips, centers = (np.array(a) for a in zip(*[next(order[int(y)]) for y in labels]))
        return tails, tips, centers

    def make_batch(self, rng, split, index, batch_size):
        size = self.split_size(split)
        labels = rng.integers(0, 2, batch_size).astype(np.int32)
        tails, tips, centers = self._geometry(rng, size, labels)
        directions = (tips - tails) / ARROW_LENGTH
        necks = tips - HEAD_LENGTH * directions
        images = np.zeros((batch_size, size, size, 3), np.float32)
        draw_segments(images, tails, necks, 0)
        draw_segments(images, necks, tips, 1)
        images[..., 0] *= 1.0 - images[..., 1]
        draw_disks(images, centers, TARGET_RADIUS, 2)
        return {"inputs": images, "targets": labels, "weights": np.ones(batch_size, np.float32)}
