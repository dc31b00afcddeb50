"""Selective copying, after "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces" (Gu & Dao, 2023, §4.1.1).

``num_tokens`` data symbols sit at random positions of a span of ``seq_len`` blanks
(token 0); ``num_tokens`` marker tokens follow. At the ``j``-th marker the target is
the ``j``-th data symbol in order of appearance, so the model must select content
(not fixed positions) and remember its order. Only marker positions are scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Task, TaskIO, positive, register_task


@register_task("selective_copy")
@dataclass(frozen=True)
class SelectiveCopy(Task):
    """Options: ``seq_len`` (span holding the data), ``num_tokens`` (symbols to copy),
    ``num_symbols`` (data alphabet, tokens ``1..num_symbols``; the marker is ``num_symbols + 1``)."""

    seq_len: int = 64
    num_tokens: int = 8
    num_symbols: int = 8

    def __post_init__(self):
        positive(self.name, seq_len=self.seq_len, num_tokens=self.num_tokens, num_symbols=self.num_symbols)
        if self.num_tokens > self.seq_len:
            raise ValueError(f"selective_copy: num_tokens={self.num_tokens} exceeds seq_len={self.seq_len}")

    @property
    def marker(self) -> int:
        return self.num_symbols + 1

    def io(self) -> TaskIO:
        return TaskIO(vocab_size=self.num_symbols + 2, output_dim=self.num_symbols + 2, pooling="none")

    def chance(self) -> float:
        return 1.0 / self.num_symbols

    def make_batch(self, rng, split, index, batch_size):
        n, span = self.num_tokens, self.seq_len
        rows = np.arange(batch_size)[:, None]
        symbols = rng.integers(1, self.num_symbols + 1, (batch_size, n))
        positions = np.sort(np.argsort(rng.random((batch_size, span)), axis=1)[:, :n], axis=1)
        inputs = np.zeros((batch_size, span + n), np.int32)
        inputs[rows, positions] = symbols
        inputs[:, span:] = self.marker
        targets = np.zeros_like(inputs)
        targets[:, span:] = symbols
        weights = np.zeros(inputs.shape, np.float32)
        weights[:, span:] = 1.0
        return {"inputs": inputs, "targets": targets, "weights": weights}
