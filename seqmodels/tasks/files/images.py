"""Image classification sets in their published formats.

``cifar10``: "Learning Multiple Layers of Features from Tiny Images" (Krizhevsky, 2009),
the *CIFAR-10 python version*: ``cifar-10-batches-py/data_batch_1..5`` and
``test_batch``, pickled dicts whose ``data`` is uint8 ``(N, 3072)`` (1024 R, then G, then
B values, rows of 32 pixels) and ``labels`` a list of ints. Inputs are images
``(B, 32, 32, C)``, which 1-D mixers read as 1024 pixels in raster order (sCIFAR, 3
channels, per-channel normalization as state-spaces/s4), or with ``grayscale=True``
one luminance channel ``0.2989 R + 0.587 G + 0.114 B`` normalized by mean 122.6/255,
std 61.0/255 (LRA Image, as state-spaces/s4 ``src/dataloaders/basic.py``). 10% of the
training images (fixed, seed 42) are held out as the ``val`` split.

``mnist``: "Gradient-based learning applied to document recognition" (LeCun et al.,
1998), the IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).
Pixels scaled to [0, 1]; images ``(B, 28, 28, 1)`` (sMNIST as 784 steps), or with
``permute=True`` the sequence ``(B, 784, 1)`` under one fixed permutation (psMNIST;
``numpy.random.RandomState(92916)``, the seed in state-spaces/s4). 10% held out as ``val``.

``image_folder``: one sub-folder per class of PNG/JPEG files (``<class>/<file>``, the
layout of ImageNet and torchvision's ``ImageFolder``) with ``train/`` and ``val/``
splits; classes are the sorted sub-folder names of ``train/``. Images are decoded with
Pillow, converted to RGB and resized to ``image_size`` squares once, into the cache.

``lra_pathfinder``: "Long Range Arena" (Tay et al., 2021) Pathfinder as released in
``lra_release``: ``pathfinder{32,64,128,256}/curv_contour_length_14/metadata/<n>.npy``
(text lines ``imgs/<d> sample_<k>.png <i> <label> ...``) and the PNGs under ``imgs/``,
read as state-spaces/s4 ``PathFinderDataset`` does; grayscale scaled to [-1, 1],
``(B, R, R, 1)`` (R² steps for 1-D mixers); a fixed random 80/10/10 train/val/test split
(seed 42). Path-X is ``resolution=128``.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..base import TaskIO, register_task
from .pipeline import FileDataset, held_out

CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR_STD = np.array([0.247, 0.243, 0.261], np.float32)
GRAY_WEIGHTS = np.array([0.2989, 0.587, 0.114], np.float32)
GRAY_MEAN, GRAY_STD = 122.6 / 255.0, 61.0 / 255.0
PSMNIST_SEED = 92916
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPEG", ".PNG", ".JPG")


class HeldOutValidation:
    """``train`` / ``val`` carved from the stored training rows (10%, seed 42); ``test`` as stored."""

    val_fraction: ClassVar[float] = 0.1

    def split_rows(self, arrays, split):
        if split == "test":
            return arrays["test_inputs"], arrays["test_targets"]
        train, val = held_out(len(arrays["train_targets"]), self.val_fraction)
        rows = train if split == "train" else val
        return _Rows(arrays["train_inputs"], rows), _Rows(arrays["train_targets"], rows)


class _Rows:
    """A view of ``array`` restricted to ``rows`` that reads only the rows indexed."""

    def __init__(self, array: np.ndarray, rows: np.ndarray):
        self.array, self.rows = array, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        return self.array[self.rows[index]]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.array[self.rows], dtype)


def _unpickle(task: FileDataset, path: Path) -> tuple[np.ndarray, np.ndarray]:
    task.require(path)
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")   # written by Python 2: the keys come back as bytes
        batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
        data = np.asarray(batch["data"], np.uint8)
        labels = np.asarray(batch["labels"], np.int64)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a malformed file
        raise task.error(f"{path.name} is not a CIFAR-10 python batch ({type(err).__name__}: {err})") from err
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise task.error(f"{path.name}: data must be uint8 (N, 3072) with N labels; got {data.shape} "
                         f"and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.uint8)


@register_task("cifar10")
@dataclass(frozen=True)
class Cifar10(HeldOutValidation, FileDataset):
    """Options: ``data_dir`` (holding ``cifar-10-batches-py/``, or that folder itself), ``grayscale``."""

    published: ClassVar[str] = "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 python version)"
    expected: ClassVar[str] = "cifar-10-batches-py/data_batch_1..5 and test_batch (python pickles)"
    batch_options: ClassVar[tuple[str, ...]] = ("grayscale",)

    grayscale: bool = False

    def batches_folder(self, folder: Path) -> Path:
        nested = folder / "cifar-10-batches-py"
        return nested if nested.is_dir() else folder

    def sources(self, folder):
        return sorted(self.batches_folder(folder).glob("*_batch*"))

    def decode(self, folder, writer):
        root = self.batches_folder(folder)
        train = [_unpickle(self, root / f"data_batch_{i}") for i in range(1, 6)]
        test_x, test_y = _unpickle(self, root / "test_batch")
        return {"train_inputs": np.concatenate([x for x, _ in train]),
                "train_targets": np.concatenate([y for _, y in train]),
                "test_inputs": test_x, "test_targets": test_y}

    def io(self) -> TaskIO:
        self.arrays()
        return TaskIO(input_dim=1 if self.grayscale else 3, output_dim=10, pooling="mean")

    def prepare(self, inputs, targets):
        pixels = np.asarray(inputs, np.float32) / 255.0
        if self.grayscale:
            pixels = ((pixels @ GRAY_WEIGHTS)[..., None] - GRAY_MEAN) / GRAY_STD
        else:
            pixels = (pixels - CIFAR_MEAN) / CIFAR_STD
        return super().prepare(pixels, targets)


def read_idx(task: FileDataset, path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (``path`` or ``path.gz``) with ``ndim`` dimensions."""
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")
    task.require(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:
        raise task.error(f"{path.name} is not an IDX file of {ndim}-D unsigned bytes (magic {magic:#x}, "
                         f"expected {0x0800 + ndim:#x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise task.error(f"{path.name}: header says {shape} ({int(np.prod(shape))} bytes) but holds {body.size}")
    return body.reshape(shape)


def mnist_arrays(task: FileDataset, folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(task, folder / f"{prefix}-images-idx3-ubyte", 3)
        labels = read_idx(task, folder / f"{prefix}-labels-idx1-ubyte", 1)
        if len(images) != len(labels):
            raise task.error(f"{prefix}: {len(images)} images but {len(labels)} labels")
        arrays[f"{split}_inputs"], arrays[f"{split}_targets"] = images, labels
    return arrays


@register_task("mnist")
@dataclass(frozen=True)
class Mnist(HeldOutValidation, FileDataset):
    """Options: ``data_dir`` (the four IDX files, gzipped or not), ``permute`` (psMNIST)."""

    published: ClassVar[str] = "http://yann.lecun.com/exdb/mnist/ (IDX files)"
    expected: ClassVar[str] = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                               "t10k-labels-idx1-ubyte (each optionally .gz)")
    batch_options: ClassVar[tuple[str, ...]] = ("permute",)

    permute: bool = False

    def sources(self, folder):
        return sorted(folder.glob("*-idx?-ubyte*"))

    def decode(self, folder, writer):
        return mnist_arrays(self, folder)

    def io(self) -> TaskIO:
        self.arrays()
        return TaskIO(input_dim=1, output_dim=10, pooling="mean")

    def prepare(self, inputs, targets):
        pixels = np.asarray(inputs, np.float32)[..., None] / 255.0
        if self.permute:
            order = np.random.RandomState(PSMNIST_SEED).permutation(28 * 28)
            pixels = pixels.reshape(len(pixels), 28 * 28, 1)[:, order]
        return super().prepare(pixels, targets)


def load_image(task: FileDataset, path: Path, mode: str, size: int | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            return np.asarray(image, np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise task.error(f"cannot decode image {path} ({err})") from err


@register_task("image_folder")
@dataclass(frozen=True)
class ImageFolder(FileDataset):
    """Options: ``data_dir`` (with ``train/<class>/*`` and ``val/<class>/*``), ``image_size``."""

    published: ClassVar[str] = ("any class-per-folder image set, e.g. ImageNet https://image-net.org "
                                "(train/ and val/ sorted into class folders)")
    expected: ClassVar[str] = "train/<class>/*.png|jpg and val/<class>/*.png|jpg"

    image_size: int = 64

    def eval_splits(self):
        return ("val",)

    def classes(self, folder: Path) -> list[str]:
        self.require(folder / "train", folder / "val")
        names = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
        if not names:
            raise self.error("train/ has no class sub-folders")
        return names

    def sources(self, folder):
        return [folder / split / name for split in ("train", "val") for name in self.classes(folder)
                if (folder / split / name).is_dir()]

    def decode(self, folder, writer):
        names = self.classes(folder)
        arrays = {"classes": np.array(names)}
        for split in ("train", "val"):
            files = [(label, path) for label, name in enumerate(names)
                     for path in sorted((folder / split / name).glob("*")) if path.suffix in IMAGE_SUFFIXES]
            if not files:
                raise self.error(f"{split}/ holds no .png or .jpg images in class folders {names}")
            size = (self.image_size, self.image_size, 3)
            writer.stack(f"{split}_inputs", [p for _, p in files],
                         lambda p: load_image(self, p, "RGB", self.image_size), size, np.uint8)
            arrays[f"{split}_targets"] = np.array([label for label, _ in files], np.int32)
        return arrays

    def io(self) -> TaskIO:
        return TaskIO(input_dim=3, output_dim=len(self.arrays()["classes"]), pooling="mean")

    def prepare(self, inputs, targets):
        return super().prepare(np.asarray(inputs, np.float32) / 255.0, targets)

    def chance(self):
        train, val = (np.asarray(self.rows(s)[1]) for s in ("train", "val"))
        return float(np.mean(val == np.bincount(train).argmax()))


PATHFINDER_LEVEL = "curv_contour_length_14"


@register_task("lra_pathfinder")
@dataclass(frozen=True)
class LraPathfinder(FileDataset):
    """Options: ``data_dir`` (holding ``pathfinder<resolution>/``), ``resolution`` (32, 64, 128 = Path-X, 256)."""

    published: ClassVar[str] = ("https://github.com/google-research/long-range-arena "
                                "(lra_release.gz, folder lra_release/)")
    expected: ClassVar[str] = (f"pathfinder<resolution>/{PATHFINDER_LEVEL}/metadata/<n>.npy and "
                               f"pathfinder<resolution>/{PATHFINDER_LEVEL}/imgs/<d>/sample_<k>.png")

    resolution: int = 32

    def __post_init__(self):
        if self.resolution not in (32, 64, 128, 256):
            raise ValueError(f"lra_pathfinder: resolution must be 32, 64, 128 or 256; got {self.resolution}")

    def level(self, folder: Path) -> Path:
        return folder / f"pathfinder{self.resolution}" / PATHFINDER_LEVEL

    def sources(self, folder):
        self.require(self.level(folder) / "metadata")
        return sorted((self.level(folder) / "metadata").glob("*.npy"))

    def decode(self, folder, writer):
        level = self.level(folder)
        samples = []
        for meta in sorted(self.sources(folder), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
            for line in meta.read_text().splitlines():
                parts = line.split()
                if len(parts) < 4 or not parts[3].lstrip("-").isdigit():
                    raise self.error(f"{meta.name}: cannot read metadata line {line!r} "
                                     f"(expected 'imgs/<d> sample_<k>.png <i> <label> ...')")
                samples.append((level / parts[0] / parts[1], int(parts[3])))
        if not samples:
            raise self.error("no metadata lines found")
        self.require(*(path for path, _ in samples))
        writer.stack("inputs", [path for path, _ in samples], self.read_image, (self.resolution,) * 2, np.uint8)
        return {"targets": np.array([label for _, label in samples], np.uint8)}

    def read_image(self, path: Path) -> np.ndarray:
        image = load_image(self, path, "L")
        if image.shape != (self.resolution, self.resolution):
            side = self.resolution
            raise self.error(f"{path} is {image.shape[1]}×{image.shape[0]}, expected {side}×{side}")
        return image

    def split_rows(self, arrays, split):
        train, val, test = held_out(len(arrays["targets"]), 0.1, 0.1)
        rows = {"train": train, "val": val, "test": test}[split]
        return _Rows(arrays["inputs"], rows), _Rows(arrays["targets"], rows)

    def io(self) -> TaskIO:
        self.arrays()
        return TaskIO(input_dim=1, output_dim=2, pooling="mean")

    def prepare(self, inputs, targets):
        return super().prepare((np.asarray(inputs, np.float32)[..., None] / 255.0 - 0.5) / 0.5, targets)
