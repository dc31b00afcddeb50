"""Generation benchmark: per-token ``step`` latency and state size against context length.

    python -m benchmarks.generate            # B = 1, d_model = 256, L ∈ {256, 1k, 4k}
    python -m benchmarks.generate --quick    # d_model = 32, L ∈ {64, 256}, causal QUICK_MIXERS

For every causal mixer (``attention`` included, with its KV cache) and each context
length ``L``: the state after ``L`` tokens is built by actually stepping through a
random context (a jitted ``lax.scan`` over ``step`` in blocks of tokens); then the
next tokens are generated one jitted ``step`` call at a time, as a decoding loop does
(the state buffers donated and fed back, each call ended by ``block_until_ready``),
and the median latency of those calls is reported, against re-running the parallel
forward over the ``L`` tokens, which is what a model without a recurrent form must do
per generated token. ``state`` is the size of everything ``step`` carries.
Attention's cache is built for the context plus the timed tokens
(``max_length = L + calls``), so its step grows with ``L`` (a KV cache is ``O(L)`` per
token); the other mixers' states have a fixed size (routing's cache holds its fixed
``num_clusters``). ``convs5`` steps one video frame of 4 × 4 pixels: its
``L`` counts pixels × frames (``L/16`` frames of context). A length whose context
would take more than ``--max-seconds`` (60 s) to step through, extrapolated from the previous
length's measured prefill time (``prefill_s``, compilation of a new block included)
and its growth (at least linear), is skipped ("skipped (too large)"), as is a
forward whose compiled peak exceeds ``--max-gib`` (8 GiB).

Goals: ``step`` flat in ``L`` (largest / smallest latency over the lengths ≤ 1.5,
attention excepted: it is the baseline) and ≥ 50× faster than re-running the forward
at L = 4096 (``--quick``: at its largest length; tiny widths are dispatch-bound there,
so quick verdicts are not meaningful). Results: ``benchmarks/results/generate.{json,png}``.
"""

from __future__ import annotations

import argparse
import inspect
import math
import statistics
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

import seqmodels.layers as layers

from ._common import (GiB, budgeted_seconds, compile_stats, format_bytes, markdown_table, save_json, save_plot,
                      tree_bytes, verdict)
from .mixers import default_names, mixer_options

FRAME = (4, 4)          # convs5: pixels per step
PREFILL_BLOCK = 256     # context tokens per compiled scan of steps
FLAT_RATIO = 1.5
SPEEDUP = 50.0
SPEEDUP_AT = 4096
WARMUP_CALLS = 3


@dataclass(frozen=True)
class Size:
    lengths: tuple[int, ...]
    d_model: int
    step_repeats: int
    budget_s: float
    small: bool = False
    batch: int = 1


SIZES = {
    "full": Size((256, 1024, 4096), d_model=256, step_repeats=51, budget_s=2.0),
    "quick": Size((64, 256), d_model=32, step_repeats=31, budget_s=0.5, small=True),
    "smoke": Size((16, 32), d_model=16, step_repeats=5, budget_s=0.1, small=True),
}


def causal_names(mode: str = "full") -> list[str]:
    """The causal ones among the mixers suite's defaults (every registered mixer at full size)."""
    return [n for n in default_names(mode) if layers.spec(n).cls.causal]


def positions_per_step(cls) -> int:
    return FRAME[0] * FRAME[1] if cls.temporal else 1


def token_shape(cls, size: Size) -> tuple[int, ...]:
    """Shape of one step's input ``x_t``."""
    return (size.batch,) + (FRAME if cls.temporal else ()) + (size.d_model,)


def timed_calls(size: Size) -> int:
    return size.step_repeats + WARMUP_CALLS


def generation_options(name: str, length: int, size: Size) -> dict:
    """The mixers suite's options, made for inference: a KV cache (``max_length``) sized for
    the context and the timed tokens; ``deterministic`` (inference: no centroid updates) where a
    mixer has it. (Routing's number of clusters is fixed at construction, so the cache, the step
    and the forward use the same clusters at every length.)"""
    spec = layers.spec(name)
    defaults = spec.options()
    options = mixer_options(name, length, small=size.small)
    if "max_length" in defaults:  # a KV cache: the context and the timed tokens
        options["max_length"] = length // positions_per_step(spec.cls) + timed_calls(size)
    if "deterministic" in defaults:
        options["deterministic"] = True
    return options


@dataclass
class Stepper:
    """A built mixer with its jitted ``step`` (state donated) and prefill block, shared by
    every length with the same options (one compilation for fixed-shape states)."""

    graphdef: object
    params: object
    mixer: nnx.Module
    step: object
    block: object


def stepper(name: str, length: int, size: Size, cache: dict) -> Stepper:
    options = generation_options(name, length, size)
    key = (name, tuple(sorted(options.items())))
    if key not in cache:
        cache.clear()  # one mixer at a time: free the previous one
        mixer = layers.build(name, size.d_model, rngs=nnx.Rngs(0), **options)
        graphdef, params = nnx.split(mixer)

        def block(params, state, xs):
            model = nnx.merge(graphdef, params)
            return jax.lax.scan(lambda s, x_t: (model.step(x_t, s)[1], None), state, xs)[0]

        step = jax.jit(lambda p, x, s: nnx.merge(graphdef, p).step(x, s), donate_argnums=2)
        cache[key] = Stepper(graphdef, params, mixer, step, jax.jit(block))
    return cache[key]


def prefill_block(cls, size: Size) -> int:
    """Tokens per compiled block of steps: divides every context, so one compilation serves all."""
    return min(PREFILL_BLOCK, math.gcd(*(n // positions_per_step(cls) for n in size.lengths)))


def initial_state(mixer, batch: int):
    """``init_state``, with a fixed frame shape for video mixers (a ``lax.scan`` carry needs one)."""
    if "spatial_shape" in inspect.signature(mixer.init_state).parameters:
        return mixer.init_state(batch, spatial_shape=FRAME)
    return mixer.init_state(batch)


def decode_seconds(run, params, x_t, state, repeats: int) -> float:
    """Median latency of ``repeats`` decoding calls ``y, state = run(params, x_t, state)`` after warm-up."""
    times = []
    for i in range(WARMUP_CALLS + repeats):
        start = time.perf_counter()
        y, state = run(params, x_t, state)
        jax.block_until_ready(y)
        if i >= WARMUP_CALLS:
            times.append(time.perf_counter() - start)
    jax.block_until_ready(state)
    return statistics.median(times)


def predicted_prefill_seconds(previous: list[dict], length: int) -> float | None:
    """Seconds to step through a context of ``length`` positions, extrapolated from the
    previous lengths' measured prefill times with the growth seen so far (at least linear)."""
    timed = [r for r in previous if "prefill_s" in r]
    if not timed:
        return None
    last = timed[-1]
    growth = 1.0
    if len(timed) >= 2:
        growth = max(1.0, math.log(last["prefill_s"] / timed[-2]["prefill_s"]) / math.log(last["L"] / timed[-2]["L"]))
    return last["prefill_s"] * (length / last["L"]) ** growth


def prefill(runner: Stepper, state, tokens: int, block: int, shape, key):
    """The state after stepping through ``tokens`` random inputs, ``block`` steps per compiled call."""
    for done in range(0, tokens, block):
        xs = jax.random.normal(jax.random.fold_in(key, done), (block,) + shape, jnp.float32)
        state = runner.block(runner.params, state, xs)
    return jax.block_until_ready(state)


def measure(name: str, length: int, size: Size, *, max_bytes: float, max_seconds: float,
            previous: list[dict], cache: dict) -> dict:
    cls = layers.spec(name).cls
    per_step = positions_per_step(cls)
    entry = {"mixer": name, "L": length}
    guess = predicted_prefill_seconds(previous, length)
    if guess is not None and guess > max_seconds:
        return dict(entry, skipped=f"too large (context predicted to take {guess:.0f} s > {max_seconds:.0f} s)")
    runner = stepper(name, length, size, cache)
    graphdef, params = runner.graphdef, runner.params
    shape = token_shape(cls, size)
    key = jax.random.PRNGKey(0)

    start = time.perf_counter()
    state = prefill(runner, initial_state(runner.mixer, size.batch), length // per_step, prefill_block(cls, size),
                    shape, key)
    entry["prefill_s"] = time.perf_counter() - start  # includes compiling the block when new
    entry["state_bytes"] = tree_bytes(state)
    x_t = jax.random.normal(jax.random.fold_in(key, 1 << 30), shape, jnp.float32)
    entry["step_s"] = decode_seconds(runner.step, params, x_t, state, size.step_repeats)
    del state

    frames = (length // per_step,) + (FRAME if cls.temporal else ())
    x = jax.random.normal(key, (size.batch,) + frames + (size.d_model,), jnp.float32)
    forward = compile_stats(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
    entry["forward_peak_bytes"] = forward.peak_bytes
    if forward.peak_bytes is not None and forward.peak_bytes > max_bytes:
        entry["forward_skipped"] = f"too large ({forward.peak_bytes / GiB:.1f} GiB)"
    else:
        entry["forward_s"], _ = budgeted_seconds(forward.run, params, x, repeats=5, budget_s=size.budget_s,
                                                 slow_warmup_counts=True)
        entry["speedup"] = entry["forward_s"] / entry["step_s"]
    return entry


def run(names, size: Size, *, max_bytes: float, max_seconds: float) -> list[dict]:
    results, cache = [], {}
    for name in names:
        done: list[dict] = []
        for length in size.lengths:
            try:
                entry = measure(name, length, size, max_bytes=max_bytes, max_seconds=max_seconds, previous=done,
                                cache=cache)
            except Exception as error:  # one broken case must not end a long run
                entry = {"mixer": name, "L": length, "failed": f"{type(error).__name__}: {error}"[:300]}
            done.append(entry)
            if "skipped" in entry or "failed" in entry:
                print(f"  {name:12s} L={length:6d} {entry.get('skipped') or 'FAILED ' + entry['failed']}", flush=True)
                continue
            fwd = f"{1e3 * entry['forward_s']:.2f} ms" if "forward_s" in entry else "skipped (too large)"
            print(f"  {name:12s} L={length:6d} step {1e6 * entry['step_s']:8.1f} µs  forward {fwd}", flush=True)
        results.extend(done)
    return results


def table(results) -> str:
    rows = []
    for r in results:
        if "skipped" in r or "failed" in r:
            why = "skipped (too large)" if "skipped" in r else f"failed ({r['failed'].split(':')[0]})"
            rows.append([r["mixer"], r["L"], why, "", "", ""])
            continue
        forward = f"{1e3 * r['forward_s']:.3g}" if "forward_s" in r else "skipped (too large)"
        speedup = f"{r['speedup']:.0f}×" if "speedup" in r else "–"
        rows.append([r["mixer"], r["L"], f"{1e6 * r['step_s']:.1f}", forward, speedup,
                     format_bytes(r["state_bytes"])])
    return markdown_table(["mixer", "context L", "step (µs)", "forward (ms)", "forward / step", "state"], rows)


def verdicts(results, names, lengths) -> list[str]:
    lines = []
    ratios = {}
    for name in names:
        if name == "attention":
            continue
        times = [r["step_s"] for r in results if r["mixer"] == name and "step_s" in r]
        if len(times) >= 2:
            ratios[name] = max(times) / min(times)
    if ratios:
        worst = sorted(ratios.items(), key=lambda kv: -kv[1])
        bad = [(n, q) for n, q in worst if q > FLAT_RATIO]
        shown = ", ".join(f"{n} {q:.2f}×" for n, q in (bad or worst)[:4])
        lines.append(verdict("step flat in L (max / min latency)", not bad,
                             shown if bad else f"worst {worst[0][0]} {worst[0][1]:.2f}×", f"≤ {FLAT_RATIO}×"))
    at = SPEEDUP_AT if SPEEDUP_AT in lengths else max(lengths)
    speedups = {r["mixer"]: r["speedup"] for r in results if r["L"] == at and "speedup" in r}
    if speedups:
        slow = sorted(((n, s) for n, s in speedups.items() if s < SPEEDUP), key=lambda kv: kv[1])
        shown = ", ".join(f"{n} {s:.0f}×" for n, s in slow[:4])
        lines.append(verdict(f"step vs re-running the forward at L = {at}", not slow,
                             shown if slow else f"min {min(speedups.values()):.0f}×", f"≥ {SPEEDUP:.0f}×"))
    return lines


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="d_model = 32, L ∈ {64, 256}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for the tests (seconds)")
    p.add_argument("--only", nargs="*", help="causal mixer names (default: every causal mixer)")
    p.add_argument("--max-gib", type=float, default=8.0, help="skip forwards whose compiled peak exceeds this")
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip contexts predicted to take longer")
    args = p.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[mode]
    names = causal_names(mode)
    if args.only:
        names = [n for n in args.only if n in causal_names()]
        skipped = sorted(set(args.only) - set(names))
        if skipped:
            print(f"generate: not causal or unknown, skipped: {', '.join(skipped)}")
    print(f"generate: step latency, B = {size.batch}, d_model = {size.d_model}", flush=True)
    results = run(names, size, max_bytes=args.max_gib * GiB, max_seconds=args.max_seconds)
    record = {"results": results, "d_model": size.d_model, "batch": size.batch, "lengths": list(size.lengths),
              "mode": mode, "frame": list(FRAME)}
    record["table"] = table(results)
    record["verdicts"] = verdicts(results, names, size.lengths)
    print()
    print(record["table"])
    print()
    print("\n".join(record["verdicts"]))
    stem = "generate" if mode == "full" else "generate_quick"
    save_json(stem, record)

    def draw(plt):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for name in names:
            rs = [r for r in results if r["mixer"] == name and "step_s" in r]
            style = "k--" if name == "attention" else "o-"
            axes[0].loglog([r["L"] for r in rs], [1e6 * r["step_s"] for r in rs], style, label=name, markersize=3)
            axes[1].loglog([r["L"] for r in rs], [r["state_bytes"] for r in rs], style, label=name, markersize=3)
        axes[0].set_ylabel("step latency (µs)")
        axes[1].set_ylabel("state (bytes)")
        for ax in axes:
            ax.set_xlabel("context length L")
        axes[0].legend(fontsize=6, ncol=2)
        axes[0].set_title(f"generation, B={size.batch}, d_model={size.d_model}")

    save_plot(stem, draw)
    return record


if __name__ == "__main__":
    main()
