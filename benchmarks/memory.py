"""Matrix-state memory benchmark: forward+backward of ``linear_attention`` and ``delta_rule``.

    python -m benchmarks.memory            # B = 8, L = 16384, H = 4, Dk = Dv = 64
    python -m benchmarks.memory --quick    # B = 2, L = 1024, H = 4, Dk = Dv = 32

Goal (issue 9): forward+backward at B = 8, L = 16384, H = 4, Dk = Dv = 64 finishes under
4 GiB peak memory. Storing every step's state would need ``B·L·H·Dk·Dv·4`` bytes =
8 GiB (the sequential scan's backward keeps about twice that), so the backward pass
must go through chunk-boundary states only (the chunked form checkpoints each chunk).

For each op and method (``auto``, ``chunked``, ``sequential``) it compiles the gradient of
``Σ o² + Σ S²`` with respect to every input (``benchmarks.scans.forward_backward``) and
reports XLA's peak-memory estimate (``_common.compile_stats``: temporaries + arguments +
outputs, nothing executed). ``auto`` and ``chunked`` are then run once each in a fresh
subprocess, which reports its wall time and its peak resident memory (``VmHWM``,
including the JAX runtime and the inputs); ``sequential`` is only estimated (running it
would need the memory the goal rules out). Results: ``benchmarks/results/memory.json``
(and ``.png``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp

from seqmodels import scans

from ._common import GiB, compile_stats, run_child, format_bytes, markdown_table, save_json, save_plot, verdict
from .scans import forward_backward

GOAL_BYTES = 4 * GiB
OPS = ("linear_attention", "delta_rule")
METHODS = ("auto", "chunked", "sequential")
SMOKE_METHODS = ("auto", "sequential")  # --smoke: fewer compiles
RUN_METHODS = ("auto", "chunked")


@dataclass(frozen=True)
class Size:
    batch: int
    length: int
    heads: int
    dim: int


SIZES = {
    "full": Size(8, 16384, 4, 64),
    "quick": Size(2, 1024, 4, 32),
    "smoke": Size(1, 128, 2, 8),
}


def inputs(op: str, size: Size):
    """``(args, argnums)`` of ``op`` at ``size``: unit keys, β ∈ (0, 1), log decays in (−0.1, 0]."""
    kq, kk, kv, kb, kg = jax.random.split(jax.random.PRNGKey(0), 5)
    shape = (size.batch, size.length, size.heads, size.dim)
    q = jax.random.normal(kq, shape) / 8
    k = jax.random.normal(kk, shape)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(kv, shape) / 8
    g = -jax.random.uniform(kg, shape[:3], maxval=0.1)
    if op == "linear_attention":
        return (q, k, v, g), (0, 1, 2, 3)
    beta = jax.nn.sigmoid(jax.random.normal(kb, shape[:3]))
    return (q, k, v, beta, g), (0, 1, 2, 3, 4)


def call(op: str):
    fn = getattr(scans, op)
    return lambda method, *args: fn(*args, method=method)


def history_bytes(size: Size) -> int:
    """Every step's ``Dk × Dv`` float32 state: what a backward pass that stores them all keeps."""
    return size.batch * size.length * size.heads * size.dim * size.dim * 4


def peak_rss_bytes() -> int:
    """This process's peak resident memory: ``VmHWM`` (Linux; reset by ``exec``, unlike
    ``ru_maxrss``, which a child inherits from its parent), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def execute(compiled, args) -> dict:
    """Run a compiled forward+backward once (in this process); wall seconds and the process's peak RSS."""
    start = time.perf_counter()
    jax.block_until_ready(compiled.run(*args))
    return {"seconds": time.perf_counter() - start, "max_rss_bytes": peak_rss_bytes()}


def compile_case(op: str, method: str, size: Size):
    """``(compiled forward+backward, its arguments)``."""
    args, argnums = inputs(op, size)
    return compile_stats(forward_backward(call(op), method, argnums), *args), args


def run_in_subprocess(op: str, method: str, mode: str) -> dict:
    return run_child("memory", "--child", op, method, "--mode", mode)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="B = 2, L = 1024, Dk = Dv = 32")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for the tests (seconds)")
    p.add_argument("--mode", choices=sorted(SIZES), help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=2, metavar=("OP", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    mode = args.mode or ("smoke" if args.smoke else "quick" if args.quick else "full")
    size = SIZES[mode]
    if args.child:  # one measured run in a fresh process (see run_in_subprocess)
        print(json.dumps(execute(*compile_case(*args.child, size))))
        return {}

    print(f"memory: forward+backward, B = {size.batch}, L = {size.length}, H = {size.heads}, "
          f"Dk = Dv = {size.dim}", flush=True)
    results = []
    for op in OPS:
        for method in SMOKE_METHODS if mode == "smoke" else METHODS:
            compiled, op_args = compile_case(op, method, size)
            entry = {"op": op, "method": method, "peak_bytes": compiled.peak_bytes, "compile_s": compiled.seconds}
            if method in RUN_METHODS:  # smoke: in this process (fast; its RSS includes earlier work)
                entry.update(execute(compiled, op_args) if mode == "smoke"
                             else run_in_subprocess(op, method, mode))
            del compiled, op_args
            results.append(entry)
            ran = (f"{entry['seconds']:.2f} s, RSS {format_bytes(entry['max_rss_bytes'])}" if "seconds" in entry
                   else entry.get("failed", "estimated only"))
            print(f"  {op:16s} {method:10s} compiled peak {format_bytes(entry['peak_bytes'])}; {ran}", flush=True)

    rows = [[r["op"], r["method"], format_bytes(r["peak_bytes"]),
             f"{r['seconds']:.2f}" if "seconds" in r else r.get("failed", "not run (estimate only)"),
             format_bytes(r["max_rss_bytes"]) if "max_rss_bytes" in r else "–"] for r in results]
    table = markdown_table(["op", "method", "compiled peak", "fwd+bwd (s)", "process peak RSS"], rows)
    lines = []
    for op in OPS:
        auto = next(r for r in results if r["op"] == op and r["method"] == "auto")
        peak = max(b for b in (auto["peak_bytes"], auto.get("max_rss_bytes")) if b is not None)
        finished = "seconds" in auto
        lines.append(verdict(f"{op} forward+backward (auto) under {format_bytes(GOAL_BYTES)}",
                             finished and peak < GOAL_BYTES,
                             f"{format_bytes(peak)} peak" + ("" if finished else ", did not finish"),
                             f"{format_bytes(GOAL_BYTES)} (all-step states: {format_bytes(history_bytes(size))})"))
    record = {"results": results, "mode": mode, "size": vars(size), "history_bytes": history_bytes(size),
              "goal_bytes": GOAL_BYTES, "table": table, "verdicts": lines}
    print()
    print(table)
    print()
    print("\n".join(lines))
    stem = "memory" if mode == "full" else "memory_quick"
    save_json(stem, record)

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        labels = [f"{r['op']}\n{r['method']}" for r in results]
        ax.bar(range(len(results)), [(r["peak_bytes"] or 0) / GiB for r in results])
        ax.axhline(GOAL_BYTES / GiB, color="k", linestyle="--", linewidth=1, label="goal")
        ax.axhline(history_bytes(size) / GiB, color="r", linestyle=":", linewidth=1, label="all step states")
        ax.set_xticks(range(len(results)), labels, fontsize=6)
        ax.set_ylabel("compiled peak (GiB)")
        ax.set_title(f"forward+backward, B={size.batch}, L={size.length}, H={size.heads}, D={size.dim}")
        ax.legend(fontsize=7)

    save_plot(stem, draw)
    return record


if __name__ == "__main__":
    main()
