"""Writers of tiny data sets in each published on-disk format (for the file-backed tasks' tests).

Each ``write_<task>(folder, rng)`` writes a handful of records exactly as the released
data set lays them out and returns what a loader must recover from them.
"""

from __future__ import annotations

import gzip
import pickle
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from seqmodels.tasks.files.audio import SC10_WORDS


def write_cifar10(folder: Path, rng, per_batch: int = 4) -> dict:
    """``cifar-10-batches-py/data_batch_1..5, test_batch``: pickles of dicts with bytes keys
    (the release was written by Python 2), ``data`` uint8 (N, 3072) in R, G, B planes."""
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        hwc = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = list(rng.integers(0, 10, per_batch).tolist())
        record = {b"batch_label": name.encode(), b"labels": labels,
                  b"data": hwc.transpose(0, 3, 1, 2).reshape(per_batch, 3072),
                  b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
        (root / name).write_bytes(pickle.dumps(record, protocol=2))
        images[name] = (hwc, np.array(labels))
    return images


def idx_bytes(array: np.ndarray) -> bytes:
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, rng, train: int = 20, test: int = 6, gz: bool = True) -> dict:
    """The four IDX files (``.gz`` for the training pair when ``gz``, plain for the test pair)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, count, zipped in (("train", train, gz), ("t10k", test, False)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = folder / f"{prefix}-{kind}-ubyte"
            data = idx_bytes(array)
            if zipped:
                path, data = path.with_name(path.name + ".gz"), gzip.compress(data)
            path.write_bytes(data)
        out[prefix] = (images, labels)
    return out


def write_lra_listops(folder: Path, rng, count: int = 6) -> dict:
    """``basic_{train,val,test}.tsv`` with the ``Source``/``Target`` header."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "val", "test"):
        rows = []
        for _ in range(count):
            digits = rng.integers(0, 10, 3)
            rows.append((f"( ( [MAX {digits[0]} ( [MIN {digits[1]} {digits[2]} ] ) ] ) )", int(digits.max())))
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n" + "".join(f"{s}\t{t}\n" for s, t in rows))
        out[split] = rows
    return out


def write_lra_text(folder: Path, rng, per_class: int = 3) -> dict:
    """``aclImdb/{train,test}/{pos,neg}/<id>_<stars>.txt``."""
    out = {}
    for split in ("train", "test"):
        for label, polarity in enumerate(("neg", "pos")):
            directory = folder / "aclImdb" / split / polarity
            directory.mkdir(parents=True)
            for i in range(per_class):
                text = f"review {i} {'great' if label else 'awful'} film é".encode() * int(rng.integers(1, 4))
                (directory / f"{i}_{7 if label else 2}.txt").write_bytes(text)
                out[(split, polarity, i)] = text
    return out


def write_lra_retrieval(folder: Path, rng, count: int = 6) -> dict:
    """``new_aan_pairs.{train,eval,test}.tsv``: label, id1, id2, text1, text2 (no header)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "eval", "test"):
        rows = [(int(rng.integers(0, 2)), f"paper{i}a", f"paper{i}b", f"we study scans {i}", f"attention {i} is all")
                for i in range(count)]
        (folder / f"new_aan_pairs.{split}.tsv").write_text(
            "".join("\t".join([f"{r[0]}.0", *r[1:]]) + "\n" for r in rows))
        out[split] = rows
    return out


def write_lra_pathfinder(folder: Path, rng, resolution: int = 32, count: int = 10) -> dict:
    """``pathfinder<R>/curv_contour_length_14/{metadata/0.npy, imgs/0/sample_<k>.png}``;
    metadata lines ``imgs/0 sample_<k>.png <k> <label> ...`` (text, despite the suffix)."""
    level = folder / f"pathfinder{resolution}" / "curv_contour_length_14"
    (level / "imgs" / "0").mkdir(parents=True)
    (level / "metadata").mkdir()
    images = rng.integers(0, 256, (count, resolution, resolution), dtype=np.uint8)
    labels = rng.integers(0, 2, count)
    lines = []
    for k in range(count):
        Image.fromarray(images[k], "L").save(level / "imgs" / "0" / f"sample_{k}.png")
        lines.append(f"imgs/0 sample_{k}.png {k} {labels[k]} 14 1.5 1 1 1\n")
    (level / "metadata" / "0.npy").write_text("".join(lines))
    return {"images": images, "labels": labels}


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(rate)
        clip.writeframes(audio.astype("<i2").tobytes())


def write_speech_commands(folder: Path, rng, per_word: int = 3, length: int = 16000) -> dict:
    """``<word>/<speaker>_nohash_<n>.wav`` for the SC10 words, plus the two split lists;
    clip 0 of each word is listed for validation, clip 1 for testing. Clips are
    ``length`` samples (shorter ones are padded by the loader)."""
    folder.mkdir(parents=True, exist_ok=True)
    clips, validation, testing = {}, [], []
    for word in SC10_WORDS:
        (folder / word).mkdir()
        for n in range(per_word):
            audio = rng.integers(-2000, 2000, length).astype(np.int16)
            name = f"{word}/speaker{n}_nohash_0.wav"
            write_wav(folder / name, audio)
            clips[name] = audio
            (validation if n == 0 else testing if n == 1 else []).append(name)
    (folder / "validation_list.txt").write_text("\n".join(validation) + "\n")
    (folder / "testing_list.txt").write_text("\n".join(testing) + "\n")
    return clips


def write_moving_mnist(folder: Path, rng, videos: int = 4) -> dict:
    """MNIST's training IDX pair (gzipped) and ``mnist_test_seq.npy`` uint8 (20, N, 64, 64)."""
    digits = write_mnist(folder, rng, train=12, test=2)
    test = rng.integers(0, 256, (20, videos, 64, 64), dtype=np.uint8)
    np.save(folder / "mnist_test_seq.npy", test)
    return {"digits": digits["train"][0], "test": test}


def write_text_bytes(folder: Path, rng, sizes=(3000, 600, 600), name: str = "enwik8") -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    data = rng.integers(32, 127, sum(sizes), dtype=np.uint8).tobytes()
    (folder / name).write_bytes(data)
    return data


def write_image_folder(folder: Path, rng, classes=("cat", "dog"), per_class: int = 3) -> dict:
    """``{train,val}/<class>/<n>.png|jpg`` of varied sizes."""
    out = {}
    for split in ("train", "val"):
        for label, name in enumerate(classes):
            directory = folder / split / name
            directory.mkdir(parents=True)
            for n in range(per_class):
                image = rng.integers(0, 256, (10 + n, 12, 3), dtype=np.uint8)
                suffix = ".png" if n % 2 == 0 else ".jpg"
                Image.fromarray(image, "RGB").save(directory / f"{n}{suffix}")
                out[(split, name, n)] = image
    return out
