"""Scan-core benchmark: every method of every scan across lengths, forward and forward+backward.

    python -m benchmarks.scans            # L ∈ {1k, 4k, 16k, 64k}
    python -m benchmarks.scans --quick    # L ∈ {1k, 4k}, fewer repeats

For each scan and length it prints the median time of each method and of
``method="auto"`` itself (which on CPU may be a hybrid: for matrix states it runs the
sequential forward and differentiates through the chunked form), names what ``auto``
resolves to, and gives ``auto``'s time relative to the fastest explicit method
(goal: ≤ 1.2×). Diagonal scans are also reported in effective GB/s against a plain
elementwise multiply of the same arrays: forward moves 3 arrays (a, b -> h),
forward+backward 8 (a, b, h, the cotangent, a and h re-read, two gradients) -- the
same byte counts are used for the baseline, so the ratio is like for like.
Results go to ``benchmarks/results/scans.{json,png}``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp

from seqmodels import scans
from seqmodels.scans._dispatch import resolve_method

from ._common import markdown_table, median_seconds, save_json, save_plot

D = 256  # features per step for every case (heads × head size where applicable)


@dataclass
class Case:
    op: str
    methods: tuple[str, ...]
    make: Callable  # (key, L) -> (args tuple, differentiable argnums)
    call: Callable  # (method, *args) -> outputs
    lengths: tuple[int, ...]
    history_bytes: Callable = lambda L: None  # per-step state history, for auto


def linear_case():
    def make(key, L):
        ka, kb = jax.random.split(key)
        a = jax.random.uniform(ka, (1, L, D), minval=0.9, maxval=0.999)
        return (a, jax.random.normal(kb, (1, L, D))), (0, 1)

    return Case("linear_scan", ("sequential", "associative", "chunked"), make,
                lambda m, a, b: scans.linear_scan(a, b, method=m), (1024, 4096, 16384, 65536))


def softmax_case():
    def make(key, L):
        ks, kv = jax.random.split(key)
        return (jax.random.normal(ks, (1, L, 4)), jax.random.normal(kv, (1, L, 4, D // 4))), (0, 1)

    return Case("softmax_scan", ("sequential", "associative", "chunked"), make,
                lambda m, s, v: scans.softmax_scan(s, v, method=m), (1024, 4096, 16384, 65536))


def matrix_case():
    # LSSL-like: 16 channels, each a dense 16 × 16 time-invariant transition.
    def make(key, L):
        kA, kb = jax.random.split(key)
        A = 0.25 * jax.random.normal(kA, (16, 16)) / 4
        return (A, jax.random.normal(kb, (1, L, 16, 16))), (0, 1)

    return Case("matrix_scan", ("sequential", "associative", "chunked"), make,
                lambda m, A, b: scans.matrix_scan(A, b, method=m), (1024, 4096, 16384))


def linear_attention_case():
    H, Dk = 4, 64

    def make(key, L):
        kq, kk, kv, kg = jax.random.split(key, 4)
        q, k, v = (jax.random.normal(x, (1, L, H, Dk)) / 8 for x in (kq, kk, kv))
        g = -jax.random.uniform(kg, (1, L, H), maxval=0.1)
        return (q, k, v, g), (0, 1, 2, 3)

    return Case("linear_attention", ("sequential", "chunked"), make,
                lambda m, q, k, v, g: scans.linear_attention(q, k, v, g, method=m), (1024, 4096, 16384),
                history_bytes=lambda L: L * H * Dk * Dk * 4)


def forward_backward(call, method, argnums):
    def loss(*args):
        out, state = call(method, *args)
        finite = [jnp.where(jnp.isfinite(x), x, 0) for x in jax.tree.leaves(state)]
        return jnp.sum(out * out) + sum(jnp.sum(x * x) for x in finite)

    return jax.jit(jax.grad(loss, argnums=argnums))


def baseline(a, b):
    """Elementwise multiply of the same arrays: the memory-bandwidth yardstick."""
    fwd = jax.jit(lambda a, b: a * b)
    fb = jax.jit(jax.grad(lambda a, b: jnp.sum((a * b) ** 2), argnums=(0, 1)))
    return median_seconds(fwd, a, b), median_seconds(fb, a, b)


def run(cases, lengths_filter, repeats):
    results, tables = [], []
    for case in cases:
        rows = []
        for L in case.lengths:
            if L not in lengths_filter:
                continue
            args, argnums = case.make(jax.random.PRNGKey(0), L)
            auto = resolve_method(case.op, "auto", state_history_bytes=case.history_bytes(L))
            entry = {"op": case.op, "L": L, "auto": auto, "forward_ms": {}, "fwd_bwd_ms": {}}
            for m in case.methods + ("auto",):
                fwd = jax.jit(lambda *a, m=m: case.call(m, *a))
                entry["forward_ms"][m] = 1e3 * median_seconds(fwd, *args, repeats=repeats)
                entry["fwd_bwd_ms"][m] = 1e3 * median_seconds(forward_backward(case.call, m, argnums), *args,
                                                              repeats=repeats)
            if case.op == "linear_scan":
                base_f, base_fb = baseline(*args)
                nbytes = args[1].size * args[1].dtype.itemsize
                entry["baseline_ms"] = {"forward": 1e3 * base_f, "fwd_bwd": 1e3 * base_fb}
                entry["GB/s"] = {m: 3 * nbytes / (entry["forward_ms"][m] * 1e-3) / 1e9
                                 for m in case.methods + ("auto",)}
                entry["GB/s"]["elementwise"] = 3 * nbytes / base_f / 1e9
            for kind in ("forward_ms", "fwd_bwd_ms"):
                times = entry[kind]
                best = min(times[m] for m in case.methods)
                entry[kind.replace("_ms", "_auto_vs_best")] = times["auto"] / best
            results.append(entry)
            for kind, label in (("forward_ms", "fwd"), ("fwd_bwd_ms", "fwd+bwd")):
                cells = [f"{entry[kind][m]:.3g}" for m in case.methods + ("auto",)]
                extra = []
                if case.op == "linear_scan":
                    base = entry["baseline_ms"]["forward" if label == "fwd" else "fwd_bwd"]
                    extra = [f"{base:.3g}", f"{entry['GB/s']['auto']:.1f} / {entry['GB/s']['elementwise']:.1f}"
                             if label == "fwd" else ""]
                rows.append([L, label] + cells + extra + [f"{entry[kind.replace('_ms', '_auto_vs_best')]:.2f}×"])
        headers = ["L", "pass"] + [f"{m} ms" for m in case.methods] + ["auto ms"]
        if case.op == "linear_scan":
            headers += ["a*b ms", "auto GB/s / a*b GB/s"]
        headers += ["auto / best"]
        auto_name = resolve_method(case.op, "auto")
        tables.append(f"### {case.op} (D = {D}; auto = {auto_name} on this machine)\n\n"
                      + markdown_table(headers, rows))
    return results, tables


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="L ∈ {1k, 4k}, 3 repeats")
    p.add_argument("--only", nargs="*", help="scan names to run (default: all)")
    args = p.parse_args(argv)
    lengths = {1024, 4096} if args.quick else {1024, 4096, 16384, 65536}
    cases = [linear_case(), softmax_case(), matrix_case(), linear_attention_case()]
    if args.only:
        cases = [c for c in cases if c.op in args.only]
    results, tables = run(cases, lengths, repeats=3 if args.quick else 7)
    print("\n\n".join(tables))
    worst = max(max(r["forward_auto_vs_best"], r["fwd_bwd_auto_vs_best"]) for r in results)
    print(f"\nworst auto / best over all shapes: {worst:.2f}× (goal ≤ 1.2×)")
    name = "scans_quick" if args.quick else "scans"
    save_json(name, {"results": results, "worst_auto_vs_best": worst})

    def draw(plt):
        fig, axes = plt.subplots(1, len(cases), figsize=(4.5 * len(cases), 3.6))
        for ax, case in zip([axes] if len(cases) == 1 else list(axes), cases):
            rs = [r for r in results if r["op"] == case.op]
            for m in case.methods:
                ax.loglog([r["L"] for r in rs], [r["fwd_bwd_ms"][m] for r in rs], "o-", label=m)
            ax.set_title(f"{case.op} fwd+bwd")
            ax.set_xlabel("L")
            ax.set_ylabel("ms")
            ax.legend()

    save_plot(name, draw)
    return results


if __name__ == "__main__":
    main()
