"""Speech Commands v0.02 ("Speech Commands: A Dataset for Limited-Vocabulary Speech
Recognition", Warden, 2018) as raw waveforms, the S4 paper's SC10 task and the full
35-word SC35 task (Gu et al., 2022, Table 5; state-spaces/s4 ``src/dataloaders/datasets/sc.py``
for the class lists).

The released folder holds one sub-folder per word of 16 kHz, 16-bit mono WAV files
(``<word>/<speaker>_nohash_<n>.wav``) and the official ``validation_list.txt`` and
``testing_list.txt`` (relative paths): those files form ``val`` and ``test``, every other
file of the chosen words ``train``. Clips are read with the standard library's
``wave``, zero-padded (or cut) to 16,000 samples and cached as int16; batches are
``(B, 16000 / stride, 1)`` float32 in [-1, 1). ``stride`` > 1 keeps every
``stride``-th sample (the s4 code's ``sr`` option: zero-shot evaluation at 8 kHz is
``stride=2`` on a model trained at 16 kHz).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..base import TaskIO, positive, register_task
from .pipeline import FileDataset

SAMPLE_RATE = 16000
SC10_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SC35_WORDS = ("bed", "cat", "down", "five", "forward", "go", "house", "left", "marvin", "no", "on", "right",
              "sheila", "tree", "up", "visual", "yes", "backward", "bird", "dog", "eight", "follow", "four",
              "happy", "learn", "nine", "off", "one", "seven", "six", "stop", "three", "two", "wow", "zero")
SUBSETS = {"sc10": SC10_WORDS, "sc35": SC35_WORDS}


@register_task("speech_commands")
@dataclass(frozen=True)
class SpeechCommands(FileDataset):
    """Options: ``data_dir`` (the unpacked v0.02 folder), ``subset`` (``sc10`` or ``sc35``), ``stride``."""

    published: ClassVar[str] = ("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz "
                                "(https://arxiv.org/abs/1804.03209)")
    expected: ClassVar[str] = "<word>/*.wav (16 kHz, 16-bit mono), validation_list.txt, testing_list.txt"
    batch_options: ClassVar[tuple[str, ...]] = ("stride",)

    subset: str = "sc10"
    stride: int = 1

    def __post_init__(self):
        if self.subset not in SUBSETS:
            raise ValueError(f"speech_commands: subset must be one of {tuple(SUBSETS)}; got {self.subset!r}")
        positive(self.name, stride=self.stride)

    @property
    def words(self) -> tuple[str, ...]:
        return SUBSETS[self.subset]

    def sources(self, folder):
        lists = [folder / "validation_list.txt", folder / "testing_list.txt"]
        self.require(*lists, *(folder / word for word in self.words))
        return lists + [folder / word for word in self.words]

    def read_wav(self, path: Path) -> np.ndarray:
        try:
            with wave.open(str(path), "rb") as clip:
                layout = (clip.getnchannels(), clip.getsampwidth(), clip.getframerate())
                frames = clip.readframes(clip.getnframes())
        except (wave.Error, EOFError) as err:
            raise self.error(f"cannot read {path} as WAV ({err})") from err
        if layout != (1, 2, SAMPLE_RATE):
            raise self.error(f"{path} is (channels, bytes per sample, rate) = {layout}; expected (1, 2, {SAMPLE_RATE})")
        audio = np.frombuffer(frames, "<i2")[:SAMPLE_RATE]
        return np.pad(audio, (0, SAMPLE_RATE - len(audio)))

    def decode(self, folder, writer):
        listed = {split: set((folder / f"{name}_list.txt").read_text().split())
                  for split, name in (("val", "validation"), ("test", "testing"))}
        files = {"train": [], "val": [], "test": []}
        for label, word in enumerate(self.words):
            for path in sorted((folder / word).glob("*.wav")):
                relative = f"{word}/{path.name}"
                split = "val" if relative in listed["val"] else "test" if relative in listed["test"] else "train"
                files[split].append((label, path))
        arrays = {}
        for split, items in files.items():
            if not items:
                raise self.error(f"no {split} clips of the words {', '.join(self.words)}")
            writer.stack(f"{split}_inputs", [path for _, path in items], self.read_wav, (SAMPLE_RATE,), np.int16)
            arrays[f"{split}_targets"] = np.array([label for label, _ in items], np.uint8)
        return arrays

    def io(self) -> TaskIO:
        self.arrays()
        return TaskIO(input_dim=1, output_dim=len(self.words), pooling="mean")

    def prepare(self, inputs, targets):
        audio = np.asarray(inputs)[:, ::self.stride].astype(np.float32)[..., None] / 32768.0
        return super().prepare(audio, targets)
