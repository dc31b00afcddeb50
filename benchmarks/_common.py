"""Timing, memory and reporting helpers shared by the benchmark scripts.

Timings: jit-compiled functions, warm-up calls, ``block_until_ready``, the median of
several repetitions. Peak memory: XLA's compiled ``memory_analysis`` (temporaries +
arguments + outputs) of the same function, which is deterministic and needs no
profiler.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn, *args, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``fn(*args)`` (already jitted), after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn, *args) -> int | None:
    """Compiled peak memory estimate of ``jax.jit(fn)(*args)`` in bytes (None if unavailable)."""
    try:
        stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    except Exception:  # some backends report nothing
        return None
    if stats is None:
        return None
    return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes)


def growth_exponent(lengths, seconds) -> float:
    """Slope ``p`` of the least-squares line through ``(log L, log t)``: time ∝ L^p."""
    slope, _ = np.polyfit(np.log(np.asarray(lengths, float)), np.log(np.asarray(seconds, float)), 1)
    return float(slope)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict:
    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def save_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def save_plot(name: str, draw) -> Path | None:
    """Call ``draw(plt)`` and save ``results/<name>.png``; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    draw(plt)
    path = RESULTS / f"{name}.png"
    plt.savefig(path, dpi=120, bbox_inches="tight")
    plt.close("all")
    return path
