"""Text data sets in their published formats: three Long Range Arena tasks and raw byte corpora.

"Long Range Arena: A Benchmark for Efficient Transformers" (Tay et al., 2021), read as
state-spaces/s4 ``src/dataloaders/lra.py`` does (facts only). Every sequence ends with an
end-of-sequence token and is right-padded with token 0 to a fixed ``max_length``
(static shapes); the padding has no weight in the targets but is part of the pooled
sequence (a known difference from the official code, which pools over true lengths).

``lra_listops``: ``basic_{train,val,test}.tsv`` with a ``Source``/``Target`` header.
Tokens are the official ones (``(`` and ``)`` dropped, ``]`` written ``X``, split on
spaces): a fixed vocabulary of 0 pad, 1 unknown, 2 end, the digits and
``[MIN [MAX [MED [SM X``; ``max_length`` 2048; 10 classes.

``lra_text``: IMDB reviews ("Learning Word Vectors for Sentiment Analysis", Maas et al.,
2011) from ``aclImdb/{train,test}/{pos,neg}/*.txt``, byte level (token = byte + 1, 257
the end), ``max_length`` 4096, 2 classes; no validation split (as the official config).

``lra_retrieval``: ACL Anthology Network pairs ``new_aan_pairs.{train,eval,test}.tsv``
(``label, id1, id2, text1, text2``), byte level, each document ``max_length`` 4000.
Inputs are the two documents side by side ``(B, 2, max_length)``, which the sequence
model reads as one sequence of ``2 · max_length`` tokens (the official model encodes the
documents separately and classifies ``[u, v, u·v, u−v]``: a known difference).

``text_bytes``: byte-level language modelling on one raw file (enwik8 from the Hutter
Prize, or text8): the first ``train_bytes`` / next ``valid_bytes`` / next
``test_bytes`` bytes (90M / 5M / 5M, the standard split). The file itself is the cache
(memory-mapped). Training windows of ``seq_len`` bytes start at random offsets;
evaluation splits are cut into consecutive windows. Targets are the next bytes; the
evaluation reports ``<split>/bits_per_byte`` (the loss, in nats, over ln 2) beside the
next-byte accuracy.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..base import TaskIO, positive, register_task, split_rng
from .pipeline import FileDataset, part_range

LRA_URL = "https://github.com/google-research/long-range-arena (lra_release.gz)"
PAD, UNKNOWN, END = 0, 1, 2
LISTOPS_TOKENS = ("<pad>", "<unk>", "<end>") + tuple("0123456789") + ("[MIN", "[MAX", "[MED", "[SM", "X")
BYTE_END = 257            # byte tokens are byte + 1, so 0 stays the padding


def listops_tokens(source: str) -> list[int]:
    """The official ListOps tokenizer (``(``, ``)`` dropped; ``]`` becomes ``X``) on the fixed vocabulary."""
    index = {token: i for i, token in enumerate(LISTOPS_TOKENS)}
    words = source.translate({ord("]"): ord("X"), ord("("): None, ord(")"): None}).split()
    return [index.get(word, UNKNOWN) for word in words]


def byte_tokens(text: bytes) -> list[int]:
    return [b + 1 for b in text]


def padded(sequences: list[list[int]], max_length: int, end: int) -> np.ndarray:
    """Each sequence cut to ``max_length - 1``, then ``end`` appended, right-padded with 0."""
    out = np.zeros((len(sequences), max_length), np.uint16)
    for i, tokens in enumerate(sequences):
        tokens = tokens[:max_length - 1] + [end]
        out[i, :len(tokens)] = tokens
    return out


def read_tsv(task: FileDataset, path: Path, columns: int, header: tuple[str, ...] | None) -> list[list[str]]:
    task.require(path)
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if header is not None:
        if not rows or tuple(rows[0][:len(header)]) != header:
            raise task.error(f"{path.name} must start with the header {' '.join(header)}; "
                             f"got {rows[0] if rows else 'an empty file'}")
        rows = rows[1:]
    bad = next((i for i, row in enumerate(rows) if len(row) != columns), None)
    if bad is not None or not rows:
        raise task.error(f"{path.name}: every row needs {columns} tab-separated columns"
                         + (f"; row {bad + 1} has {len(rows[bad])}" if bad is not None else "; the file is empty"))
    return rows


def int_label(task: FileDataset, text: str, path: Path) -> int:
    try:
        return int(float(text))
    except ValueError:
        raise task.error(f"{path.name}: label {text!r} is not an integer") from None


class PooledTokens:
    """Token-id inputs with one class label per sequence."""

    vocab: ClassVar[int] = 0
    classes: ClassVar[int] = 2

    def io(self) -> TaskIO:
        self.arrays()
        return TaskIO(vocab_size=self.vocab, output_dim=self.classes, pooling="mean")

    def prepare(self, inputs, targets):
        return {"inputs": np.asarray(inputs, np.int32), "targets": np.asarray(targets, np.int32),
                "weights": np.ones(len(targets), np.float32)}


@register_task("lra_listops")
@dataclass(frozen=True)
class LraListops(PooledTokens, FileDataset):
    """Options: ``data_dir`` (holding ``basic_*.tsv``; LRA's ``listops-1000/``), ``max_length``."""

    published: ClassVar[str] = LRA_URL
    expected: ClassVar[str] = "basic_train.tsv, basic_val.tsv, basic_test.tsv (Source<TAB>Target header)"
    vocab: ClassVar[int] = len(LISTOPS_TOKENS)
    classes: ClassVar[int] = 10

    max_length: int = 2048

    def __post_init__(self):
        positive(self.name, max_length=self.max_length)

    def sources(self, folder):
        return [folder / f"basic_{s}.tsv" for s in ("train", "val", "test") if (folder / f"basic_{s}.tsv").exists()]

    def decode(self, folder, writer):
        arrays = {}
        for split in ("train", "val", "test"):
            path = folder / f"basic_{split}.tsv"
            rows = read_tsv(self, path, 2, ("Source", "Target"))
            arrays[f"{split}_inputs"] = padded([listops_tokens(source) for source, _ in rows], self.max_length, END)
            arrays[f"{split}_targets"] = np.array([int_label(self, t, path) for _, t in rows], np.uint8)
        return arrays


@register_task("lra_text")
@dataclass(frozen=True)
class LraText(PooledTokens, FileDataset):
    """Options: ``data_dir`` (holding ``aclImdb/`` or its contents), ``max_length``."""

    published: ClassVar[str] = "https://ai.stanford.edu/~amaas/data/sentiment/ (aclImdb_v1.tar.gz)"
    expected: ClassVar[str] = "aclImdb/train/{pos,neg}/*.txt and aclImdb/test/{pos,neg}/*.txt"
    vocab: ClassVar[int] = BYTE_END + 1

    max_length: int = 4096

    def __post_init__(self):
        positive(self.name, max_length=self.max_length)

    def eval_splits(self):
        return ("test",)

    def root(self, folder: Path) -> Path:
        return folder / "aclImdb" if (folder / "aclImdb").is_dir() else folder

    def sources(self, folder):
        root = self.root(folder)
        return [root / s / c for s in ("train", "test") for c in ("pos", "neg") if (root / s / c).is_dir()]

    def decode(self, folder, writer):
        root, arrays = self.root(folder), {}
        self.require(*(root / s / c for s in ("train", "test") for c in ("neg", "pos")))
        for split in ("train", "test"):
            files = [(label, p) for label, polarity in enumerate(("neg", "pos"))
                     for p in sorted((root / split / polarity).glob("*.txt"))]
            if not files:
                raise self.error(f"{split}/pos and {split}/neg hold no .txt reviews")
            texts = [byte_tokens(p.read_bytes()) for _, p in files]
            arrays[f"{split}_inputs"] = padded(texts, self.max_length, BYTE_END)
            arrays[f"{split}_targets"] = np.array([label for label, _ in files], np.uint8)
        return arrays


@register_task("lra_retrieval")
@dataclass(frozen=True)
class LraRetrieval(PooledTokens, FileDataset):
    """Options: ``data_dir`` (holding ``new_aan_pairs.*.tsv``; LRA's ``tsv_data/``), ``max_length`` per document."""

    published: ClassVar[str] = LRA_URL
    expected: ClassVar[str] = ("new_aan_pairs.train.tsv, new_aan_pairs.eval.tsv, new_aan_pairs.test.tsv "
                               "(label, id1, id2, text1, text2)")
    vocab: ClassVar[int] = BYTE_END + 1
    files: ClassVar[dict[str, str]] = {"train": "train", "val": "eval", "test": "test"}

    max_length: int = 4000

    def __post_init__(self):
        positive(self.name, max_length=self.max_length)

    def sources(self, folder):
        return [p for p in (folder / f"new_aan_pairs.{f}.tsv" for f in self.files.values()) if p.exists()]

    def decode(self, folder, writer):
        arrays = {}
        for split, stem in self.files.items():
            path = folder / f"new_aan_pairs.{stem}.tsv"
            rows = read_tsv(self, path, 5, None)
            docs = [padded([byte_tokens(row[i].encode()) for row in rows], self.max_length, BYTE_END) for i in (3, 4)]
            arrays[f"{split}_inputs"] = np.stack(docs, axis=1)
            arrays[f"{split}_targets"] = np.array([int_label(self, row[0], path) for row in rows], np.uint8)
        return arrays


@register_task("text_bytes")
@dataclass(frozen=True)
class TextBytes(FileDataset):
    """Options: ``data_dir``, ``file`` (``enwik8`` or ``text8``), ``seq_len``, and the split sizes."""

    published: ClassVar[str] = ("http://mattmahoney.net/dc/enwik8.zip and http://mattmahoney.net/dc/text8.zip "
                                "(unzipped: one raw file)")
    expected: ClassVar[str] = "one raw byte file named by the option file (enwik8 or text8)"

    file: str = "enwik8"
    seq_len: int = 512
    train_bytes: int = 90_000_000
    valid_bytes: int = 5_000_000
    test_bytes: int = 5_000_000

    def __post_init__(self):
        positive(self.name, seq_len=self.seq_len, train_bytes=self.train_bytes, valid_bytes=self.valid_bytes,
                 test_bytes=self.test_bytes)

    def arrays(self):
        path = self.folder / self.file
        if not path.is_file():
            raise self.error(f"missing {self.file}")
        needed = self.train_bytes + self.valid_bytes + self.test_bytes
        if path.stat().st_size < needed or self.seq_len + 1 > min(self.train_bytes, self.valid_bytes, self.test_bytes):
            raise self.error(f"{self.file} has {path.stat().st_size} bytes; the splits need {needed}, each "
                             f"longer than seq_len + 1 = {self.seq_len + 1}")
        data = np.memmap(path, np.uint8, mode="r")
        cuts = np.cumsum([0, self.train_bytes, self.valid_bytes, self.test_bytes])
        return {split: data[a:b] for split, a, b in zip(("train", "val", "test"), cuts[:-1], cuts[1:])}

    def io(self) -> TaskIO:
        self.arrays()
        return TaskIO(vocab_size=256, output_dim=256, pooling="none")

    def windows(self, split: str) -> int:
        """Consecutive evaluation windows of ``seq_len`` predictions in ``split``."""
        return (len(self.arrays()[split]) - 1) // self.seq_len

    def eval_size(self, split):
        return self.windows(split)

    def batch(self, split, index, batch_size, seed):
        return self.batch_part(split, index, batch_size, seed, slice(None))

    def batch_part(self, split, index, batch_size, seed, part):
        self.check_split(split)
        data = self.arrays()[split]
        part = part_range(part, batch_size)
        if split == "train":
            starts = split_rng(seed, split, index).integers(0, len(data) - self.seq_len, batch_size)
            valid = np.ones(batch_size, bool)
        else:
            window = np.arange(index * batch_size, (index + 1) * batch_size)
            valid = window < self.windows(split)
            starts = np.where(valid, window, 0) * self.seq_len
        chunks = np.stack([np.asarray(data[s:s + self.seq_len + 1]) for s in starts[part]]).astype(np.int32)
        weights = np.repeat(valid[part, None], self.seq_len, axis=1).astype(np.float32)
        return {"inputs": chunks[:, :-1], "targets": chunks[:, 1:], "weights": weights}

    def derived_metrics(self, results):
        """``<split>/bits_per_byte``: the mean next-byte cross-entropy in bits (loss / ln 2)."""
        return {f"{split}/bits_per_byte": results[f"{split}/loss"] / math.log(2) for split in self.eval_splits()}

    def chance(self) -> float:
        """Accuracy of always predicting the most frequent training byte (of the first 1M)."""
        counts = np.bincount(np.asarray(self.arrays()["train"][:1_000_000]), minlength=256)
        return float(counts.max() / counts.sum())
