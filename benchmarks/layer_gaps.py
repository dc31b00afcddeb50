"""Layer gaps of issue 21, each measured as a ratio in one process.

    python -m benchmarks.layer_gaps             # the sizes of the issue
    python -m benchmarks.layer_gaps --smoke     # tiny sizes, forward passes only (the test suite)

Pairs of cases whose ratio the issue sets a goal for (or that a user compares):

* ``lightnet`` / ``lightnet_bidirectional``: forward, and forward + backward
  (``_common.train_step``), at B = 4, L = 1024, d_model = 256 (goal: forward ≤ 1.5×);
* ``hydra_causal.step`` at B = 4 / B = 1, jitted as ``SequenceModel.generate`` and
  notebook 00 call it (d_model = 64; goal ≤ 2×);
* ``s4d`` ``mode="scan"`` / ``mode="conv"``, forward and forward + backward, at B = 8,
  L = 1024, H = 256, N = 64; and ``output="none"`` (the bare SSM) / the default block.

Every case is compiled and warmed up first; then the calls *alternate* over all cases,
``repeats`` rounds in a shuffled order (a call right after a large train step is slowed
by it: 2× measured for the bare S4D placed after S4D's scan train step), and each case
reports its median, so a change of machine load during the run hits both sides of a
ratio alike. The load average (``os.getloadavg``)
is recorded before and after. Results: ``results/layer_gaps.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

import seqmodels.layers as layers

from ._common import markdown_table, save_json, train_step, verdict

FULL = {"lightnet": (4, 1024, 256), "hydra": 64, "s4d": (8, 1024, 256, 64), "repeats": 9}
SMOKE = {"lightnet": (1, 32, 16), "hydra": 16, "s4d": (1, 32, 8, 4), "repeats": 1}


def _forward(name, x, **options):
    graphdef, state = nnx.split(layers.build(name, x.shape[-1], rngs=nnx.Rngs(0), **options))
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    return lambda: fn(state, x)


def _train(name, x, **options):
    step, state = train_step(layers.build(name, x.shape[-1], rngs=nnx.Rngs(0), **options))
    fn = jax.jit(step)
    return lambda: fn(state, x)


def _step(name, d_model, batch, small):
    options = layers.spec(name).example_options if small else {}
    mixer = layers.build(name, d_model, rngs=nnx.Rngs(0), **options)
    graphdef, state = nnx.split(mixer)
    fn = jax.jit(lambda s, x_t, c: nnx.merge(graphdef, s).step(x_t, c))
    x_t, carry = jax.random.normal(jax.random.key(1), (batch, d_model)), mixer.init_state(batch)
    return lambda: fn(state, x_t, carry)


def cases(size: dict, small: bool) -> dict:
    """``{name: zero-argument callable}`` of every timed case."""
    small_options = lambda name: layers.spec(name).example_options if small else {}  # noqa: E731
    B, L, d = size["lightnet"]
    x = jax.random.normal(jax.random.key(0), (B, L, d))
    out = {}
    for name in ("lightnet", "lightnet_bidirectional"):
        out[f"{name} forward"] = _forward(name, x, **small_options(name))
        if not small:  # the smoke run checks the wiring: forward passes only (compile time)
            out[f"{name} train step"] = _train(name, x, **small_options(name))
    for batch in (1, 4):
        out[f"hydra_causal.step B={batch}"] = _step("hydra_causal", size["hydra"], batch, small)
    B, L, H, N = size["s4d"]
    u = jax.random.normal(jax.random.key(2), (B, L, H))
    for mode in ("conv", "scan"):
        out[f"s4d {mode} forward"] = _forward("s4d", u, state_size=N, mode=mode)
        if not small:
            out[f"s4d {mode} train step"] = _train("s4d", u, state_size=N, mode=mode)
    out["s4d output=none forward"] = _forward("s4d", u, state_size=N, output="none")
    return out


def measure(fns: dict, repeats: int) -> dict:
    """Median seconds per case, the calls alternating over the cases."""
    for fn in fns.values():  # compile + warm up
        jax.block_until_ready(fn())
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    order, shuffle = list(fns), random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)  # no case always follows the same one (a large train step slows the next call)
        for name in order:
            start = time.perf_counter()
            jax.block_until_ready(fns[name]())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


RATIOS = [  # (label, numerator, denominator, goal or None)
    ("lightnet / bidirectional, forward", "lightnet forward", "lightnet_bidirectional forward", 1.5),
    ("lightnet / bidirectional, train step", "lightnet train step", "lightnet_bidirectional train step", None),
    ("hydra_causal.step B=4 / B=1", "hydra_causal.step B=4", "hydra_causal.step B=1", 2.0),
    ("s4d scan / conv, forward", "s4d scan forward", "s4d conv forward", None),
    ("s4d scan / conv, train step", "s4d scan train step", "s4d conv train step", None),
    ("s4d output=none / linear, forward", "s4d output=none forward", "s4d conv forward", None),
]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (tests)")
    args = p.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    load_before = os.getloadavg()
    seconds = measure(cases(size, small=args.smoke), size["repeats"])
    load_after = os.getloadavg()
    ratios = [(label, num, den, goal) for label, num, den, goal in RATIOS if num in seconds and den in seconds]
    rows = [[label, 1e3 * seconds[num], 1e3 * seconds[den], seconds[num] / seconds[den]]
            for label, num, den, _ in ratios]
    table = markdown_table(["ratio", "numerator ms", "denominator ms", "ratio"], rows)
    verdicts = [verdict(label, seconds[num] / seconds[den] <= goal, f"{seconds[num] / seconds[den]:.2f}×",
                        f"≤ {goal}×") for label, num, den, goal in ratios if goal is not None]
    load = f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    print(table, *verdicts, load, sep="\n")
    record = {"mode": "smoke" if args.smoke else "full", "sizes": size, "seconds": seconds, "table": table,
              "verdicts": verdicts, "load_average": {"before": load_before, "after": load_after}}
    save_json("layer_gaps" + ("_smoke" if args.smoke else ""), record)
    return record


if __name__ == "__main__":
    main()
