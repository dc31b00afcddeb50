"""Where metrics go: JSONL (always), TensorBoard (optional), a progress display, a plot.

``metrics.jsonl`` holds one JSON object per line, ``{"step": 200, "train/loss": 0.41,
...}``. TensorBoard needs the ``tensorboard`` extra (``tensorboardX``, imported only
when asked for). Only process 0 of a multi-host run writes (``NullWriter`` elsewhere).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Mapping, Protocol, Sequence

from .config import Config, config_differences, flat_values

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"


class MetricWriter(Protocol):
    def write(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class NullWriter:
    def write(self, step, metrics):
        pass

    def close(self):
        pass


class JsonlWriter:
    """Append ``{"step": ..., **metrics}`` lines to ``path``.

    ``resume_step``: drop lines after that step first, so the steps a killed run
    repeats after resuming from its last checkpoint are not logged twice.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            kept = [line for line in read_metrics(self.path) if line["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(line) + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = self.path.open("a")

    def write(self, step, metrics):
        self._file.write(json.dumps({"step": int(step), **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self._file.flush()

    def close(self):
        self._file.close()


class TensorBoardWriter:
    """Scalars to TensorBoard event files through ``tensorboardX`` (optional dependency)."""

    def __init__(self, logdir: str | Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            raise ImportError("train.tensorboard=true needs tensorboardX: pip install 'seqmodels[tensorboard]'") from err
        self._writer = SummaryWriter(str(logdir))

    def write(self, step, metrics):
        for name, value in metrics.items():
            self._writer.add_scalar(name, float(value), int(step))
        self._writer.flush()

    def close(self):
        self._writer.close()


class MultiWriter:
    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = list(writers)

    def write(self, step, metrics):
        for writer in self.writers:
            writer.write(step, metrics)

    def close(self):
        for writer in self.writers:
            writer.close()


def read_metrics(path: str | Path) -> list[dict]:
    """The lines of a ``metrics.jsonl`` (a partly written last line is skipped)."""
    lines = []
    for text in Path(path).read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return lines


def format_metrics(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{name} {value:.4g}" for name, value in metrics.items())


def _rate(steps_per_second: float) -> str:
    return f"{steps_per_second:.1f}" if math.isfinite(steps_per_second) else "?"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """A tqdm bar (steps/s, ETA) on a terminal; periodic log lines otherwise (their
    rate is over the steps since the previous line).

    ``start(step)`` marks the end of compilation (the loop calls it once the first step
    has run), so that rates and the ETA measure compiled steps only; the bar appears
    then. ``update(step, metrics)`` is called at log points. With ``enabled=False``
    (processes other than 0) it prints nothing.
    """

    def __init__(self, total: int, initial: int, *, enabled: bool = True, stream=None):
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self._rate_step, self._rate_time = initial, time.perf_counter()
        self._terminal = enabled and self.stream.isatty()
        self._bar = None

    def start(self, step: int) -> None:
        """Step ``step`` has run (and compiled): count rates from here."""
        self._rate_step, self._rate_time = step, time.perf_counter()
        if self._terminal and self._bar is None:
            self._bar = self._new_bar(step)

    def _new_bar(self, initial: int):
        from tqdm import tqdm
        return tqdm(total=self.total, initial=initial, file=self.stream, unit="step", dynamic_ncols=True)

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        if self._terminal:
            if self._bar is None:
                self._bar = self._new_bar(self._rate_step)
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(format_metrics(metrics), refresh=True)
            return
        now = time.perf_counter()
        steps, elapsed = step - self._rate_step, now - self._rate_time
        self._rate_step, self._rate_time = step, now
        rate = steps / elapsed if steps > 0 and elapsed > 0 else float("nan")
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        print(f"step {step}/{self.total}  {format_metrics(metrics)}  | {_rate(rate)} steps/s  ETA {_duration(eta)}",
              file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


SUMMARY_KEYS = ("model.mixer", "model.d_model", "model.n_layers", "task.name", "train.steps",
                "train.batch_size", "train.seed")


def config_summary(config: Config) -> str:
    """A few lines instead of the whole config: per section, the keys of ``SUMMARY_KEYS``
    and every key that differs from ``Config()``'s default."""
    changed = set(config_differences(config, Config()))
    sections: dict[str, list[str]] = {}
    for key, value in flat_values(config).items():
        if key in SUMMARY_KEYS or key in changed:
            section, name = key.split(".", 1)
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            sections.setdefault(section, []).append(f"{name}={text}")
    lines = [f"  {section}: " + " ".join(items) for section, items in sections.items()]
    return "\n".join(["config (other keys at their defaults; all of it in the run's config.json):"] + lines)


def plot_metrics(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """One panel per metric name (``loss``, ``accuracy``, ...), train and eval splits as
    lines over steps; saved with matplotlib's Agg backend. ``None`` when nothing to plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, tuple[list, list]]] = {}
    for line in read_metrics(metrics_path):
        for key, value in line.items():
            if key == "step" or "/" not in key:
                continue
            split, name = key.split("/", 1)
            if name in ("learning_rate", "grad_norm", "steps_per_second"):
                continue
            xs, ys = series.setdefault(name, {}).setdefault(split, ([], []))
            xs.append(line["step"])
            ys.append(value)
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.5), squeeze=False)
    for ax, (name, splits) in zip(axes[0], sorted(series.items())):
        for split, (xs, ys) in splits.items():
            ax.plot(xs, ys, marker="o" if split != "train" else None, markersize=3, label=split)
        ax.set_xlabel("step")
        ax.set_title(name)
        if name in ("loss", "mse"):
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return Path(out_path)
