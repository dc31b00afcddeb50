"""Mixer benchmark: train-step time and peak memory of every registered mixer against length.

    python -m benchmarks.mixers                    # B = 8, d_model = 256, L ∈ {256, 1k, 4k, 16k}
    python -m benchmarks.mixers --quick            # B = 2, d_model = 32, L ∈ {128, 512}, 8 mixers
    python -m benchmarks.mixers --only s5 attention

One train step is the forward pass of the mixer alone, the loss ``mean(y²)`` (plus the
auxiliary losses a mixer sows, e.g. routing's commitment loss) and the gradients with
respect to every parameter (``_common.train_step``; routing in training mode also
moves its centroids). Each mixer is built with its paper defaults at this width
(``--quick``: the small ``example_options`` of the registry, made for tiny widths);
``s4``/``s4_bidirectional`` get ``l_max = L``, the training length, as their
docstring asks. ``--quick`` runs one mixer per family (``QUICK_MIXERS``: the attention
baseline, a diagonal SSM, a matrix-state, a routing, a bidirectional, the 1-D and 2-D
pLSTM and the video mixer) unless ``--only`` names others; the full run takes every registered mixer.

The step is compiled first (``_common.compile_stats``: compile time and XLA's
peak-memory estimate, nothing executed), then run once as a warm-up and timed: the
median of up to ``repeats`` calls within a per-case budget of 3 s (full size); a
warm-up call slower than the budget is itself the measurement (``timed_calls = 0``),
so a slow case runs once.

Lengths are numbers of mixed positions: sequence mixers get ``(B, L, d)``; image
mixers (``spatial_ndim = 2``) a ``(B, h, w, d)`` grid with ``h·w = L``, ``h`` the
largest divisor of ``L`` not above ``√L`` (256 → 16 × 16, 1k → 32 × 32, 4k → 64 × 64,
16k → 128 × 128); the video mixer (``convs5``) ``(B, T, h, w, d)`` with ``T = 16``
frames and ``h·w = L/16`` pixels per frame (256 → 16 × 4 × 4, ..., 16k → 16 × 32 × 32).

A case is skipped ("skipped (too large)") when its compiled peak memory exceeds
``--max-gib`` (8 GiB) or when its time, extrapolated from the previous length with the
growth measured so far (at least linear), would exceed ``--max-seconds`` (60 s).

Per mixer it fits the growth exponent ``p`` of time ∝ L^p over the measured lengths
(``_common.growth_exponent``) against the goals: ≤ 1.1 for scan mixers, ≤ 1.6 for
routing, about 2 (1.6–2.4) for full softmax attention (``attention``, the quadratic
baseline of the same width). Results: ``benchmarks/results/mixers.{json,png}``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

import seqmodels.layers as layers

from ._common import (GiB, budgeted_seconds, compile_stats, format_bytes, growth_exponent, markdown_table,
                      save_json, save_plot, train_step, verdict)

VIDEO_FRAMES = 16
# --quick (and --smoke) without --only: one mixer per family, so that CI stays in minutes
# (every registered mixer costs a few seconds of compilation per case on 2 cores).
QUICK_MIXERS = ("attention", "s5", "deltanet", "routing", "hydra", "plstm", "plstm2d", "convs5")
# The full run (time-boxed on a shared 2-core CPU) leaves out ``X_bidirectional`` when ``X`` is measured:
# the same recurrence run in both directions (about twice ``X``'s time, same growth in L).
FULL_SKIPS_TWINS = True
# growth-exponent goals by kind of mixer: (low or None, high)
GOALS = {"scan": (None, 1.1), "routing": (None, 1.6), "quadratic": (1.6, 2.4)}


@dataclass(frozen=True)
class Size:
    lengths: tuple[int, ...]
    batch: int
    d_model: int
    repeats: int
    budget_s: float  # timing budget per case (after the warm-up call)
    small: bool = False  # the registry's example_options (tiny widths) instead of the defaults


SIZES = {
    "full": Size((256, 1024, 4096, 16384), batch=8, d_model=256, repeats=3, budget_s=1.5),
    "quick": Size((128, 512), batch=2, d_model=32, repeats=3, budget_s=0.5, small=True),
    "smoke": Size((16, 32), batch=1, d_model=16, repeats=1, budget_s=0.2, small=True),
}


def kind(name: str) -> str:
    """``quadratic`` (full attention), ``routing``, or ``scan`` (every other mixer)."""
    if name.startswith("attention"):
        return "quadratic"
    if name.startswith("routing"):
        return "routing"
    return "scan"


def grid(positions: int) -> tuple[int, int]:
    """``(h, w)`` with ``h·w = positions``, ``h`` the largest divisor ≤ √positions."""
    h = max(d for d in range(1, math.isqrt(positions) + 1) if positions % d == 0)
    return h, positions // h


def input_shape(name: str, length: int, batch: int, d_model: int) -> tuple[int, ...]:
    """The input of mixer ``name`` with ``length`` mixed positions (see the module docstring)."""
    cls = layers.spec(name).cls
    if cls.temporal:
        frames = min(VIDEO_FRAMES, length)
        return (batch, frames) + grid(length // frames) + (d_model,)
    if cls.spatial_ndim == 2:
        return (batch,) + grid(length) + (d_model,)
    return (batch, length, d_model)


def mixer_options(name: str, length: int, *, small: bool = False) -> dict:
    """Options at ``length``: the paper defaults (``small``: the registry's ``example_options``,
    made for tiny widths), with ``l_max`` set to ``length`` where the mixer has one."""
    spec = layers.spec(name)
    options = dict(spec.example_options) if small else {}
    if "l_max" in spec.options():
        options["l_max"] = length
    return options


def build(name: str, d_model: int, length: int, *, small: bool = False) -> nnx.Module:
    return layers.build(name, d_model, rngs=nnx.Rngs(0), **mixer_options(name, length, small=small))


def predicted_seconds(lengths: list[int], seconds: list[float], length: int) -> float | None:
    """Time at ``length`` extrapolated from the last measurement with the growth seen so far (≥ 1)."""
    if not seconds:
        return None
    p = growth_exponent(lengths[-2:], seconds[-2:]) if len(seconds) >= 2 else 1.0
    return seconds[-1] * (length / lengths[-1]) ** max(p, 1.0)


def measure(name: str, length: int, size: Size, *, max_bytes: float, max_seconds: float,
            previous: tuple[list[int], list[float]], dtype=jnp.float32) -> dict:
    """One (mixer, length) case: compile, check the limits, time; an entry for the JSON.
    ``dtype`` is the activation dtype of the input (parameters stay float32)."""
    shape = input_shape(name, length, size.batch, size.d_model)
    entry = {"mixer": name, "L": length, "shape": list(shape)}
    guess = predicted_seconds(*previous, length)
    if guess is not None and guess > max_seconds:
        return dict(entry, skipped=f"too large (predicted {guess:.0f} s > {max_seconds:.0f} s)")
    step, state = train_step(build(name, size.d_model, length, small=size.small))
    x = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float32).astype(dtype)
    compiled = compile_stats(step, state, x)
    entry.update(compile_s=compiled.seconds, peak_bytes=compiled.peak_bytes)
    if compiled.peak_bytes is not None and compiled.peak_bytes > max_bytes:
        return dict(entry, skipped=f"too large ({compiled.peak_bytes / GiB:.1f} GiB > {max_bytes / GiB:.0f} GiB)")
    seconds, calls = budgeted_seconds(compiled.run, state, x, repeats=size.repeats, budget_s=size.budget_s,
                                      slow_warmup_counts=True)
    return dict(entry, seconds=seconds, timed_calls=calls)


def exponent_of(entries: list[dict]) -> float | None:
    timed = [e for e in entries if "seconds" in e]
    if len(timed) < 2:
        return None
    return growth_exponent([e["L"] for e in timed], [e["seconds"] for e in timed])


def run(names, size: Size, *, max_bytes: float, max_seconds: float) -> dict:
    results, exponents = [], {}
    for name in names:
        entries: list[dict] = []
        for length in size.lengths:
            timed = [e for e in entries if "seconds" in e]
            try:
                entry = measure(name, length, size, max_bytes=max_bytes, max_seconds=max_seconds,
                                previous=([e["L"] for e in timed], [e["seconds"] for e in timed]))
            except Exception as error:  # one broken case must not end a long run
                entry = {"mixer": name, "L": length, "failed": f"{type(error).__name__}: {error}"[:300]}
            entries.append(entry)
            cell = (f"{1e3 * entry['seconds']:.1f} ms" if "seconds" in entry
                    else f"skipped ({entry['skipped']})" if "skipped" in entry else f"FAILED ({entry['failed']})")
            print(f"  {name:24s} L={length:6d} {cell}", flush=True)
        exponents[name] = exponent_of(entries)
        results.extend(entries)
    return {"results": results, "exponents": exponents}


def table(record: dict, names, lengths) -> str:
    by_key = {(r["mixer"], r["L"]): r for r in record["results"]}

    def cell(r):
        if "failed" in r:
            return f"failed ({r['failed'].split(':')[0]})"
        if "skipped" in r:
            return "skipped (too large)"
        peak = "" if r["peak_bytes"] is None else f" / {format_bytes(r['peak_bytes'])}"
        return f"{1e3 * r['seconds']:.3g} ms{peak}"

    rows = []
    for name in names:
        p = record["exponents"][name]
        rows.append([name, kind(name)] + [cell(by_key[name, n]) for n in lengths]
                    + ["–" if p is None else f"{p:.2f}"])
    return markdown_table(["mixer", "kind"] + [f"L={n} (time / peak)" for n in lengths] + ["exponent p"], rows)


def verdicts(record: dict, names) -> list[str]:
    lines = []
    for k, (low, high) in GOALS.items():
        members = [n for n in names if kind(n) == k]
        fitted = {n: record["exponents"][n] for n in members if record["exponents"][n] is not None}
        if not members:
            continue
        target = f"p ≤ {high}" if low is None else f"{low} ≤ p ≤ {high}"
        if not fitted:
            lines.append(f"growth exponent, {k} mixers: missed: no exponent (fewer than 2 lengths ran) vs {target}")
            continue
        outside = {n: p for n, p in fitted.items() if p > high or (low is not None and p < low)}
        shown = outside or fitted
        actual = ", ".join(f"{n} {p:.2f}" for n, p in sorted(shown.items(), key=lambda kv: -kv[1])[:4])
        lines.append(verdict(f"growth exponent, {k} mixers", not outside,
                             actual if outside else f"max {max(fitted.values()):.2f}", target))
    return lines


def default_names(mode: str) -> list[str]:
    """Full size: every registered mixer except the ``*_bidirectional`` variants of a
    measured causal mixer (``FULL_SKIPS_TWINS``; name them with ``--only``); otherwise the
    registered ones of ``QUICK_MIXERS``."""
    if mode == "full":
        names = layers.names()
        return [n for n in names if not (FULL_SKIPS_TWINS and n.endswith("_bidirectional")
                                          and n[:-len("_bidirectional")] in names)]
    return [n for n in QUICK_MIXERS if n in layers.names()]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="B = 2, d_model = 32, L ∈ {128, 512}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for the tests (seconds)")
    p.add_argument("--only", nargs="*", help="mixer names (default: every registered mixer; --quick: QUICK_MIXERS)")
    p.add_argument("--max-gib", type=float, default=8.0, help="skip cases whose compiled peak exceeds this")
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip cases predicted to take longer")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[mode]
    names = list(args.only) if args.only else default_names(mode)
    for name in names:
        layers.spec(name)  # unknown names fail here, listing the valid ones
    print(f"mixers: train step (forward + backward), B = {size.batch}, d_model = {size.d_model}", flush=True)
    record = run(names, size, max_bytes=args.max_gib * GiB, max_seconds=args.max_seconds)
    record.update(batch=size.batch, d_model=size.d_model, lengths=list(size.lengths), mode=mode,
                  video_frames=VIDEO_FRAMES)
    record["table"] = table(record, names, size.lengths)
    record["verdicts"] = verdicts(record, names)
    print()
    print(record["table"])
    print()
    print("\n".join(record["verdicts"]))
    stem = "mixers" if mode == "full" else "mixers_quick"  # smoke runs too: git-ignored
    save_json(stem, record)

    def draw(plt):
        fig, ax = plt.subplots(figsize=(7, 5))
        for name in names:
            rs = [r for r in record["results"] if r["mixer"] == name and "seconds" in r]
            if rs:
                style = {"quadratic": "k--", "routing": "s-"}.get(kind(name), "o-")
                ax.loglog([r["L"] for r in rs], [1e3 * r["seconds"] for r in rs], style, label=name, markersize=3)
        ax.set_xlabel("positions L")
        ax.set_ylabel("train step (ms)")
        ax.set_title(f"mixers, forward + backward, B={size.batch}, d_model={size.d_model}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=2)

    save_plot(stem, draw)
    return record


if __name__ == "__main__":
    main()
