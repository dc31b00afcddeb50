"""One entry point for every benchmark suite.

    python -m benchmarks.run --suite all --quick          # CI-sized (minutes)
    python -m benchmarks.run --suite mixers --only s5 attention
    python -m benchmarks.run --suite scans generate       # several suites
    JAX_PLATFORMS=cuda python -m benchmarks.run --suite all   # same commands on GPU/TPU

Suites (each its own module with ``main(argv=None)``, runnable alone as
``python -m benchmarks.<suite>``): ``scans`` (every method of every scan), ``memory``
(matrix-state forward+backward peak memory), ``plstm2d`` (the 2-D pLSTM layer's
forward+backward peak, fused vs per-cell states), ``mixers`` (train-step time and memory of
every mixer against length), ``generate`` (``step`` latency against context length),
``compile`` (compile time of a 4-layer model train step), ``routing`` (routing vs local
vs full attention), ``delta`` (chunked vs sequential delta rule), ``hydra`` (the Hydra
mixer's SSD methods at L = 4k, 16k) and ``parallel`` (sequence-parallel scans).
``delta``, ``hydra`` and ``parallel`` are imported only when run; a
missing module is skipped with a note. ``accelerator`` (``benchmarks/accelerator.py``:
scan correctness, every method timed at device sizes, every mixer's train step, and
flash-linear-attention's kernels side by side) runs only when named, never in ``all``:
its full size is made for a GPU (``--quick``/``--smoke`` run its ``--tiny`` size).

Each suite prints a Markdown table and one verdict line per goal ("goal met" /
"missed: X vs Y") and writes ``benchmarks/results/<suite>.json`` and ``.png``
(``--quick``: ``<suite>_quick.*``, git-ignored). This script then prints every verdict
again, the wall and CPU time of each suite (CPU time of this process: subprocesses,
e.g. ``memory``'s measured runs, are not counted), and writes ``summary.md`` (``summary_quick.md``)
with all tables and verdicts. ``--results DIR`` redirects every file (it sets
``$SEQMODELS_BENCHMARK_RESULTS``). ``--smoke`` runs the suites below ``--quick`` size
(used by ``tests/test_benchmarks.py``); suites without a smoke size (``routing``,
``delta``, ``hydra``, ``parallel``) then run ``--quick``. ``routing`` gets ``--repeats 2`` with
``--quick`` (``1`` with ``--smoke``): its full attention at L = 4k is most of its time.
At full size the suites get ``FULL_ARGV`` (limits that keep the full run within about
15 minutes on 2 cores and within 23.5 GiB of memory: see the comment there).
The exit status is 1 if any suite raised or reported a failed case (a case that raises
is recorded as ``"failed"`` in its suite's results and table; the run goes on).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from ._common import RESULTS_ENV, machine, results_dir, verdict

SUITES = ("scans", "memory", "plstm2d", "mixers", "generate", "compile", "routing", "delta", "hydra", "parallel",
          "accelerator")
NOT_IN_ALL = ("accelerator",)                      # device-sized: run only when named
TAKES_MIXERS = ("mixers", "generate", "compile")   # suites that accept --only <mixer names>
HAS_SMOKE = ("scans", "memory", "plstm2d", "mixers", "generate", "compile", "accelerator")
OPTIONAL = ("delta", "hydra", "parallel")                 # written separately: skipped when missing
# Full-size runs (time-boxed on a shared 2-core CPU): shorter per-case limits for the mixer suites, fewer
# timed calls for routing and L ≤ 8k (its full attention at L = 16k took ~17 GiB of host memory and was
# OOM-killed on the 23.5 GiB machine), and delta's forward+backward timed
# only where its compiled peak is ≤ 1 GiB (its sequential and chunked backward at B = 8, L ≥ 4k take
# minutes per case; the peaks are still reported, and the memory suite covers L = 16k).
FULL_ARGV = {"mixers": ["--max-seconds", "20"], "generate": ["--max-seconds", "20"],
             "routing": ["--repeats", "3", "--lengths", "1024", "2048", "4096", "8192"],
             "delta": ["--max-gib", "1"]}
ROUTING_GOALS = {"routing": (None, 1.6), "full": (1.6, 2.4)}  # the goals; "local" has none


def suite_argv(suite: str, *, quick: bool, smoke: bool, only: list[str] | None) -> list[str]:
    """The command line handed to ``benchmarks.<suite>.main``."""
    argv = []
    if smoke and suite in HAS_SMOKE:
        argv.append("--smoke")
    elif quick or smoke:
        argv.append("--quick")
    if suite == "routing" and (quick or smoke):  # its full attention at L = 4k dominates: fewer calls
        argv += ["--repeats", "1" if smoke else "2"]
    if not (quick or smoke):
        argv += FULL_ARGV.get(suite, [])
    if only and suite in TAKES_MIXERS:
        argv += ["--only", *only]
    return argv


def routing_verdicts(record: dict) -> list[str]:
    """benchmarks/routing.py reports exponents only; the goals are judged here."""
    lines = []
    for method, p in record.get("exponents", {}).items():
        low, high = ROUTING_GOALS.get(method, (None, None))
        if high is None:
            continue
        target = f"p ≤ {high}" if low is None else f"{low} ≤ p ≤ {high}"
        met = p <= high and (low is None or p >= low)
        lines.append(verdict(f"routing suite, growth exponent of {method}", met, f"p = {p:.2f}", target))
    return lines


def run_suite(suite: str, argv: list[str]) -> tuple[str, dict | None, list[str]]:
    """Import and run one suite; returns ``(status, record, verdict lines)``."""
    try:
        module = importlib.import_module(f"benchmarks.{suite}")
    except ModuleNotFoundError as error:
        if suite in OPTIONAL and error.name == f"benchmarks.{suite}":
            print(f"note: benchmarks/{suite}.py is not there yet: suite {suite!r} skipped", flush=True)
            return "skipped (module missing)", None, []
        raise
    record = module.main(argv)
    record = record if isinstance(record, dict) else {}
    lines = routing_verdicts(record) if suite == "routing" else list(record.get("verdicts", []))
    entries = record.get("results", [])
    failed = sum(1 for r in entries if isinstance(r, dict) and "failed" in r) if isinstance(entries, list) else 0
    return ("ok" if not failed else f"{failed} case(s) failed"), record, lines


def summary(rows: list[tuple[str, str, float, float]], reports: dict[str, dict], lines: dict[str, list[str]],
            quick: bool) -> str:
    info = machine()
    parts = [f"# Benchmark summary{' (quick)' if quick else ''}", "",
             f"Machine: {info['processor']}, {info['cpu_count']} CPU cores, {info['memory_gib']} GiB, "
             f"backend {info['backend']} ({', '.join(info['devices'])}), jax {info['jax']}, "
             f"flax {info['flax']}, Python {info['python']}.", "",
             "| suite | status | wall (s) | CPU of this process (s) |", "|---|---|---|---|"]
    parts += [f"| {s} | {status} | {seconds:.0f} | {cpu:.0f} |" for s, status, seconds, cpu in rows]
    for suite, record in reports.items():
        parts += ["", f"## {suite}", ""]
        if record.get("table"):
            parts += [record["table"], ""]
        parts += [f"- {line}" for line in lines.get(suite, [])]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", nargs="+", default=["all"], choices=SUITES + ("all",), help="suites to run")
    p.add_argument("--quick", action="store_true", help="CI-sized runs")
    p.add_argument("--smoke", action="store_true", help="below --quick size, for the tests")
    p.add_argument("--only", nargs="+", metavar="NAME", help="mixer names for the mixers/generate/compile suites")
    p.add_argument("--results", metavar="DIR", help=f"write results here (sets ${RESULTS_ENV})")
    args = p.parse_args(argv)
    if args.results:
        os.environ[RESULTS_ENV] = args.results
    suites = ([s for s in SUITES if s not in NOT_IN_ALL] + [s for s in args.suite if s in NOT_IN_ALL]
              if "all" in args.suite else list(dict.fromkeys(args.suite)))
    quick = args.quick or args.smoke

    rows, reports, lines = [], {}, {}
    failed = False
    start_all = time.perf_counter()
    for suite in suites:
        argv_suite = suite_argv(suite, quick=args.quick, smoke=args.smoke, only=args.only)
        print(f"\n## suite {suite}: python -m benchmarks.{suite} {' '.join(argv_suite)}\n", flush=True)
        start, cpu = time.perf_counter(), time.process_time()
        try:
            status, record, suite_lines = run_suite(suite, argv_suite)
        except Exception:  # one broken suite must not hide the others' results
            traceback.print_exc()
            status, record, suite_lines = "failed", None, []
        failed = failed or "failed" in status
        rows.append((suite, status, time.perf_counter() - start, time.process_time() - cpu))
        if record is not None:
            reports[suite], lines[suite] = record, suite_lines

    print("\n## verdicts\n")
    for suite in reports:
        for line in lines[suite]:
            print(f"[{suite}] {line}")
    print("\n## wall time\n")
    for suite, status, seconds, cpu in rows:
        print(f"{suite:10s} {seconds:7.1f} s wall {cpu:7.1f} s CPU  {status}")
    print(f"{'total':10s} {time.perf_counter() - start_all:7.1f} s wall")
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("summary_quick.md" if quick else "summary.md")
    path.write_text(summary(rows, reports, lines, quick))
    print(f"\nsummary: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
