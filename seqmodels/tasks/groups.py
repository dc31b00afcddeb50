"""Group word problems (state tracking), after "The Illusion of State in State-Space
Models" (Merrill, Petty & Sabharwal, 2024) and "Unlocking State-Tracking in Linear
RNNs Through Negative Eigenvalues" (Grazzi et al., 2025).

Tokens are elements ``g_1 … g_L`` of a finite group; the target at step ``t`` is the
prefix product ``s_t = g_t ∘ s_{t-1}`` (``s_0`` the identity), every step scored.
Groups are permutation groups: ``parity`` (Z2, tokens "stay"/"flip"), ``s3`` (all 6
permutations of 3 items, the smallest non-abelian group) and ``a5`` (the 60 even
permutations of 5 items, the smallest non-solvable group: beyond TC⁰, so no fixed
depth of a diagonal linear recurrence tracks it). Models train at ``length`` and
are tested at ``length`` and at each of ``test_lengths`` (length generalization).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .base import Task, TaskIO, positive, register_task

GROUPS = ("parity", "s3", "a5")


def _is_even(perm: tuple[int, ...]) -> bool:
    inversions = sum(a > b for a, b in itertools.combinations(perm, 2))
    return inversions % 2 == 0


@lru_cache(maxsize=None)
def group_elements(group: str) -> tuple[tuple[int, ...], ...]:
    """The group's permutations in a fixed order; index 0 is the identity."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; valid groups: {', '.join(GROUPS)}")
    degree = {"parity": 2, "s3": 3, "a5": 5}[group]
    perms = list(itertools.permutations(range(degree)))
    if group == "a5":
        perms = [p for p in perms if _is_even(p)]
    return tuple(perms)


def compose(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """``a ∘ b``: apply ``b`` first, then ``a``."""
    return tuple(a[i] for i in b)


@lru_cache(maxsize=None)
def multiplication_table(group: str) -> np.ndarray:
    """``table[i, j]`` = index of ``element_i ∘ element_j``."""
    elements = group_elements(group)
    index = {p: i for i, p in enumerate(elements)}
    return np.array([[index[compose(a, b)] for b in elements] for a in elements], np.int32)


@register_task("group_word")
@dataclass(frozen=True)
class GroupWordProblem(Task):
    """Options: ``group`` (``parity``, ``s3`` or ``a5``), ``length`` (training and
    ``"test"`` length), ``test_lengths`` (longer lengths, each a split ``"test_L<n>"``)."""

    group: str = "s3"
    length: int = 16
    test_lengths: tuple[int, ...] = (64,)

    def __post_init__(self):
        group_elements(self.group)
        positive(self.name, length=self.length, **{f"test_lengths[{i}]": n for i, n in enumerate(self.test_lengths)})

    @property
    def order(self) -> int:
        return len(group_elements(self.group))

    def io(self) -> TaskIO:
        return TaskIO(vocab_size=self.order, output_dim=self.order, pooling="none")

    def chance(self) -> float:
        return 1.0 / self.order

    def eval_splits(self) -> tuple[str, ...]:
        return ("test",) + tuple(f"test_L{n}" for n in self.test_lengths if n != self.length)

    def split_length(self, split: str) -> int:
        return int(split[len("test_L"):]) if split.startswith("test_L") else self.length

    def make_batch(self, rng, split, index, batch_size):
        table = multiplication_table(self.group)
        inputs = rng.integers(0, self.order, (batch_size, self.split_length(split))).astype(np.int32)
        targets = np.empty_like(inputs)
        state = np.zeros(batch_size, np.int32)
        for t in range(inputs.shape[1]):
            state = table[inputs[:, t], state]
            targets[:, t] = state
        return {"inputs": inputs, "targets": targets, "weights": np.ones(inputs.shape, np.float32)}
