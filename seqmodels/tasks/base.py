"""The Task protocol and the registry of tasks.

A task is a frozen dataclass whose fields are its options. It yields numpy batches
that are a pure function of ``(split, index, batch_size, seed)``, so a run that is
killed and resumed sees exactly the batches it would have seen, and needs no
download. Every batch is a dict:

    inputs   int32 token ids (B, ...) or float32 features (B, ..., input_dim)
    targets  int32 class ids, (B,) pooled or (B, L) per step, for ``loss="cross_entropy"``;
             float32 (B, output_dim) or (B, L, output_dim) for ``loss="mse"``
    weights  float32, the shape of the targets' leading axes ((B,) or (B, L)):
             which targets count (0 for padding, non-query positions, ...)

``io()`` tells the model what it needs (vocabulary or feature size, output size,
pooling); ``metric`` names the reported metric ("accuracy" or "mse") and ``chance()``
its value for a predictor that ignores the inputs.

Registration::

    @register_task("mqar")
    @dataclass(frozen=True)
    class MQAR(Task): ...

    task = build_task("mqar", num_pairs=8)
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

LOSSES = ("cross_entropy", "mse")


@dataclass(frozen=True)
class TaskIO:
    """What a model needs to fit a task: exactly one of ``vocab_size`` (token ids in)
    or ``input_dim`` (features in), the output size, and the pooling of outputs
    (``"none"`` for per-step targets, ``"mean"`` or ``"last"`` for one target per example)."""

    output_dim: int
    pooling: str
    vocab_size: int | None = None
    input_dim: int | None = None


@dataclass(frozen=True)
class Task:
    """Base class of every task (subclasses are frozen dataclasses of options)."""

    name: ClassVar[str] = ""
    loss: ClassVar[str] = "cross_entropy"
    metric: ClassVar[str] = "accuracy"
    requires_causal: ClassVar[bool] = False   # targets are future inputs (forecasting)

    def io(self) -> TaskIO:  # pragma: no cover - abstract
        raise NotImplementedError

    def batch(self, split: str, index: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        """Batch number ``index`` of ``split``: a pure function of the arguments."""
        self.check_split(split)
        return self.make_batch(split_rng(seed, split, index), split, index, batch_size)

    def batch_part(self, split: str, index: int, batch_size: int, seed: int, part: slice) -> dict[str, np.ndarray]:
        """Rows ``part`` of batch ``index`` (the rows one process of a multi-host run holds).
        Equal to ``batch(...)[part]``; file-backed tasks read only those rows."""
        return {key: value[part] for key, value in self.batch(split, index, batch_size, seed).items()}

    def make_batch(self, rng: np.random.Generator, split: str, index: int,
                   batch_size: int) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def eval_splits(self) -> tuple[str, ...]:
        """Splits that evaluation reports (default: one held-out ``"test"`` split)."""
        return ("test",)

    def eval_size(self, split: str) -> int | None:
        """Examples in a finite evaluation split (real data sets); ``None`` for synthetic
        streams, which are evaluated on a fixed number of batches."""
        return None

    def derived_metrics(self, results: dict[str, float]) -> dict[str, float]:
        """Metrics computed from an evaluation's ``<split>/loss`` and ``<split>/<metric>``
        (e.g. bits per byte from a loss in nats); none by default."""
        return {}

    def chance(self) -> float:
        """The metric of a predictor that ignores the inputs."""
        raise NotImplementedError  # pragma: no cover

    def check_split(self, split: str) -> None:
        valid = ("train",) + self.eval_splits()
        if split not in valid:
            raise ValueError(f"task {self.name!r} has no split {split!r}; valid splits: {', '.join(valid)}")


def split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """A generator determined by ``(seed, split, index)`` alone (stable across runs and platforms)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative; got seed={seed}, index={index}")
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def epoch_indices(num_examples: int, batch_size: int, seed: int, index: int) -> np.ndarray:
    """Rows of batch ``index`` when a finite data set is read in shuffled epochs.

    Position ``p`` of the stream is row ``perm_e[p mod N]`` of epoch ``e = p // N``'s
    permutation, drawn from ``(seed, e)``; batch ``index`` covers positions
    ``[index·B, (index+1)·B)``, so any batch is computed without replaying the stream.
    """
    positions = np.arange(index * batch_size, (index + 1) * batch_size)
    epochs, offsets = np.divmod(positions, num_examples)
    rows = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, 0x5EED, int(epoch)]).permutation(num_examples)
        rows[epochs == epoch] = perm[offsets[epochs == epoch]]
    return rows


def fixed_batch(inputs: np.ndarray, targets: np.ndarray, index: int, batch_size: int) -> dict[str, np.ndarray]:
    """Batch ``index`` of a finite evaluation set in order; the last one is padded
    with zero-weight copies of row 0 so every batch has the same shape."""
    rows = np.arange(index * batch_size, (index + 1) * batch_size)
    valid = rows < len(inputs)
    rows = np.where(valid, rows, 0)
    return {"inputs": inputs[rows], "targets": targets[rows], "weights": valid.astype(np.float32)}


_REGISTRY: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make a task buildable by ``name``."""

    def decorate(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a task named {name!r} is already registered ({_REGISTRY[name].__name__})")
        if not (isinstance(cls, type) and issubclass(cls, Task) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"{cls!r} must be a dataclass subclassing seqmodels.tasks.Task")
        if cls.loss not in LOSSES:
            raise ValueError(f"task {name!r}: loss must be one of {LOSSES}; got {cls.loss!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def task_names() -> list[str]:
    """Names of all registered tasks, sorted."""
    return sorted(_REGISTRY)


def task_class(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(task_names())}")
    return _REGISTRY[name]


def task_options(name: str) -> dict[str, Any]:
    """Option names of task ``name`` with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(task_class(name))}


def build_task(name: str, **options) -> Task:
    """Construct task ``name``; unknown options raise ValueError listing the valid ones."""
    cls = task_class(name)
    valid = task_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in valid.items())
        raise ValueError(f"unknown option(s) {unknown} for task {name!r}; valid options: {listed}")
    return cls(**options)


def positive(task: str, **values: int) -> None:
    """Raise a clear error unless every named value is a positive integer."""
    for key, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"task {task!r}: {key} must be a positive integer; got {value!r}")
