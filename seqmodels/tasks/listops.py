"""ListOps, after "ListOps: A Diagnostic Dataset for Latent Tree Learning" (Nangia &
Bowman, 2018) as used in "Long Range Arena" (Tay et al., 2021); our own generator.

An example is a nested prefix expression over the digits 0–9 with the operators
``MAX``, ``MIN``, ``MED`` (the lower median: ``sorted(args)[(n - 1) // 2]``) and ``SM``
(sum modulo 10), e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]``; the label is its value (10
classes). Sequences are left-padded to ``max_length`` so the closing bracket is the
last token and a causal model reads the value off the last position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Task, TaskIO, positive, register_task

OPERATORS = ("MAX", "MIN", "MED", "SM")
PAD, CLOSE = 0, 15
TOKENS = ("<pad>",) + tuple(str(d) for d in range(10)) + tuple(f"[{op}" for op in OPERATORS) + ("]",)


def digit_token(d: int) -> int:
    return 1 + d


def operator_token(op: str) -> int:
    return 11 + OPERATORS.index(op)


def apply_operator(op: str, args: list[int]) -> int:
    if op == "MAX":
        return max(args)
    if op == "MIN":
        return min(args)
    if op == "MED":
        return sorted(args)[(len(args) - 1) // 2]
    return sum(args) % 10


def evaluate(tokens) -> int:
    """The value of a token sequence (padding ignored): a plain stack evaluator."""
    stack: list[list] = [[]]
    for tok in (int(t) for t in tokens if t != PAD):
        if 1 <= tok <= 10:
            stack[-1].append(tok - 1)
        elif tok == CLOSE:
            op, *args = stack.pop()
            stack[-1].append(apply_operator(op, args))
        else:
            stack.append([OPERATORS[tok - 11]])
    (value,) = stack[0]
    return value


@register_task("listops")
@dataclass(frozen=True)
class ListOps(Task):
    """Options: ``max_depth`` (nesting), ``max_args`` (operands per operator, at least 2),
    ``max_length`` (tokens; longer expressions are redrawn)."""

    max_depth: int = 4
    max_args: int = 5
    max_length: int = 128

    def __post_init__(self):
        positive(self.name, max_depth=self.max_depth, max_args=self.max_args, max_length=self.max_length)
        if self.max_args < 2 or self.max_length < 4:
            raise ValueError(f"listops: need max_args ≥ 2 and max_length ≥ 4; got {self.max_args}, {self.max_length}")

    def io(self) -> TaskIO:
        return TaskIO(vocab_size=len(TOKENS), output_dim=10, pooling="last")

    def chance(self) -> float:
        return 0.1

    def _expression(self, rng, depth: int) -> tuple[list[int], int]:
        if depth > 0 and (depth >= self.max_depth or rng.random() < 0.25 + 0.15 * depth):
            d = int(rng.integers(0, 10))
            return [digit_token(d)], d
        op = OPERATORS[int(rng.integers(0, len(OPERATORS)))]
        tokens, args = [operator_token(op)], []
        for _ in range(int(rng.integers(2, self.max_args + 1))):
            sub_tokens, value = self._expression(rng, depth + 1)
            tokens += sub_tokens
            args.append(value)
        return tokens + [CLOSE], apply_operator(op, args)

    def make_batch(self, rng, split, index, batch_size):
        inputs = np.full((batch_size, self.max_length), PAD, np.int32)
        targets = np.empty(batch_size, np.int32)
        for i in range(batch_size):
            tokens, value = self._expression(rng, 0)
            while len(tokens) > self.max_length:
                tokens, value = self._expression(rng, 0)
            inputs[i, self.max_length - len(tokens):] = tokens
            targets[i] = value
        return {"inputs": inputs, "targets": targets, "weights": np.ones(batch_size, np.float32)}
