"""pLSTM 2-D memory benchmark: one ``plstm2d`` layer forward+backward, fused wavefront vs per-cell states.

    python -m benchmarks.plstm2d            # B = 8, d_model = 128: 32 × 32, 64 × 64; timing 16 × 16, B = 2, d64
    python -m benchmarks.plstm2d --quick    # B = 2, d_model = 32: 8 × 8 and 16 × 16; timing at 8 × 8
    python -m benchmarks.plstm2d --run      # also run the fused 64 × 64 case once in a subprocess (peak RSS)

Goal (issue 15): ``plstm2d`` forward+backward on a 64 × 64 grid, B = 8, d_model = 128
(one head of 128 × 128, ``transition_dim = 1``) within 4 GiB peak. One per-cell state
is then ``B·X·Y·Dk·Dv·4`` bytes = 2 GiB per edge; the old path
(``method="wavefront"`` for P-mode, ``"factorized"`` for D-mode: ``scans.grid_scan``'s
states on every cell, then the read-out) keeps several such arrays per orientation.
``auto`` is the fused wavefront (``scans.plstm_grid_scan``): a few diagonals of states.

For each mode (P, D) and method it compiles the train step of ``benchmarks._common``
(``mean(y²)``, gradients of every parameter) and reports XLA's peak-memory estimate
(temporaries + arguments + outputs; nothing executed) and the compile time. At the
timing size it runs old and new in this process and reports the ratio of their median
step times (new / old). Results: ``benchmarks/results/plstm2d.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

import seqmodels.layers as layers

from ._common import (GiB, budgeted_seconds, compile_stats, format_bytes, markdown_table, run_child, save_json,
                      train_step, verdict)
from .memory import peak_rss_bytes

GOAL_BYTES = 4 * GiB
OLD_METHOD = {"P": "wavefront", "D": "factorized"}  # what "auto" resolved to before the fused path


@dataclass(frozen=True)
class Size:
    batch: int
    d_model: int
    sides: tuple[int, ...]        # square grids whose compiled peak is reported
    timing: tuple[int, int, int]  # (side, batch, d_model) of the old-vs-new timing


SIZES = {
    "full": Size(8, 128, (32, 64), (16, 2, 64)),
    "quick": Size(2, 32, (8, 16), (8, 2, 32)),
    "smoke": Size(1, 8, (4,), (4, 1, 8)),
}


def compile_case(mode: str, method: str, side: int, batch: int, d_model: int):
    """``(compiled train step, its state, its input)`` for one layer."""
    mixer = layers.build("plstm2d", d_model, rngs=nnx.Rngs(0), mode=mode, method=method)
    step, state = train_step(mixer)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, side, side, d_model), jnp.float32)
    return compile_stats(step, state, x), state, x


def run_in_subprocess(mode: str, side: int, size_name: str) -> dict:
    return run_child("plstm2d", "--child", mode, str(side), "--mode", size_name)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="B = 2, d_model = 32, 8 × 8 and 16 × 16")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for the tests (seconds)")
    p.add_argument("--run", action="store_true", help="run the fused case at the largest side once (peak RSS)")
    p.add_argument("--mode", choices=sorted(SIZES), help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=2, metavar=("MODE", "SIDE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size_name = args.mode or ("smoke" if args.smoke else "quick" if args.quick else "full")
    size = SIZES[size_name]
    if args.child:  # one executed step in a fresh process (see run_in_subprocess)
        compiled, state, x = compile_case(args.child[0], "auto", int(args.child[1]), size.batch, size.d_model)
        start = time.perf_counter()
        jax.block_until_ready(compiled.run(state, x))
        print(json.dumps({"seconds": time.perf_counter() - start, "max_rss_bytes": peak_rss_bytes()}))
        return {}

    print(f"plstm2d: train step (forward + backward), B = {size.batch}, d_model = {size.d_model}", flush=True)
    results = []
    for side in size.sides:
        for mode in ("P", "D"):
            for method in ("auto", OLD_METHOD[mode]):
                compiled, _, _ = compile_case(mode, method, side, size.batch, size.d_model)
                entry = {"grid": f"{side}x{side}", "side": side, "mode": mode, "method": method,
                         "peak_bytes": compiled.peak_bytes, "compile_s": compiled.seconds}
                if args.run and method == "auto" and side == max(size.sides) and mode == "P":
                    entry.update(run_in_subprocess(mode, side, size_name))
                del compiled
                results.append(entry)
                print(f"  {side}x{side} {mode} {method:10s} compiled peak {format_bytes(entry['peak_bytes'])}, "
                      f"compile {entry['compile_s']:.1f} s", flush=True)

    side, batch, d_model = size.timing
    timings = []
    for mode in ("P", "D"):
        seconds = {}
        for method in ("auto", OLD_METHOD[mode]):
            compiled, state, x = compile_case(mode, method, side, batch, d_model)
            seconds[method] = budgeted_seconds(compiled.run, state, x, repeats=3, budget_s=2.0)[0]
        ratio = seconds["auto"] / seconds[OLD_METHOD[mode]]
        timings.append({"mode": mode, "grid": f"{side}x{side}", "batch": batch, "d_model": d_model,
                        "seconds": seconds, "ratio_new_over_old": ratio})
        print(f"  timing {side}x{side} B={batch} d={d_model} {mode}: fused {1e3 * seconds['auto']:.1f} ms, "
              f"{OLD_METHOD[mode]} {1e3 * seconds[OLD_METHOD[mode]]:.1f} ms, ratio {ratio:.2f}", flush=True)

    rows = [[r["grid"], r["mode"], r["method"] + (" (fused)" if r["method"] == "auto" else " (old)"),
             format_bytes(r["peak_bytes"]), f"{r['compile_s']:.1f}",
             f"{r['seconds']:.1f} s, RSS {format_bytes(r['max_rss_bytes'])}" if "seconds" in r
             else r.get("failed", "–")] for r in results]
    table = markdown_table(["grid", "mode", "method", "compiled peak", "compile (s)", "executed"], rows)
    largest = max(size.sides)
    lines = []
    for mode in ("P", "D"):
        auto = next(r for r in results if r["side"] == largest and r["mode"] == mode and r["method"] == "auto")
        peak = max(b for b in (auto["peak_bytes"], auto.get("max_rss_bytes")) if b is not None)
        lines.append(verdict(f"plstm2d {mode}-mode {largest}x{largest} forward+backward under "
                             f"{format_bytes(GOAL_BYTES)}", peak < GOAL_BYTES, f"{format_bytes(peak)} peak",
                             format_bytes(GOAL_BYTES)))
    record = {"results": results, "timings": timings, "mode": size_name, "batch": size.batch,
              "d_model": size.d_model, "goal_bytes": GOAL_BYTES, "table": table, "verdicts": lines}
    print()
    print(table)
    print()
    print("\n".join(lines))
    save_json("plstm2d" if size_name == "full" else f"plstm2d_{size_name}", record)
    return record


if __name__ == "__main__":
    main()
