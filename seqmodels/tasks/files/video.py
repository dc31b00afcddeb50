"""Moving MNIST ("Unsupervised Learning of Video Representations using LSTMs",
Srivastava, Mansimov & Salakhutdinov, 2015), the ConvS5 benchmark ("Convolutional State
Space Models for Long-Range Spatiotemporal Modeling", Smith et al., 2023, Table 1).

Training videos are generated on the fly from the real MNIST training digits (the IDX
file ``train-images-idx3-ubyte``, optionally ``.gz``), to any length: ``num_digits``
28×28 digits start at random places of a 64×64 canvas and move at ``speed`` pixels
per frame in a random direction, each coordinate reflecting at the edges; digits are
combined by a pixel-wise maximum. Every video is a pure function of ``(seed, index)``.
The ``test`` split is the fixed released file ``mnist_test_seq.npy`` (uint8
``(20, 10000, 64, 64)``: frames, videos, height, width).

Next-frame prediction: inputs ``(B, T, 64, 64, 1)`` in [0, 1], the target of frame
``t`` is frame ``t + 1`` (the last frame has weight 0), ``loss="mse"``. The papers
report the MSE of frames predicted autoregressively after a context (ConvS5: 100 → 800
frames; the classic 10 → 10 on the released file); the loop's evaluation is the
teacher-forced next-frame MSE (``seqmodels.models.video.rollout`` gives the former).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..base import TaskIO, positive, register_task, split_rng
from .images import read_idx
from .pipeline import FileDataset, part_range

CANVAS, DIGIT = 64, 28
TEST_FILE = "mnist_test_seq.npy"


@register_task("moving_mnist")
@dataclass(frozen=True)
class MovingMnist(FileDataset):
    """Options: ``data_dir`` (MNIST's training images and ``mnist_test_seq.npy``), ``frames``
    (training length), ``num_digits``, ``speed``."""

    loss: ClassVar[str] = "mse"
    metric: ClassVar[str] = "mse"
    requires_causal: ClassVar[bool] = True
    published: ClassVar[str] = ("http://www.cs.toronto.edu/~nitish/unsupervised_video/ (mnist_test_seq.npy) and "
                                "http://yann.lecun.com/exdb/mnist/ (train-images-idx3-ubyte.gz)")
    expected: ClassVar[str] = f"train-images-idx3-ubyte (or .gz) and {TEST_FILE} (uint8 (20, N, 64, 64))"
    batch_options: ClassVar[tuple[str, ...]] = ("frames", "num_digits", "speed")

    frames: int = 20
    num_digits: int = 2
    speed: float = 3.6

    def __post_init__(self):
        positive(self.name, frames=self.frames, num_digits=self.num_digits)
        if not 0 < self.speed < CANVAS - DIGIT:
            raise ValueError(f"moving_mnist: speed must be in (0, {CANVAS - DIGIT}); got {self.speed}")

    def eval_splits(self):
        return ("test",)

    def sources(self, folder):
        return sorted(folder.glob("train-images-idx3-ubyte*"))

    def decode(self, folder, writer):
        return {"digits": read_idx(self, folder / "train-images-idx3-ubyte", 3)}

    def test_videos(self) -> np.ndarray:
        path = self.folder / TEST_FILE
        self.require(path)
        try:
            videos = np.load(path, mmap_mode="r")
        except ValueError as err:
            raise self.error(f"cannot read {TEST_FILE} ({err})") from err
        if videos.ndim != 4 or videos.shape[2:] != (CANVAS, CANVAS) or videos.dtype != np.uint8:
            raise self.error(f"{TEST_FILE} is {videos.dtype} {videos.shape}; expected uint8 (frames, N, 64, 64)")
        return videos

    def io(self) -> TaskIO:
        self.arrays()
        self.test_videos()
        return TaskIO(input_dim=1, output_dim=1, pooling="none")

    def eval_size(self, split):
        return self.test_videos().shape[1]

    def generate(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """``(batch_size, frames, 64, 64)`` float32 bouncing-digit videos in [0, 1]."""
        digits = self.arrays()["digits"]
        chosen = np.asarray(digits[np.sort(rng.integers(0, len(digits), batch_size * self.num_digits))])
        chosen = rng.permutation(chosen).reshape(batch_size, self.num_digits, DIGIT, DIGIT)
        span = CANVAS - DIGIT
        position = rng.uniform(0, span, (batch_size, self.num_digits, 2))
        angle = rng.uniform(0, 2 * np.pi, (batch_size, self.num_digits))
        velocity = self.speed * np.stack([np.sin(angle), np.cos(angle)], axis=-1)
        video = np.zeros((batch_size, self.frames, CANVAS, CANVAS), np.uint8)
        for t in range(self.frames):
            corner = np.rint(position).astype(int)
            for i in range(batch_size):
                for d in range(self.num_digits):
                    y, x = corner[i, d]
                    patch = video[i, t, y:y + DIGIT, x:x + DIGIT]
                    np.maximum(patch, chosen[i, d], out=patch)
            position = position + velocity
            for bound, sign in ((0.0, -1.0), (float(span), 1.0)):       # reflect at the edges
                over = (position - bound) * sign > 0
                position = np.where(over, 2 * bound - position, position)
                velocity = np.where(over, -velocity, velocity)
        return video.astype(np.float32) / 255.0

    def batch(self, split, index, batch_size, seed):
        return self.batch_part(split, index, batch_size, seed, slice(None))

    def batch_part(self, split, index, batch_size, seed, part):
        self.check_split(split)
        part = part_range(part, batch_size)
        if split == "train":
            # the whole batch's draws are made, then ``part`` kept: the same videos however it is split
            video = self.generate(split_rng(seed, split, index), batch_size)[part]
            valid = np.ones(len(video), bool)
        else:
            rows = np.arange(index * batch_size, (index + 1) * batch_size)[part]
            videos = self.test_videos()
            valid = rows < videos.shape[1]
            video = np.asarray(videos[:, np.where(valid, rows, 0)]).transpose(1, 0, 2, 3).astype(np.float32) / 255.0
        video = video[..., None]
        targets = np.concatenate([video[:, 1:], np.zeros_like(video[:, :1])], axis=1)
        weights = np.repeat(valid[:, None], video.shape[1], axis=1).astype(np.float32)
        weights[:, -1] = 0.0
        return {"inputs": video, "targets": targets, "weights": weights}

    def chance(self) -> float:
        """The test MSE of the best constant prediction (each pixel's mean over 64 test videos)."""
        frames = self.batch("test", 0, 64, 0)["inputs"]
        return float(np.mean(np.var(frames, axis=0)))

