"""Accelerator benchmark: one command that checks and times the scan core, every mixer's
train step and flash-linear-attention's kernels on whatever backend JAX finds.

    python -m benchmarks.accelerator --out DIR                 # device-sized, ≤ 8 min (--budget-minutes)
    python -m benchmarks.accelerator --out DIR --tiny          # tiny sizes: checks the script (CPU, CI)
    python -m benchmarks.accelerator --fit DIR/results.json    # the fastest method per shape, as rules
    python -m benchmarks.run --suite accelerator               # the same, as a suite of benchmarks.run

Sections, in this order (``benchmarks/README.md``, "Accelerator run", has the numbers):

1. correctness: every method of every core scan (``_accelerator_scans.CASES``) and
   ``auto`` against ``seqmodels/scans/reference.py`` in float32 at small odd shapes,
   outputs and final states, and (full size) gradients; a mismatch is reported (table,
   JSON, exit status 1), never fatal;
2. scans: every method, forward and forward+backward, at B = 8, H = 8, L ∈ {2k, 8k, 32k},
   D = Dk = Dv ∈ {64, 128}, with the method ``auto`` resolves to and its time over the
   fastest method's; a case whose compiled memory exceeds ``--max-gib`` is skipped;
3. fla: ``delta_rule``, ``linear_attention`` (scalar decay) and softmax attention against
   fla's ``chunk_delta_rule``, ``chunk_simple_gla`` and torch's
   ``scaled_dot_product_attention`` in bfloat16 (``_accelerator_fla``); skipped with one
   line when torch, fla or a CUDA device is missing;
4. mixers: one train step (``_common.train_step``) of every registered mixer but the
   bidirectional twins (``benchmarks.mixers.default_names``), B = 8, d_model = 512,
   L ∈ {1k, 4k, 16k}, activations in bfloat16 and float32, with XLA's compiled peak and the
   device's peak memory in use so far (``memory_stats()``, where the backend has it).

A global time budget (``--budget-minutes``, default 8) is shared out: each section gets a
fixed share of what is left when it starts (unused time passes on), and a case that would
start after its section's deadline is skipped with a note ("time budget"). Scans and
fla run every length at the smaller head size first, shortest first; mixers run every
mixer at the shortest length first; so a cut drops the largest shapes. Writes ``results.json``, ``results.md``
(tables, device, jax version, date) and ``scans.png``, ``mixers.png`` (and ``fla.png``)
into ``--out``.
"""

from __future__ import annotations

import os

# Set before JAX creates its GPU client (lazily, on first use): share the device with torch.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from . import _accelerator_fla as fla_side  # noqa: E402
from . import mixers  # noqa: E402
from ._accelerator_report import fastest_rules, report, verdicts  # noqa: E402
from ._accelerator_scans import CASES, ScanSize, auto_choice, check, methods_to_time, time_case  # noqa: E402
from ._common import GiB, RESULTS_ENV, machine, results_dir, save_plot  # noqa: E402

SHARES = {"correctness": 0.15, "scans": 0.4, "fla": 0.15, "mixers": 0.3}
PASSES = ("forward", "fwd_bwd")
DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


@dataclass(frozen=True)
class Size:
    check: ScanSize            # correctness shapes (odd; the grid gets check_grid_length cells)
    check_grid_length: int
    check_gradients: bool
    scan: ScanSize             # batch, heads; the length and dim fields are replaced by:
    lengths: tuple[int, ...]
    dims: tuple[int, ...]
    repeats: int
    budget_s: float            # timed seconds per case (at least one call)
    mixer: mixers.Size
    mixer_names: tuple[str, ...] | None  # None: every registered mixer but bidirectional twins


SIZES = {
    "full": Size(ScanSize(2, 77, 3, 5), 15, True, ScanSize(8, 0, 8, 0), (2048, 8192, 32768), (64, 128),
                 repeats=10, budget_s=0.5,
                 mixer=mixers.Size((1024, 4096, 16384), batch=8, d_model=512, repeats=5, budget_s=0.5),
                 mixer_names=None),
    # Tiny: outputs only in the correctness check, two mixers: about 40 s of CPU on 2 cores.
    "tiny": Size(ScanSize(1, 19, 2, 3), 15, False, ScanSize(1, 0, 2, 0), (32,), (8,), repeats=1,
                 budget_s=0.01, mixer=mixers.Size((16,), batch=1, d_model=16, repeats=1, budget_s=0.01, small=True),
                 mixer_names=("s5", "deltanet")),
}


class Budget:
    """A wall-clock deadline shared out between the sections (``SHARES``)."""

    def __init__(self, seconds: float, sections=tuple(SHARES)):
        self.end = time.perf_counter() + seconds
        self.sections = [name for name in SHARES if name in sections]
        self.notes: list[str] = []

    def section(self, name: str) -> float:
        """Deadline of section ``name``: its share of the time left, among the sections not yet run."""
        rest = sum(SHARES[n] for n in self.sections[self.sections.index(name):])
        now = time.perf_counter()
        return now + max(self.end - now, 0.0) * SHARES[name] / rest

    def expired(self, deadline: float, what: str) -> bool:
        if time.perf_counter() < deadline:
            return False
        self.notes.append(f"skipped (time budget): {what}")
        return True


def run_correctness(size: Size, tolerance: float, budget: Budget) -> list[dict]:
    deadline, entries = budget.section("correctness"), []
    for case in CASES:
        if budget.expired(deadline, f"correctness of {case.op}"):
            continue
        shape = replace(size.check, length=size.check_grid_length) if case.op == "grid_scan" else size.check
        entries += check(case, shape, tolerance, gradients=size.check_gradients)
        bad = [e["method"] for e in entries if e["op"] == case.op and "failed" in e]
        print(f"  correctness {case.op:16s} {'MISMATCH: ' + ', '.join(bad) if bad else 'ok'}", flush=True)
    return entries


def run_scans(size: Size, max_bytes: float, budget: Budget) -> list[dict]:
    deadline, entries = budget.section("scans"), []
    for dim in size.dims:
        for length in size.lengths:
            shape = replace(size.scan, length=length, dim=dim)
            for case in CASES:
                for kind in PASSES:
                    entry = {"op": case.op, "L": length, "D": dim, "pass": kind, "auto": auto_choice(case, shape),
                             "ms": {}, "skipped": {}}
                    for method in methods_to_time(case, shape):
                        if budget.expired(deadline, f"{case.op} {method} {kind} L={length} D={dim}"):
                            entry["skipped"][method] = "time budget"
                            continue
                        try:
                            timed = time_case(case, shape, method, kind == "fwd_bwd", max_bytes=max_bytes,
                                              repeats=size.repeats, budget_s=size.budget_s)
                        except Exception as error:  # reported, never fatal
                            entry.setdefault("failed", {})[method] = f"{type(error).__name__}: {error}"[:300]
                            continue
                        if "ms" in timed:
                            entry["ms"][method] = timed["ms"]
                        else:
                            entry["skipped"][method] = timed["skipped"]
                    summarize_auto(entry, case.methods)
                    entries.append(entry)
                    print(f"  {case.op:16s} L={length:6d} D={dim:4d} {kind:8s} "
                          + " ".join([f"{m} {t:.3g} ms" for m, t in entry["ms"].items()]
                                     + [f"{m} skipped ({why})" for m, why in entry["skipped"].items()]
                                     + [f"{m} FAILED" for m in entry.get("failed", {})]), flush=True)
    return entries


def summarize_auto(entry: dict, methods: tuple[str, ...]) -> None:
    """Adds the fastest explicit method and ``auto``'s time over it, where both were measured."""
    measured = {m: t for m, t in entry["ms"].items() if m in methods}
    if not measured:
        return
    entry["fastest"] = min(measured, key=measured.get)
    auto_ms = entry["ms"].get(entry["auto"] if entry["auto"] in methods else "auto")
    if auto_ms is not None:
        entry["auto_vs_best"] = auto_ms / measured[entry["fastest"]]


def run_fla(size: Size, max_bytes: float, budget: Budget) -> dict:
    reason = fla_side.unavailable()
    if reason is not None:
        print(f"  fla comparison skipped: {reason}", flush=True)
        return {"status": f"skipped: {reason}", "results": []}
    deadline, entries = budget.section("fla"), []
    for dim in size.dims:
        for length in size.lengths:
            for pair in fla_side.PAIRS:
                if budget.expired(deadline, f"fla comparison {pair} L={length} D={dim}"):
                    continue
                try:
                    entry = fla_side.compare(pair, size.scan.batch, length, size.scan.heads, dim,
                                             repeats=size.repeats, budget_s=size.budget_s, max_bytes=max_bytes)
                except Exception as error:  # reported, never fatal
                    entry = {"op": pair, "L": length, "D": dim, "failed": f"{type(error).__name__}: {error}"[:300]}
                entries.append(entry)
                print(f"  fla {pair:18s} L={length:6d} D={dim:4d} " + json.dumps(
                    {k: entry.get(k) for k in ("forward_ratio", "fwd_bwd_ratio", "relative_difference", "failed")}),
                    flush=True)
    return {"status": "ran", "results": entries}


def device_peak_bytes() -> int | None:
    """The device's peak memory in use since the process started (None where the backend has no stats)."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def run_mixers(size: Size, max_bytes: float, budget: Budget) -> list[dict]:
    deadline, entries = budget.section("mixers"), []
    names = list(size.mixer_names or mixers.default_names("full"))
    history: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for length in size.mixer.lengths:
        for dtype_name, dtype in DTYPES.items():
            for name in names:
                if budget.expired(deadline, f"mixer {name} {dtype_name} L={length}"):
                    continue
                lengths, seconds = history.setdefault((name, dtype_name), ([], []))
                try:
                    entry = mixers.measure(name, length, size.mixer, max_bytes=max_bytes,
                                           max_seconds=max(deadline - time.perf_counter(), 0.0),
                                           previous=(lengths, seconds), dtype=dtype)
                except Exception as error:  # reported, never fatal
                    entry = {"mixer": name, "L": length, "failed": f"{type(error).__name__}: {error}"[:300]}
                entry.update(dtype=dtype_name, device_peak_bytes=device_peak_bytes())
                if "seconds" in entry:
                    lengths.append(length)
                    seconds.append(entry["seconds"])
                entries.append(entry)
                cell = (f"{1e3 * entry['seconds']:.3g} ms" if "seconds" in entry
                        else entry.get("skipped") or entry.get("failed"))
                print(f"  mixer {name:14s} {dtype_name:8s} L={length:6d} {cell}", flush=True)
    return entries


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="output folder (default: benchmarks/results/accelerator[_quick])")
    p.add_argument("--tiny", "--smoke", "--quick", dest="tiny", action="store_true",
                   help="tiny sizes on any backend (the CPU test; --smoke/--quick are aliases for benchmarks.run)")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="global time budget (default 8)")
    p.add_argument("--max-gib", type=float, default=24.0, help="skip cases whose compiled memory exceeds this")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest relative error against reference.py counted as agreement (float32)")
    p.add_argument("--sections", nargs="+", choices=list(SHARES), default=list(SHARES),
                   help="run only these sections (default: all, in the order correctness scans fla mixers)")
    p.add_argument("--only-mixers", nargs="+", metavar="NAME", help="mixer names (default: every registered one)")
    p.add_argument("--fit", type=Path, metavar="RESULTS_JSON",
                   help="print the fastest method per scan, pass, D and L from a results.json, then exit")
    return p.parse_args(argv)


@contextlib.contextmanager
def results_in(folder: Path):
    """``_common.save_plot`` writes into ``folder`` inside this block."""
    previous = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            del os.environ[RESULTS_ENV]
        else:
            os.environ[RESULTS_ENV] = previous


@contextlib.contextmanager
def fast_compilation(enabled: bool):
    """XLA with most optimizations off inside the block (tiny runs: compile time is all
    there is to measure), back to the default after it; nothing changes when not ``enabled``."""
    if not enabled:
        yield
        return
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", False)


def main(argv=None) -> dict:
    args = parse(argv)
    if args.fit:
        print("\n".join(fastest_rules(json.loads(args.fit.read_text())["scans"])))
        return {}
    mode = "tiny" if args.tiny else "full"
    size = SIZES[mode]
    if args.only_mixers:
        for name in args.only_mixers:
            mixers.layers.spec(name)  # unknown names fail here, listing the valid ones
        size = replace(size, mixer_names=tuple(args.only_mixers))
    out = args.out or results_dir() / ("accelerator_quick" if args.tiny else "accelerator")
    out.mkdir(parents=True, exist_ok=True)
    budget, max_bytes = Budget(60 * args.budget_minutes, args.sections), args.max_gib * GiB
    started = datetime.datetime.now(datetime.timezone.utc)
    device = jax.devices()[0]
    print(f"accelerator benchmark ({mode}) on {device.platform}: {device.device_kind}, jax {jax.__version__}",
          flush=True)
    with fast_compilation(args.tiny):
        record = {"mode": mode, "date": started.isoformat(timespec="seconds"), "machine": machine(),
                  "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
                  "options": {"budget_minutes": args.budget_minutes, "max_gib": args.max_gib,
                              "sections": budget.sections,
                              "tolerance": args.tolerance, "sizes": repr(size)}}
        runners = {"correctness": lambda: run_correctness(size, args.tolerance, budget),
                   "scans": lambda: run_scans(size, max_bytes, budget),
                   "fla": lambda: run_fla(size, max_bytes, budget),
                   "mixers": lambda: run_mixers(size, max_bytes, budget)}
        for name, runner in runners.items():
            print(f"\n## {name}", flush=True)
            skipped = {"status": "skipped: not among --sections", "results": []} if name == "fla" else []
            record[name] = runner() if name in budget.sections else skipped
    record["notes"] = budget.notes
    record["wall_s"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    record["verdicts"] = verdicts(record)
    (out / "results.json").write_text(json.dumps(record, indent=2, default=str))
    text = report(record)
    (out / "results.md").write_text(text)
    with results_in(out):
        draw_plots(record)
    print("\n" + text, flush=True)
    flat = record["correctness"] + record["scans"] + record["fla"]["results"] + record["mixers"]
    return {"results": flat, "table": text, "verdicts": record["verdicts"], "mode": mode, "out": str(out)}


def draw_plots(record: dict) -> None:
    """``scans.png`` (forward+backward time per method against L, smallest D), ``mixers.png``
    (train step against L) and, when fla ran, ``fla.png`` (our time over theirs)."""
    def draw_scans(plt):
        fig, axes = plt.subplots(1, len(CASES), figsize=(3.2 * len(CASES), 3.2))
        for ax, case in zip(axes, CASES):
            rows = [r for r in record["scans"] if r["op"] == case.op and r["pass"] == "fwd_bwd"]
            dim = min((r["D"] for r in rows), default=None)
            for method in case.methods + ("auto",):
                points = [(r["L"], r["ms"][method]) for r in rows if r["D"] == dim and method in r["ms"]]
                if points:
                    ax.loglog(*zip(*points), "o-", label=method, markersize=3)
            ax.set_title(f"{case.op} (D={dim})", fontsize=8)
            ax.set_xlabel("L")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
        axes[0].set_ylabel("forward+backward (ms)")
        fig.tight_layout()

    def draw_mixers(plt):
        fig, axes = plt.subplots(1, len(DTYPES), figsize=(12, 4.5))
        for ax, dtype_name in zip(axes, DTYPES):
            for name in dict.fromkeys(r["mixer"] for r in record["mixers"]):
                points = [(r["L"], 1e3 * r["seconds"]) for r in record["mixers"]
                          if r["mixer"] == name and r.get("dtype") == dtype_name and "seconds" in r]
                if points:
                    ax.loglog(*zip(*points), "o-", label=name, markersize=3)
            ax.set_title(f"train step, {dtype_name}")
            ax.set_xlabel("L")
            ax.set_ylabel("ms")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, ncol=2)

    def draw_fla(plt):
        rows = [r for r in record["fla"]["results"] if "fwd_bwd_ratio" in r]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.bar(range(len(rows)), [r["fwd_bwd_ratio"] for r in rows])
        ax.axhline(1.0, color="k", linewidth=1)
        ax.set_xticks(range(len(rows)), [f"{r['op']}\nL={r['L']} D={r['D']}" for r in rows], fontsize=5)
        ax.set_ylabel("ours / theirs, forward+backward")

    save_plot("scans", draw_scans)
    save_plot("mixers", draw_mixers)
    if any("fwd_bwd_ratio" in r for r in record["fla"]["results"]):
        save_plot("fla", draw_fla)


if __name__ == "__main__":
    result = main()
    sys.exit(1 if any("failed" in r for r in result.get("results", [])) else 0)
