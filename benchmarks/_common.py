"""Timing, memory and reporting helpers shared by the benchmark scripts.

Timings: jit-compiled functions, warm-up calls, ``block_until_ready``, the median of
several repetitions. Peak memory: XLA's compiled ``memory_analysis`` (temporaries +
arguments + outputs) of the same function, which is deterministic and needs no
profiler; :func:`compile_stats` gets it from the executable that is then timed, so a
case too large to run is known (and skipped) before it runs.

Results go to ``benchmarks/results/`` or to ``$SEQMODELS_BENCHMARK_RESULTS`` when set
(the smoke test writes to a temporary folder).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

RESULTS = Path(__file__).resolve().parent / "results"
RESULTS_ENV = "SEQMODELS_BENCHMARK_RESULTS"
GiB = 1 << 30


def results_dir() -> Path:
    """``$SEQMODELS_BENCHMARK_RESULTS`` if set, else ``benchmarks/results``."""
    return Path(os.environ.get(RESULTS_ENV) or RESULTS)


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


def _memory_of(compiled) -> int | None:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # some backends report nothing
        return None
    if stats is None:
        return None
    return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes)


def peak_bytes(fn, *args) -> int | None:
    """Compiled peak memory estimate of ``jax.jit(fn)(*args)`` in bytes (None if unavailable)."""
    return _memory_of(jax.jit(fn).lower(*args).compile())


@dataclass
class Compiled:
    """An executable with what compiling it cost: wall seconds (trace + lower + compile) and peak bytes."""

    run: Callable
    seconds: float
    peak_bytes: int | None


def compile_stats(fn, *args, donate_argnums=()) -> Compiled:
    """Compile ``jax.jit(fn)`` for ``args`` without running it; ``.run(*args)`` executes it."""
    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
    return Compiled(compiled, time.perf_counter() - start, _memory_of(compiled))


def budgeted_seconds(fn, *args, repeats: int, budget_s: float, warmup: int = 1,
                     slow_warmup_counts: bool = False) -> tuple[float, int]:
    """Median wall time of ``fn(*args)`` after ``warmup`` untimed calls (a jitted function
    compiles in the first), with at most ``repeats`` timed calls and fewer when they would
    take more than ``budget_s`` in total (at least one). Returns ``(median seconds, calls)``.

    ``slow_warmup_counts`` (for executables compiled ahead of time, whose first call does
    not compile): a single warm-up call that alone takes longer than ``budget_s`` is the
    measurement (``calls = 0``), so a slow case runs once instead of twice.
    """
    def timed():
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        return time.perf_counter() - start

    for _ in range(warmup):
        first = timed()
        if slow_warmup_counts and warmup == 1 and first > budget_s:
            return first, 0
    times = [timed()]
    times += [timed() for _ in range(max(1, min(repeats, int(budget_s / max(times[0], 1e-9)))) - 1)]
    return statistics.median(times), len(times)


def format_bytes(n: int | None) -> str:
    """``1.5 GiB``, ``12 MiB``, ``3 KiB``; ``n/a`` for None."""
    if n is None:
        return "n/a"
    for unit, size in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def tree_bytes(tree) -> int:
    """Total bytes of the array leaves of ``tree``."""
    return int(sum(np.dtype(leaf.dtype).itemsize * int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree)))


def train_step(model: nnx.Module, tx=None):
    """A jitted-able ``step(state, x)`` for any module and its initial ``state``.

    ``loss = mean(model(x)²) + Σ sown aux losses`` (float32), differentiated with
    respect to the ``nnx.Param`` leaves. Without ``tx`` the step returns ``(grads, rest,
    loss)`` (the gradients are outputs, so the backward pass is never optimized away);
    with an optax ``tx`` it applies the update and returns the new state and the loss.
    Non-parameter state (e.g. routing centroids in training mode) is carried in
    ``rest``.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, rest, x):
        model = nnx.merge(graphdef, params, rest, copy=True)
        y, intermediates = nnx.capture(model, nnx.Intermediate)(x)
        aux = sum((jnp.sum(leaf.astype(jnp.float32)) for leaf in jax.tree.leaves(intermediates)),
                  jnp.zeros((), jnp.float32))
        return jnp.mean(jnp.square(y.astype(jnp.float32))) + aux, nnx.split(model, nnx.Param, ...)[2]

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if tx is None:
        def step(state, x):
            (loss, rest), grads = grad_fn(state["params"], state["rest"], x)
            return grads, rest, loss

        return step, {"params": params, "rest": rest}

    def step(state, x):
        (loss, rest), grads = grad_fn(state["params"], state["rest"], x)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "rest": rest,
                "opt_state": opt_state}, loss

    return step, {"params": params, "rest": rest, "opt_state": tx.init(params)}


def verdict(goal: str, met: bool, actual: str, target: str) -> str:
    """One line per goal: ``goal: goal met (actual vs target)`` or ``goal: missed: actual vs target``."""
    return f"{goal}: goal met ({actual} vs {target})" if met else f"{goal}: missed: {actual} vs {target}"


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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    import flax

    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "processor": _cpu_model(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
    }


def save_json(name: str, payload: dict) -> Path:
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
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
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    draw(plt)
    path = folder / f"{name}.png"
    plt.savefig(path, dpi=120, bbox_inches="tight")
    plt.close("all")
    return path


def run_child(module: str, *args: str) -> dict:
    """Run ``python -m benchmarks.<module> *args`` in a fresh process (its own peak RSS) and
    return the JSON object it prints last, or ``{"failed": ...}`` with the end of its stderr."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])
