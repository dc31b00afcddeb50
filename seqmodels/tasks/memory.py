"""The copy-memory (delay) task of "Long Short-Term Memory" (Hochreiter & Schmidhuber,
1997) in the form of "Unitary Evolution Recurrent Neural Networks" (Arjovsky, Shah &
Bengio, 2016, §4.1).

``num_tokens`` random symbols open the sequence, ``delay`` blanks (token 0) follow,
then a cue token and ``num_tokens - 1`` more blanks. From the cue on, the targets are
the opening symbols in order: the model must hold them unchanged across the delay.
Only the recall positions are scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Task, TaskIO, positive, register_task


@register_task("copy_memory")
@dataclass(frozen=True)
class CopyMemory(Task):
    """Options: ``num_tokens`` (symbols to remember), ``num_symbols`` (alphabet, tokens
    ``1..num_symbols``; the cue is ``num_symbols + 1``), ``delay`` (blanks between)."""

    num_tokens: int = 8
    num_symbols: int = 8
    delay: int = 32

    def __post_init__(self):
        positive(self.name, num_tokens=self.num_tokens, num_symbols=self.num_symbols, delay=self.delay)

    @property
    def seq_len(self) -> int:
        return 2 * self.num_tokens + self.delay

    def io(self) -> TaskIO:
        return TaskIO(vocab_size=self.num_symbols + 2, output_dim=self.num_symbols + 2, pooling="none")

    def chance(self) -> float:
        return 1.0 / self.num_symbols

    def make_batch(self, rng, split, index, batch_size):
        n = self.num_tokens
        recall = n + self.delay
        symbols = rng.integers(1, self.num_symbols + 1, (batch_size, n))
        inputs = np.zeros((batch_size, self.seq_len), np.int32)
        inputs[:, :n] = symbols
        inputs[:, recall] = self.num_symbols + 1
        targets = np.zeros_like(inputs)
        targets[:, recall:] = symbols
        weights = np.zeros(inputs.shape, np.float32)
        weights[:, recall:] = 1.0
        return {"inputs": inputs, "targets": targets, "weights": weights}
