"""Compile-time benchmark: a 4-layer ``SequenceModel`` train step for every registered mixer.

    python -m benchmarks.compile            # d_model = 256, B = 8, L = 1024, 4 layers
    python -m benchmarks.compile --quick    # d_model = 32, B = 2, L = 64, 1 layer, QUICK_MIXERS

The train step is what a training run compiles: the model on real-valued inputs, the
loss ``mean(y²)`` plus sown auxiliary losses, gradients with respect to every
parameter and an optax Adam update (``_common.train_step``). Times are wall seconds of
``jax.jit(step).lower(...)`` (tracing and lowering to StableHLO) and of
``.compile()`` (XLA), and the process CPU time of both (a check on a busy machine:
wall time inflates when other processes share the cores), measured once per mixer in a process where nothing identical
was compiled before (no persistent compilation cache is configured by default; if
``jax_compilation_cache_dir`` is set the numbers are meaningless and a warning is
printed). Image mixers get a ``(B, h, w, 8)`` input with ``h·w = L`` and the video
mixer 16 frames, as in ``benchmarks/mixers.py``. Goal: < 20 s per mixer on a 2-core
CPU. Results: ``benchmarks/results/compile.{json,png}``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import seqmodels.layers as layers
from seqmodels.models import SequenceModel

from ._common import markdown_table, save_json, save_plot, train_step, verdict
from .mixers import default_names, input_shape, mixer_options

INPUT_DIM = 8
GOAL_SECONDS = 20.0


@dataclass(frozen=True)
class Size:
    n_layers: int
    d_model: int
    batch: int
    length: int
    small: bool = False


SIZES = {
    "full": Size(n_layers=4, d_model=256, batch=8, length=1024),
    "quick": Size(n_layers=1, d_model=32, batch=2, length=64, small=True),
    "smoke": Size(n_layers=1, d_model=16, batch=1, length=16, small=True),
}


def measure(name: str, size: Size) -> dict:
    model = SequenceModel(name, d_model=size.d_model, n_layers=size.n_layers, output_dim=INPUT_DIM,
                          input_dim=INPUT_DIM, mixer_options=mixer_options(name, size.length, small=size.small),
                          rngs=nnx.Rngs(0))
    step, state = train_step(model, optax.adam(1e-3))
    x = jax.random.normal(jax.random.PRNGKey(0), input_shape(name, size.length, size.batch, INPUT_DIM), jnp.float32)
    start, cpu_start = time.perf_counter(), time.process_time()
    lowered = jax.jit(step).lower(state, x)
    traced = time.perf_counter()
    lowered.compile()
    done = time.perf_counter()
    return {"mixer": name, "lower_s": traced - start, "compile_s": done - traced, "total_s": done - start,
            "cpu_s": time.process_time() - cpu_start}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="d_model = 32, 1 layer, L = 64")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for the tests (seconds)")
    p.add_argument("--only", nargs="*", help="mixer names (default: every registered mixer)")
    args = p.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[mode]
    names = list(args.only) if args.only else (layers.names() if mode == "full" else default_names(mode))
    if jax.config.jax_compilation_cache_dir:
        print(f"warning: a persistent compilation cache is set ({jax.config.jax_compilation_cache_dir}): "
              "compile times below may be cache hits")
    print(f"compile: {size.n_layers}-layer SequenceModel train step (Adam), d_model = {size.d_model}, "
          f"B = {size.batch}, L = {size.length}", flush=True)
    results = []
    for name in names:
        try:
            results.append(measure(name, size))
        except Exception as error:  # one broken mixer must not end a long run
            results.append({"mixer": name, "failed": f"{type(error).__name__}: {error}"[:300]})
            print(f"  {name:24s} FAILED {results[-1]['failed']}", flush=True)
            continue
        r = results[-1]
        print(f"  {name:24s} lower {r['lower_s']:6.2f} s  compile {r['compile_s']:6.2f} s", flush=True)
    rows = [[r["mixer"], r["lower_s"], r["compile_s"], r["total_s"], r["cpu_s"]] if "failed" not in r
            else [r["mixer"], f"failed ({r['failed'].split(':')[0]})", "", "", ""] for r in results]
    record = {"results": results, "mode": mode, "n_layers": size.n_layers, "d_model": size.d_model,
              "batch": size.batch, "length": size.length,
              "table": markdown_table(["mixer", "trace + lower (s)", "XLA compile (s)", "total (s)", "CPU (s)"],
                                      rows)}
    compiled = [r for r in results if "failed" not in r] or [{"mixer": "none", "total_s": float("nan")}]
    slow = sorted((r for r in compiled if r["total_s"] >= GOAL_SECONDS), key=lambda r: -r["total_s"])
    worst = max(compiled, key=lambda r: r["total_s"])
    record["verdicts"] = [verdict(
        f"compile time of a {size.n_layers}-layer train step", not slow,
        ", ".join(f"{r['mixer']} {r['total_s']:.1f} s" for r in slow[:4]) if slow
        else f"max {worst['mixer']} {worst['total_s']:.1f} s", f"< {GOAL_SECONDS:.0f} s")]
    print()
    print(record["table"])
    print()
    print("\n".join(record["verdicts"]))
    stem = "compile" if mode == "full" else "compile_quick"
    save_json(stem, record)

    def draw(plt):
        fig, ax = plt.subplots(figsize=(7, 4))
        done = [r for r in results if "failed" not in r]
        ys = range(len(done))
        ax.barh(ys, [r["lower_s"] for r in done], label="trace + lower")
        ax.barh(ys, [r["compile_s"] for r in done], left=[r["lower_s"] for r in done], label="XLA compile")
        ax.set_yticks(list(ys), [r["mixer"] for r in done], fontsize=7)
        ax.axvline(GOAL_SECONDS, color="k", linestyle="--", linewidth=1)
        ax.set_xlabel("seconds")
        ax.set_title(f"compile time, {size.n_layers}-layer train step, d_model={size.d_model}")
        ax.legend()

    save_plot(stem, draw)
    return record


if __name__ == "__main__":
    main()
