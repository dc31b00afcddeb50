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

from .base import Task, TaskIO, positive, register_task, split_rng


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


@register_task("bidirectional_recall")
@dataclass(frozen=True)
class BidirectionalRecall(Task):
    """Associative recall with queries on both sides of the pairs, after the
    bidirectional-recall probe of Hydra ("Hydra: Bidirectional State Space Models
    Through Generalized Matrix Mixers", Hwang, Lahoti, Dao & Gu, 2024).

    A block of ``num_pairs`` key-value pairs ``k_1 v_1 … k_n v_n`` starts at a random
    offset ``s ∈ [n, seq_len − 3n]``; every key is queried once, at a random position
    outside the block (before or after it), whose target is the value bound to the
    key. Other positions hold the blank token 0; only query positions are scored.
    Keys and values come from disjoint halves of the vocabulary, as in ``mqar``.
    A query before the block needs the future: a causal model is at chance there.

    Options: ``seq_len``, ``num_pairs``, ``vocab_size`` (blank + keys + values).
    Evaluation splits: ``test`` (all queries), ``test_before`` and ``test_after``
    (the same sequences, scored on the queries before / after the block only).
    """

    seq_len: int = 128
    num_pairs: int = 8
    vocab_size: int = 32

    def __post_init__(self):
        positive(self.name, seq_len=self.seq_len, num_pairs=self.num_pairs, vocab_size=self.vocab_size)
        if self.num_keys < self.num_pairs:
            raise ValueError(f"bidirectional_recall: vocab_size={self.vocab_size} gives {self.num_keys} keys, "
                             f"fewer than num_pairs={self.num_pairs}")
        if self.seq_len < 4 * self.num_pairs:
            raise ValueError(f"bidirectional_recall: seq_len={self.seq_len} must be at least "
                             f"4·num_pairs={4 * self.num_pairs}")

    @property
    def num_keys(self) -> int:
        return (self.vocab_size - 1) // 2

    def io(self) -> TaskIO:
        return TaskIO(vocab_size=self.vocab_size, output_dim=self.vocab_size, pooling="none")

    def chance(self) -> float:
        return 1.0 / self.num_keys

    def eval_splits(self) -> tuple[str, ...]:
        return ("test", "test_before", "test_after")

    def batch(self, split, index, batch_size, seed):
        """The ``test_*`` splits read the ``test`` split's sequences (same generator)."""
        self.check_split(split)
        source = "train" if split == "train" else "test"
        return self.make_batch(split_rng(seed, source, index), split, index, batch_size)

    def make_batch(self, rng, split, index, batch_size):
        n, k, L = self.num_pairs, self.num_keys, self.seq_len
        rows = np.arange(batch_size)[:, None]
        keys = 1 + np.argsort(rng.random((batch_size, k)), axis=1)[:, :n]
        values = 1 + k + rng.integers(0, k, (batch_size, n))
        start = rng.integers(n, L - 3 * n + 1, batch_size)                   # block [start, start + 2n)
        block = start[:, None] + np.arange(2 * n)[None, :]
        inputs = np.zeros((batch_size, L), np.int32)
        inputs[rows, block[:, 0::2]], inputs[rows, block[:, 1::2]] = keys, values
        # query slots: n of the L - 2n positions outside the block, then mapped past it
        slots = np.sort(np.argsort(rng.random((batch_size, L - 2 * n)), axis=1)[:, :n], axis=1)
        positions = slots + 2 * n * (slots >= start[:, None])
        order = np.argsort(rng.random((batch_size, n)), axis=1)              # which pair each query asks
        targets = np.zeros_like(inputs)
        weights = np.zeros(inputs.shape, np.float32)
        inputs[rows, positions] = keys[rows, order]
        targets[rows, positions] = values[rows, order]
        weights[rows, positions] = 1.0
        if split in ("test_before", "test_after"):
            before = np.arange(L)[None, :] < start[:, None]
            weights *= (before if split == "test_before" else ~before).astype(np.float32)
        return {"inputs": inputs, "targets": targets, "weights": weights}


@register_task("fact_recall")
@dataclass(frozen=True)
class FactRecall(Task):
    """Content-based retrieval over a long context: facts scattered, questions at the end.

    ``num_facts`` fact tokens, each naming one key and its value (token
    ``1 + num_keys + key·num_values + value``; keys distinct within a sequence), sit at
    random positions of ``seq_len − num_facts`` blanks (token 0); the last
    ``num_facts`` positions ask every key once, in random order (token ``1 + key``),
    and their target is the value (a class in ``[0, num_values)``). Only the question
    positions are scored. One attention hop from the question to the fact answers it,
    so the task measures how far back a mixer can *find* content — the probe of
    "Efficient Content-Based Sparse Attention with Routing Transformers" (Roy, Saffar,
    Vaswani & Grangier, 2021) — not whether it can build a multi-step circuit.

    Options: ``seq_len``, ``num_facts``, ``num_keys``, ``num_values``.
    """

    seq_len: int = 1024
    num_facts: int = 8
    num_keys: int = 16
    num_values: int = 8

    def __post_init__(self):
        positive(self.name, seq_len=self.seq_len, num_facts=self.num_facts, num_keys=self.num_keys,
                 num_values=self.num_values)
        if self.num_keys < self.num_facts:
            raise ValueError(f"fact_recall: num_keys={self.num_keys} must be at least num_facts={self.num_facts}")
        if self.seq_len < 2 * self.num_facts:
            raise ValueError(f"fact_recall: seq_len={self.seq_len} must be at least 2·num_facts={2 * self.num_facts}")

    def fact_token(self, key, value):
        return 1 + self.num_keys + key * self.num_values + value

    def io(self) -> TaskIO:
        return TaskIO(vocab_size=1 + self.num_keys * (1 + self.num_values), output_dim=self.num_values,
                      pooling="none")

    def chance(self) -> float:
        return 1.0 / self.num_values

    def make_batch(self, rng, split, index, batch_size):
        n, L = self.num_facts, self.seq_len
        rows = np.arange(batch_size)[:, None]
        keys = np.argsort(rng.random((batch_size, self.num_keys)), axis=1)[:, :n]
        values = rng.integers(0, self.num_values, (batch_size, n))
        positions = np.argsort(rng.random((batch_size, L - n)), axis=1)[:, :n]
        order = np.argsort(rng.random((batch_size, n)), axis=1)             # which fact each question asks
        inputs = np.zeros((batch_size, L), np.int32)
        inputs[rows, positions] = self.fact_token(keys, values)
        inputs[:, L - n:] = 1 + keys[rows, order]
        targets = np.zeros_like(inputs)
        targets[:, L - n:] = values[rows, order]
        weights = np.zeros(inputs.shape, np.float32)
        weights[:, L - n:] = 1.0
        return {"inputs": inputs, "targets": targets, "weights": weights}
