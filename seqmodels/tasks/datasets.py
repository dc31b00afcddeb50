"""Small real data sets shipped inside optional packages (no download at run time).

``digits``: scikit-learn's 8×8 handwritten digits ("Optical Recognition of
Handwritten Digits", Alpaydin & Kaynak, 1998; 1,797 images, 10 classes) as images
``(B, 8, 8, 1)`` scaled to [0, 1]; 1-D mixers read them as pixel sequences of length
64 in row-major order. A fixed 80/20 split (the same for every seed).
Needs the ``data`` extra (``pip install seqmodels[data]``).

``ucr``: univariate or multivariate time-series classification sets that ``aeon``
ships inside its package (from the UCR/UEA archive, "The UCR Time Series
Archive", Dau et al., 2019), with their official train/test split, as ``(B, length,
channels)`` z-scored with training statistics. Needs ``aeon`` installed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .base import Task, TaskIO, epoch_indices, fixed_batch, register_task

# aeon's loaders of data sets it ships (equal-length ones only)
UCR_LOADERS = {
    "ArrowHead": "load_arrow_head",
    "BasicMotions": "load_basic_motions",
    "GunPoint": "load_gunpoint",
    "ItalyPowerDemand": "load_italy_power_demand",
}


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this task needs the optional package {module.split('.')[0]!r}: "
                          f"pip install 'seqmodels[{extra}]'") from err


class ArrayDataset(Task):
    """A finite data set with a train and a test split held in memory.

    Training batches read shuffled epochs (``epoch_indices``); the test split is read
    in order, its last batch padded with zero weights."""

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def batch(self, split, index, batch_size, seed):
        self.check_split(split)
        x_train, y_train, x_test, y_test = self.arrays()
        if split == "train":
            rows = epoch_indices(len(x_train), batch_size, seed, index)
            return {"inputs": x_train[rows], "targets": y_train[rows],
                    "weights": np.ones(batch_size, np.float32)}
        return fixed_batch(x_test, y_test, index, batch_size)

    def eval_size(self, split):
        return len(self.arrays()[3])

    def chance(self) -> float:
        """The test accuracy of always predicting the most frequent training class."""
        _, y_train, _, y_test = self.arrays()
        return float(np.mean(y_test == np.bincount(y_train).argmax()))


@lru_cache(maxsize=None)
def _digits():
    datasets = _require("sklearn.datasets", "data")
    digits = datasets.load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, test = perm[:cut], perm[cut:]
    return images[train], labels[train], images[test], labels[test]


@register_task("digits")
@dataclass(frozen=True)
class Digits(ArrayDataset):
    """scikit-learn's 8×8 digits (no options)."""

    def io(self) -> TaskIO:
        return TaskIO(input_dim=1, output_dim=10, pooling="mean")

    def arrays(self):
        return _digits()


@lru_cache(maxsize=None)
def _ucr(dataset: str):
    aeon_datasets = _require("aeon.datasets", "aeon")
    loader = getattr(aeon_datasets, UCR_LOADERS[dataset])
    (x_train, y_train), (x_test, y_test) = (loader(split=s) for s in ("train", "test"))
    x_train, x_test = (np.asarray(x, np.float32).transpose(0, 2, 1) for x in (x_train, x_test))
    mean, std = x_train.mean(axis=(0, 1)), x_train.std(axis=(0, 1)) + 1e-6
    classes = sorted(set(np.asarray(y_train).tolist()))
    index = {c: i for i, c in enumerate(classes)}
    y_train, y_test = (np.array([index[c] for c in np.asarray(y).tolist()], np.int32) for y in (y_train, y_test))
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


@register_task("ucr")
@dataclass(frozen=True)
class UCR(ArrayDataset):
    """Option: ``dataset``, one of the sets aeon ships (see ``UCR_LOADERS``)."""

    dataset: str = "GunPoint"

    def __post_init__(self):
        if self.dataset not in UCR_LOADERS:
            raise ValueError(f"ucr: unknown dataset {self.dataset!r}; shipped ones: {', '.join(UCR_LOADERS)}")

    def io(self) -> TaskIO:
        x_train, y_train, _, _ = self.arrays()
        return TaskIO(input_dim=x_train.shape[-1], output_dim=int(y_train.max()) + 1, pooling="mean")

    def arrays(self):
        return _ucr(self.dataset)
