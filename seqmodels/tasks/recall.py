"""Multi-query associative recall (MQAR), after "Zoology: Measuring and Improving Recall
in Efficient Language Models" (Arora et al., 2023).

A sequence opens with ``num_pairs`` key-value pairs ``k_1 v_1 … k_n v_n``; every key
is then queried once, at a random position of the rest of the sequence, whose other
positions hold a blank token. At a query position the target is the value bound to
the key (the prediction of the next token in Zoology's language-model form); only
query positions are scored. Keys and values come from disjoint halves of the
vocabulary (token 0 is the blank). Zoology draws query gaps from a power law; here
they are uniform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Task, TaskIO, positive, register_task


@register_task("mqar")
@dataclass(frozen=True)
class MultiQueryRecall(Task):
    """Options: ``seq_len`` (total length), ``num_pairs`` (pairs = queries),
    ``vocab_size`` (blank + keys + values; ``(vocab_size - 1) // 2`` keys and as many values)."""

    seq_len: int = 64
    num_pairs: int = 8
    vocab_size: int = 64

    def __post_init__(self):
        positive(self.name, seq_len=self.seq_len, num_pairs=self.num_pairs, vocab_size=self.vocab_size)
        if self.num_keys < self.num_pairs:
            raise ValueError(f"mqar: vocab_size={self.vocab_size} gives {self.num_keys} keys, fewer than "
                             f"num_pairs={self.num_pairs}")
        if self.seq_len < 3 * self.num_pairs:
            raise ValueError(f"mqar: seq_len={self.seq_len} must be at least 3·num_pairs={3 * self.num_pairs}")

    @property
    def num_keys(self) -> int:
        return (self.vocab_size - 1) // 2

    def io(self) -> TaskIO:
        return TaskIO(vocab_size=self.vocab_size, output_dim=self.vocab_size, pooling="none")

    def chance(self) -> float:
        return 1.0 / self.num_keys

    def make_batch(self, rng, split, index, batch_size):
        n, k = self.num_pairs, self.num_keys
        rows = np.arange(batch_size)[:, None]
        keys = 1 + np.argsort(rng.random((batch_size, k)), axis=1)[:, :n]
        values = 1 + k + rng.integers(0, k, (batch_size, n))
        inputs = np.zeros((batch_size, self.seq_len), np.int32)
        inputs[:, 0:2 * n:2], inputs[:, 1:2 * n:2] = keys, values
        order = np.argsort(rng.random((batch_size, n)), axis=1)           # which pair each query asks
        slots = np.argsort(rng.random((batch_size, self.seq_len - 2 * n)), axis=1)[:, :n]
        positions = 2 * n + np.sort(slots, axis=1)
        targets = np.zeros_like(inputs)
        weights = np.zeros(inputs.shape, np.float32)
        inputs[rows, positions] = keys[rows, order]
        targets[rows, positions] = values[rows, order]
        weights[rows, positions] = 1.0
        return {"inputs": inputs, "targets": targets, "weights": weights}
