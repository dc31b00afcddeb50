"""The shared input pipeline of file-backed data sets: locate, check, decode once, read by index.

1. **Locate.** A task reads the folder ``data_dir`` (its option; empty means
   ``$SEQMODELS_DATA/<task name>``, ``./data/<task name>`` when the variable is unset).
2. **Check.** Missing or malformed files raise one ``DatasetFilesError`` that names the
   folder, the files expected and where the data set is published. Tasks check while
   building the model (``Task.io()``), so the error comes before anything compiles, and
   the command line prints it as one line.
3. **Decode once.** Published formats (pickles, IDX, TSV, text folders, WAV, PNG) are
   decoded into numpy arrays saved as ``.npy`` files in a cache folder
   (``$SEQMODELS_CACHE``, else ``<data_dir>/.seqmodels_cache``, else
   ``~/.cache/seqmodels`` for a read-only ``data_dir``), named by the task, the
   options that change decoding and the size and modification time of the sources;
   later runs (and every process of a multi-host run) open them memory-mapped, so only
   the rows a batch needs are read from disk. A cache is written to a temporary folder
   and renamed into place, so concurrent writers cannot leave a half-written one.
4. **Read by index.** Batch ``i`` of a split is a pure function of ``(seed, split, i)``:
   training rows come from shuffled epochs (``epoch_indices``), evaluation splits are
   read in order. A resumed run therefore reads exactly the batches an uninterrupted one
   would, with no iterator state to checkpoint. Each process of a multi-host run reads
   only the rows of a global batch its devices hold (``batch_part(..., part)``): the
   global row indices are computed (a permutation, cheap) and only ``part`` of them is read.

Why not Grain. Grain's ``IndexSampler`` + ``ShardOptions`` give the same thing (a
record index as a pure function of the step, per-process shards) plus worker processes
and a checkpointable iterator. Here batches already are a pure function of the step, so
there is no iterator state to save (the loop's ``data_position`` is the whole state),
the project's synthetic and file tasks share one path, and the batches are gathered from
memory-mapped arrays (a few microseconds per row), which leaves little for worker
processes to hide; per-batch work that does cost (bouncing-digit videos, pixel
normalization) is numpy on the gathered rows. Grain would add a dependency and a
second way of drawing batches for a gain we could not measure on these loaders.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np

from ..base import Task, epoch_indices

CACHE_VERSION = 1
DONE_FILE = "complete.json"


class DatasetFilesError(FileNotFoundError):
    """A data set folder is missing, incomplete or malformed (one message, no traceback needed)."""


def data_folder(data_dir: str, name: str) -> Path:
    """``data_dir``, or ``$SEQMODELS_DATA/<name>`` (``./data/<name>`` if unset) when empty."""
    if data_dir:
        return Path(data_dir).expanduser()
    return Path(os.environ.get("SEQMODELS_DATA", "data")).expanduser() / name


def fingerprint(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """``(name, size, mtime_ns)`` of each path: a cache made from other files is not reused."""
    out = []
    for path in paths:
        stat = path.stat()
        out.append((path.name, stat.st_size, stat.st_mtime_ns))
    return out


def cache_root(folder: Path) -> Path:
    """``$SEQMODELS_CACHE``, else ``<folder>/.seqmodels_cache``, else (a read-only data
    folder) ``~/.cache/seqmodels``."""
    if os.environ.get("SEQMODELS_CACHE"):
        return Path(os.environ["SEQMODELS_CACHE"]).expanduser()
    if os.access(folder, os.W_OK):
        return folder / ".seqmodels_cache"
    return Path.home() / ".cache" / "seqmodels"


class CacheWriter:
    """The folder a cache entry is decoded into. Large arrays are filled row by row in a
    memory-mapped ``.npy`` (``stack``), so decoding never holds a whole data set in memory."""

    def __init__(self, folder: Path):
        self.folder = folder

    def stack(self, name: str, items: Sequence, read: Callable[[Any], np.ndarray], row_shape: tuple[int, ...],
              dtype) -> None:
        """Array ``name`` of shape ``(len(items),) + row_shape``: row ``i`` is ``read(items[i])``."""
        out = np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype,
                                        shape=(len(items),) + tuple(row_shape))
        for i, item in enumerate(items):
            out[i] = read(item)
        out.flush()
        del out


def cached_arrays(folder: Path, name: str, key: dict, decode: Callable[[CacheWriter], dict[str, np.ndarray]]
                  ) -> dict[str, np.ndarray]:
    """The arrays ``decode`` writes (``CacheWriter.stack``) or returns, decoded at most once
    per ``key`` and returned memory-mapped (read-only) from
    ``cache_root(folder)/<name>-<hash of key>/``."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, str(folder.resolve()), key], sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]
    root = cache_root(folder)
    target = root / f"{name}-{digest}"
    if not (target / DONE_FILE).is_file():
        scratch = root / f".partial-{digest}-{uuid.uuid4().hex}"
        scratch.mkdir(parents=True)
        try:
            for array_name, array in decode(CacheWriter(scratch)).items():
                np.save(scratch / f"{array_name}.npy", np.ascontiguousarray(array))
            (scratch / DONE_FILE).write_text(json.dumps({"task": name, "key": key}, default=str))
            os.rename(scratch, target)
        except OSError:
            if not (target / DONE_FILE).is_file():
                raise
        finally:   # an error, or another process that finished first: drop this copy
            shutil.rmtree(scratch, ignore_errors=True)
    return {p.stem: np.load(p, mmap_mode="r") for p in sorted(target.glob("*.npy"))}


def part_range(part: slice, batch_size: int) -> slice:
    """``part`` of a batch of ``batch_size`` rows as a plain ``slice(start, stop)``, checked."""
    start, stop, step = part.indices(batch_size)
    if step != 1 or stop <= start:
        raise ValueError(f"part={part} must be a non-empty contiguous slice of the batch's {batch_size} rows")
    return slice(start, stop)


@functools.lru_cache(maxsize=16)
def held_out(num_examples: int, *fractions: float, seed: int = 42) -> tuple[np.ndarray, ...]:
    """``(rest, part_1, ...)``: fixed random parts of ``fractions`` of the rows held out,
    each sorted (the same for every run; the papers' ``val_split`` with seed 42)."""
    perm = np.random.default_rng(seed).permutation(num_examples)
    sizes = [int(round(num_examples * f)) for f in fractions]
    cuts = np.cumsum([num_examples - sum(sizes)] + sizes)[:-1]
    return tuple(np.sort(part) for part in np.split(perm, cuts))


_OPENED: dict[Task, dict[str, np.ndarray]] = {}


@dataclass(frozen=True)
class FileDataset(Task):
    """A data set read from files in its published format (see the module docstring).

    Subclasses set ``published`` (where to get it), ``expected`` (the files, in words)
    and implement ``decode(folder, writer)`` (the arrays to cache, returned or written
    with ``writer.stack``; raise ``self.error(...)`` on anything missing or malformed),
    ``split_rows(arrays, split)`` (the inputs and targets of a split) and
    ``prepare(inputs, targets)`` (the stored rows as a batch: scaling, layout). Options that do not change decoding are left out of the cache key
    by listing them in ``batch_options``.
    """

    published: ClassVar[str] = ""
    expected: ClassVar[str] = ""
    batch_options: ClassVar[tuple[str, ...]] = ()

    data_dir: str = ""

    # --- what subclasses provide
    def decode(self, folder: Path, writer: CacheWriter) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sources(self, folder: Path) -> list[Path]:
        """The files or folders whose size and modification time key the cache (default:
        the folder, whose time changes when files are added or removed)."""
        return [folder]

    def split_rows(self, arrays: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
        return arrays[f"{split}_inputs"], arrays[f"{split}_targets"]

    def prepare(self, inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        return {"inputs": np.asarray(inputs), "targets": np.asarray(targets, np.int32),
                "weights": np.ones(len(targets), np.float32)}

    # --- the shared machinery
    @property
    def folder(self) -> Path:
        return data_folder(self.data_dir, self.name)

    def error(self, problem: str) -> DatasetFilesError:
        return DatasetFilesError(
            f"task {self.name!r}: {problem} (data folder {self.folder}; expected {self.expected}; "
            f"the data set is published at {self.published}; give its folder with --task.options.data_dir "
            f"or $SEQMODELS_DATA/{self.name})")

    def require(self, *paths: Path) -> None:
        missing = [str(p.relative_to(self.folder)) for p in paths if not p.exists()]
        if missing:
            raise self.error(f"missing {', '.join(missing)}")

    def arrays(self) -> dict[str, np.ndarray]:
        """The decoded arrays (decoding them into the cache on first use), memory-mapped."""
        if self not in _OPENED:
            folder = self.folder
            if not folder.is_dir():
                raise self.error("the folder does not exist")
            key = {f.name: getattr(self, f.name) for f in fields(self)
                   if f.name not in ("data_dir",) + self.batch_options}
            key["sources"] = fingerprint(self.sources(folder))
            _OPENED[self] = cached_arrays(folder, self.name, key, lambda writer: self.decode(folder, writer))
        return _OPENED[self]

    def rows(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        self.check_split(split)
        return self.split_rows(self.arrays(), split)

    def batch(self, split: str, index: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        """Batch ``index`` of ``split``: shuffled epochs for training, the split in order
        (its last batch padded with zero weights) for evaluation."""
        return self.batch_part(split, index, batch_size, seed, slice(None))

    def batch_part(self, split, index, batch_size, seed, part):
        inputs, targets = self.rows(split)
        part = part_range(part, batch_size)
        if split == "train":
            rows, valid = epoch_indices(len(targets), batch_size, seed, index), np.ones(batch_size, bool)
        else:
            rows = np.arange(index * batch_size, (index + 1) * batch_size)
            valid = rows < len(targets)
            rows = np.where(valid, rows, 0)
        rows, valid = rows[part], valid[part]
        batch = self.prepare(inputs[rows], targets[rows])
        batch["weights"] = batch["weights"] * valid.reshape(valid.shape + (1,) * (batch["weights"].ndim - 1))
        return batch

    def eval_size(self, split: str) -> int:
        return len(self.rows(split)[1])

    def eval_splits(self) -> tuple[str, ...]:
        return ("val", "test")

    def chance(self) -> float:
        """The test accuracy of always predicting the most frequent training class."""
        train = np.asarray(self.rows("train")[1])
        test = np.asarray(self.rows("test")[1])
        return float(np.mean(test == np.bincount(train.reshape(-1)).argmax()))
