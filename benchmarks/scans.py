"""Scan-core benchmark: every method of every scan across lengths, forward and forward+backward.

    python -m benchmarks.scans            # L ∈ {1k, 4k, 16k, 64k}
    python -m benchmarks.scans --quick    # L = 1k, 2 repeats, linear_scan, linear_attention, delta_rule
    python -m benchmarks.scans --only linear_scan delta_rule

For each scan and length it prints the median time (up to 7 calls after a warm-up call,
fewer for a slow method: at most ~3 s of timed calls, at least one) of each method and of
``method="auto"`` itself (which on CPU may be a hybrid: for matrix states it runs the
sequential forward and differentiates through the chunked form), names what ``auto``
resolves to, and gives ``auto``'s time relative to the fastest explicit method
(goal: ≤ 1.2×). Diagonal scans are also reported in effective GB/s against a plain
elementwise multiply of the same arrays: forward moves 3 arrays (a, b -> h),
forward+backward 8 (a, b, h, the cotangent, a and h re-read, two gradients) -- the
same byte counts are used for the baseline, so the ratio is like for like.

Matrix-state scans (``matrix_scan``, ``linear_attention``, ``delta_rule``) are reported
in effective GFLOP/s against a plain matmul of comparable size on the same machine:
the nominal floating-point work of the sequential recurrence (per step and channel/head:
``2N²`` for ``h ↦ A h``; ``4·Dk·Dv`` for linear attention's rank-1 update and
read-out; ``6·Dk·Dv`` for the delta rule's ``Sᵀk``, rank-1 update and read-out;
forward+backward counted as 3× forward) divided by the time, for every method alike
(chunked forms do more arithmetic than this count; the number says how fast the
recurrence gets done). The yardstick is one einsum that applies a ``(N, N)`` or
``(H, Dk, Dv)`` matrix to every step's vector (``2·N²`` or ``2·Dk·Dv`` flops per
step), forward and forward+backward, scaled to the same flop count.

Lengths above a scan's ``max_length`` are not run (matrix states stop at 16k: the
sequential backward stores every step's state). Goals (one verdict line each):
``auto`` within 1.2× of the fastest method at every shape; diagonal ``linear_scan``
(``auto``, forward) at ≥ 60% of the elementwise-multiply bandwidth for L ≥ 16k.
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

from ._common import budgeted_seconds, markdown_table, median_seconds, save_json, save_plot, verdict

D = 256  # features per step for every case (heads × head size where applicable)
LENGTHS = {"full": (1024, 4096, 16384, 65536), "quick": (1024,), "smoke": (64,)}
SMOKE_OPS = ("linear_scan", "linear_attention")  # --smoke without --only: one diagonal, one matrix state
# --quick without --only (CI-sized): the diagonal scan and the two matrix-state scans the mixers use most;
# softmax_scan and matrix_scan (whose associative form costs most of a quick run's compilation) run at full size
QUICK_OPS = ("linear_scan", "linear_attention", "delta_rule")
REPEATS = {"full": 7, "quick": 2, "smoke": 1}
BUDGET_S = {"full": 3.0, "quick": 0.2, "smoke": 0.05}  # timed seconds per method and pass (≥ 1 call)
AUTO_GOAL = 1.2
BANDWIDTH_GOAL, BANDWIDTH_FROM = 0.6, 16384


@dataclass
class Case:
    op: str
    methods: tuple[str, ...]
    make: Callable  # (key, L) -> (args tuple, differentiable argnums)
    call: Callable  # (method, *args) -> outputs
    max_length: int
    history_bytes: Callable = lambda L: None  # per-step state history, for auto
    flops: Callable | None = None  # (L) -> nominal forward flops of the recurrence (matrix states)
    matmul: Callable | None = None  # (key, L) -> (fn, args, flops): the plain-matmul yardstick


def linear_case():
    def make(key, L):
        ka, kb = jax.random.split(key)
        a = jax.random.uniform(ka, (1, L, D), minval=0.9, maxval=0.999)
        return (a, jax.random.normal(kb, (1, L, D))), (0, 1)

    return Case("linear_scan", ("sequential", "associative", "chunked"), make,
                lambda m, a, b: scans.linear_scan(a, b, method=m), 65536)


def softmax_case():
    def make(key, L):
        ks, kv = jax.random.split(key)
        return (jax.random.normal(ks, (1, L, 4)), jax.random.normal(kv, (1, L, 4, D // 4))), (0, 1)

    return Case("softmax_scan", ("sequential", "associative", "chunked"), make,
                lambda m, s, v: scans.softmax_scan(s, v, method=m), 65536)


def matmul_yardstick(channels: int, n_in: int, n_out: int):
    """``(key, L) -> (fn, args, flops)``: one ``(channels, n_in, n_out)`` matrix applied to
    every step's ``(channels, n_in)`` vector of a ``(1, L, channels, n_in)`` array."""
    def make(key, L):
        kw, kx = jax.random.split(key)
        w = jax.random.normal(kw, (channels, n_in, n_out)) / n_in
        x = jax.random.normal(kx, (1, L, channels, n_in))
        return (lambda w, x: jnp.einsum("blci,cio->blco", x, w)), (w, x), 2 * L * channels * n_in * n_out

    return make


def matrix_case():
    # LSSL-like: 16 channels, each a dense 16 × 16 time-invariant transition.
    C, N = 16, 16

    def make(key, L):
        kA, kb = jax.random.split(key)
        A = 0.25 * jax.random.normal(kA, (N, N)) / 4
        return (A, jax.random.normal(kb, (1, L, C, N))), (0, 1)

    return Case("matrix_scan", ("sequential", "associative", "chunked"), make,
                lambda m, A, b: scans.matrix_scan(A, b, method=m), 16384,
                flops=lambda L: 2 * L * C * N * N, matmul=matmul_yardstick(C, N, N))


def linear_attention_case():
    H, Dk = 4, 64

    def make(key, L):
        kq, kk, kv, kg = jax.random.split(key, 4)
        q, k, v = (jax.random.normal(x, (1, L, H, Dk)) / 8 for x in (kq, kk, kv))
        g = -jax.random.uniform(kg, (1, L, H), maxval=0.1)
        return (q, k, v, g), (0, 1, 2, 3)

    return Case("linear_attention", ("sequential", "chunked"), make,
                lambda m, q, k, v, g: scans.linear_attention(q, k, v, g, method=m), 16384,
                history_bytes=lambda L: L * H * Dk * Dk * 4,
                flops=lambda L: 4 * L * H * Dk * Dk, matmul=matmul_yardstick(H, Dk, Dk))


def delta_rule_case():
    # DeltaNet-like: unit keys, β ∈ (0, 1), a forget gate; one Householder step per token.
    H, Dk = 4, 64

    def make(key, L):
        kq, kk, kv, kb, kg = jax.random.split(key, 5)
        q = jax.random.normal(kq, (1, L, H, Dk)) / 8
        k = jax.random.normal(kk, (1, L, H, Dk))
        k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
        v = jax.random.normal(kv, (1, L, H, Dk)) / 8
        beta = jax.nn.sigmoid(jax.random.normal(kb, (1, L, H)))
        g = -jax.random.uniform(kg, (1, L, H), maxval=0.1)
        return (q, k, v, beta, g), (0, 1, 2, 3, 4)

    return Case("delta_rule", ("sequential", "chunked"), make,
                lambda m, q, k, v, beta, g: scans.delta_rule(q, k, v, beta, g, method=m), 16384,
                history_bytes=lambda L: L * H * Dk * Dk * 4,
                flops=lambda L: 6 * L * H * Dk * Dk, matmul=matmul_yardstick(H, Dk, Dk))


def forward_backward(call, method, argnums):
    def loss(*args):
        out, state = call(method, *args)
        finite = [jnp.where(jnp.isfinite(x), x, 0) for x in jax.tree.leaves(state)]
        return jnp.sum(out * out) + sum(jnp.sum(x * x) for x in finite)

    return jax.jit(jax.grad(loss, argnums=argnums))


def baseline(a, b, repeats=7):
    """Elementwise multiply of the same arrays: the memory-bandwidth yardstick."""
    fwd = jax.jit(lambda a, b: a * b)
    fb = jax.jit(jax.grad(lambda a, b: jnp.sum((a * b) ** 2), argnums=(0, 1)))
    return median_seconds(fwd, a, b, repeats=repeats), median_seconds(fb, a, b, repeats=repeats)


def matmul_baseline(case, L, repeats):
    """GFLOP/s of the case's plain-matmul yardstick, forward and forward+backward (3× the flops)."""
    fn, args, flops = case.matmul(jax.random.PRNGKey(1), L)
    fwd = jax.jit(fn)
    fb = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=(0, 1)))
    return {"forward": flops / median_seconds(fwd, *args, repeats=repeats) / 1e9,
            "fwd_bwd": 3 * flops / median_seconds(fb, *args, repeats=repeats) / 1e9}


def run(cases, lengths, repeats, budget_s=BUDGET_S["full"]):
    results, tables = [], []
    for case in cases:
        rows = []
        for L in sorted(lengths):
            if L > case.max_length:
                continue
            args, argnums = case.make(jax.random.PRNGKey(0), L)
            auto = resolve_method(case.op, "auto", state_history_bytes=case.history_bytes(L))
            entry = {"op": case.op, "L": L, "auto": auto, "forward_ms": {}, "fwd_bwd_ms": {}}
            for m in case.methods + ("auto",):
                fwd = jax.jit(lambda *a, m=m: case.call(m, *a))
                fb = forward_backward(case.call, m, argnums)
                for kind, fn in (("forward_ms", fwd), ("fwd_bwd_ms", fb)):
                    seconds, _ = budgeted_seconds(fn, *args, repeats=repeats, budget_s=budget_s)
                    entry[kind][m] = 1e3 * seconds
            if case.op == "linear_scan":
                base_f, base_fb = baseline(*args, repeats=repeats)
                nbytes = args[1].size * args[1].dtype.itemsize
                entry["baseline_ms"] = {"forward": 1e3 * base_f, "fwd_bwd": 1e3 * base_fb}
                entry["GB/s"] = {m: 3 * nbytes / (entry["forward_ms"][m] * 1e-3) / 1e9
                                 for m in case.methods + ("auto",)}
                entry["GB/s"]["elementwise"] = 3 * nbytes / base_f / 1e9
            if case.flops is not None:
                flops = case.flops(L)
                entry["GFLOP/s"] = {kind: {m: factor * flops / (entry[kind][m] * 1e-3) / 1e9
                                           for m in case.methods + ("auto",)}
                                    for kind, factor in (("forward_ms", 1), ("fwd_bwd_ms", 3))}
                entry["matmul_GFLOP/s"] = matmul_baseline(case, L, repeats)
            for kind in ("forward_ms", "fwd_bwd_ms"):
                times = entry[kind]
                best = min(times[m] for m in case.methods)
                entry[kind.replace("_ms", "_auto_vs_best")] = times["auto"] / best
            results.append(entry)
            print(f"  {case.op:16s} L={L:6d} auto fwd {entry['forward_ms']['auto']:.3g} ms, "
                  f"fwd+bwd {entry['fwd_bwd_ms']['auto']:.3g} ms", flush=True)
            for kind, label in (("forward_ms", "fwd"), ("fwd_bwd_ms", "fwd+bwd")):
                cells = [f"{entry[kind][m]:.3g}" for m in case.methods + ("auto",)]
                extra = []
                if case.op == "linear_scan":
                    base = entry["baseline_ms"]["forward" if label == "fwd" else "fwd_bwd"]
                    extra = [f"{base:.3g}", f"{entry['GB/s']['auto']:.1f} / {entry['GB/s']['elementwise']:.1f}"
                             if label == "fwd" else ""]
                if case.flops is not None:
                    rate = entry["GFLOP/s"][kind]
                    best = max(case.methods, key=lambda m: rate[m])
                    matmul = entry["matmul_GFLOP/s"]["forward" if label == "fwd" else "fwd_bwd"]
                    extra = [f"{rate['auto']:.2f} ({best} {rate[best]:.2f})", f"{matmul:.1f}"]
                rows.append([L, label] + cells + extra + [f"{entry[kind.replace('_ms', '_auto_vs_best')]:.2f}×"])
        headers = ["L", "pass"] + [f"{m} ms" for m in case.methods] + ["auto ms"]
        if case.op == "linear_scan":
            headers += ["a*b ms", "auto GB/s / a*b GB/s"]
        if case.flops is not None:
            headers += ["auto GFLOP/s (best method)", "matmul GFLOP/s"]
        headers += ["auto / best"]
        auto_name = resolve_method(case.op, "auto")
        tables.append(f"### {case.op} (D = {D}; auto = **{auto_name}** on this machine)\n\n"
                      + markdown_table(headers, rows))
    return results, tables


def verdicts(results) -> list[str]:
    """The two goals of the scan core, one line each."""
    worst = max(results, key=lambda r: max(r["forward_auto_vs_best"], r["fwd_bwd_auto_vs_best"]))
    ratio = max(worst["forward_auto_vs_best"], worst["fwd_bwd_auto_vs_best"])
    lines = [verdict("auto within 1.2× of the fastest method at every shape", ratio <= AUTO_GOAL,
                     f"worst {ratio:.2f}× ({worst['op']}, L = {worst['L']})", f"≤ {AUTO_GOAL}×")]
    long = [r for r in results if r["op"] == "linear_scan" and r["L"] >= BANDWIDTH_FROM]
    if not long:
        lines.append(f"linear_scan bandwidth for L ≥ {BANDWIDTH_FROM}: not measured (no such length in this run)")
    else:
        fractions = {r["L"]: r["GB/s"]["auto"] / r["GB/s"]["elementwise"] for r in long}
        low = min(fractions, key=fractions.get)
        lines.append(verdict(f"linear_scan (auto, forward) at ≥ {BANDWIDTH_GOAL:.0%} of a*b bandwidth for "
                             f"L ≥ {BANDWIDTH_FROM}", fractions[low] >= BANDWIDTH_GOAL,
                             f"{fractions[low]:.0%} at L = {low}", f"{BANDWIDTH_GOAL:.0%}"))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="L = 1k, 2 repeats, QUICK_OPS")
    p.add_argument("--smoke", action="store_true", help="L = 64, 1 repeat, linear_scan and linear_attention (tests)")
    p.add_argument("--only", nargs="*", help="scan names to run (default: all)")
    args = p.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    cases = [linear_case(), softmax_case(), matrix_case(), linear_attention_case(), delta_rule_case()]
    if args.only:
        unknown = sorted(set(args.only) - {c.op for c in cases})
        if unknown:
            raise ValueError(f"unknown scan(s) {unknown}; valid: {', '.join(c.op for c in cases)}")
        cases = [c for c in cases if c.op in args.only]
    elif mode in ("smoke", "quick"):
        cases = [c for c in cases if c.op in (SMOKE_OPS if mode == "smoke" else QUICK_OPS)]
    results, tables = run(cases, LENGTHS[mode], repeats=REPEATS[mode], budget_s=BUDGET_S[mode])
    print("\n\n".join(tables))
    worst = max(max(r["forward_auto_vs_best"], r["fwd_bwd_auto_vs_best"]) for r in results)
    lines = verdicts(results)
    print()
    print("\n".join(lines))
    name = "scans" if mode == "full" else "scans_quick"
    record = {"results": results, "worst_auto_vs_best": worst, "mode": mode, "table": "\n\n".join(tables),
              "verdicts": lines}
    save_json(name, record)

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
    return record


if __name__ == "__main__":
    main()
