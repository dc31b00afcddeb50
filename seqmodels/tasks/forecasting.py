"""Forecasting (regression): predict the next value of a signal from its past.

``process="sines"``: a sum of ``num_components`` sinusoids with random frequencies,
amplitudes and phases per sequence, plus Gaussian noise of std ``noise``
(the multi-sine benchmark of continuous-time sequence models).
``process="ar"``: an AR(``order``) process ``x_t = Σ_i φ_i x_{t-i} + ε_t`` with random
stable coefficients per sequence (roots drawn inside the unit circle), scaled to
about unit variance by the spread of its burn-in.

Inputs are ``x_0 … x_{L-1}`` as ``(B, L, 1)`` features; the target at step ``t`` is
``x_{t+1}``: the model must be causal. ``metric="mse"``; ``chance()`` is the MSE of
always predicting 0, the process mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Task, TaskIO, positive, register_task

PROCESSES = ("sines", "ar")


@register_task("forecast")
@dataclass(frozen=True)
class Forecasting(Task):
    """Options: ``process`` (``sines`` or ``ar``), ``seq_len``, ``num_components``
    (sines), ``order`` (AR), ``noise`` (sines' observation noise std)."""

    loss: ClassVar[str] = "mse"
    metric: ClassVar[str] = "mse"
    requires_causal: ClassVar[bool] = True

    process: str = "sines"
    seq_len: int = 128
    num_components: int = 3
    order: int = 4
    noise: float = 0.05

    def __post_init__(self):
        if self.process not in PROCESSES:
            raise ValueError(f"forecast: process must be one of {PROCESSES}; got {self.process!r}")
        positive(self.name, seq_len=self.seq_len, num_components=self.num_components, order=self.order)
        if self.noise < 0:
            raise ValueError(f"forecast: noise must be non-negative; got {self.noise}")

    def io(self) -> TaskIO:
        return TaskIO(input_dim=1, output_dim=1, pooling="none")

    def chance(self) -> float:
        signal = self._signals(np.random.default_rng(0), 1024)
        return float(np.mean(signal[:, 1:] ** 2))

    def _signals(self, rng, batch_size: int) -> np.ndarray:
        steps = self.seq_len + 1
        if self.process == "sines":
            k = self.num_components
            freq = rng.uniform(0.01, 0.2, (batch_size, k, 1))           # cycles per step
            amp = rng.uniform(0.2, 1.0, (batch_size, k, 1)) / np.sqrt(k)
            phase = rng.uniform(0, 2 * np.pi, (batch_size, k, 1))
            t = np.arange(steps)[None, None, :]
            x = np.sum(amp * np.sin(2 * np.pi * freq * t + phase), axis=1)
            return x + self.noise * rng.standard_normal(x.shape)
        roots = rng.uniform(0.3, 0.95, (batch_size, self.order)) * rng.choice([-1, 1], (batch_size, self.order))
        coeffs = np.stack([-np.poly(r)[1:] for r in roots])             # x_t = Σ φ_i x_{t-i} + ε_t
        burn_in = 128
        x = np.zeros((batch_size, steps + burn_in))
        eps = rng.standard_normal(x.shape)
        for t in range(self.order, steps + burn_in):
            x[:, t] = np.sum(coeffs * x[:, t - self.order:t][:, ::-1], axis=1) + eps[:, t]
        # scale by the spread of the burn-in's second half: no look at the sequence itself
        return x[:, burn_in:] / np.std(x[:, burn_in // 2:burn_in], axis=1, keepdims=True)

    def make_batch(self, rng, split, index, batch_size):
        x = self._signals(rng, batch_size).astype(np.float32)
        return {"inputs": x[:, :-1, None], "targets": x[:, 1:, None],
                "weights": np.ones((batch_size, self.seq_len), np.float32)}
