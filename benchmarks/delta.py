"""Delta-rule benchmark: ``scans.delta_rule`` sequential vs chunked vs ``auto``.

    python -m benchmarks.delta            # B = 8, H = 4, Dk = Dv = 64, L ∈ {1k, 4k, 16k}, n_h ∈ {1, 2}
    python -m benchmarks.delta --quick    # tiny sizes: checks the script

For each shape and method it reports the median time of the forward pass and of
forward+backward (gradients of ``Σ o² + Σ S²`` with respect to q, k, v, β and the gate),
and XLA's compiled peak memory of forward+backward (temporaries + arguments + outputs,
``_common.peak_bytes``; it compiles without running). A case whose peak exceeds
``--max-gib`` is not run backward (the sequential backward stores every micro-step's
state: XLA estimates 26 GiB at B = 8, L = 16k, n_h = 1 and 35 GiB at n_h = 2, against 1.5
and 2.2 GiB for chunked). On CPU ``auto`` is the sequential forward
differentiated through the chunked form, so its forward should match sequential and
its forward+backward chunked. Results go to ``benchmarks/results/delta.{json,png}``
(``delta_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from seqmodels import scans
from seqmodels.scans._dispatch import resolve_method

from ._common import markdown_table, median_seconds, peak_bytes, save_json, save_plot

METHODS = ("sequential", "chunked", "auto")
FULL = dict(batch=8, heads=4, dim=64, lengths=(1024, 4096, 16384), householder=(1, 2), repeats=5)
QUICK = dict(batch=1, heads=2, dim=16, lengths=(256,), householder=(1, 2), repeats=3)


def make_inputs(key, B, L, H, n_h, D):
    """Unit keys, β ∈ [0, 2], gates in [−0.1, 0], queries scaled by D^-1/2 (the layer's inputs)."""
    kq, kk, kv, kb, kg = jax.random.split(key, 5)
    q = jax.random.normal(kq, (B, L, H, D)) * D ** -0.5
    k = jax.random.normal(kk, (B, L, H, n_h, D))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(kv, (B, L, H, n_h, D))
    beta = jax.random.uniform(kb, (B, L, H, n_h), maxval=2.0)
    g = -jax.random.uniform(kg, (B, L, H), maxval=0.1)
    return q, k, v, beta, g


def forward(method):
    return lambda *xs: scans.delta_rule(*xs, method=method)


def loss_gradients(method):
    def loss(*xs):
        o, S = scans.delta_rule(*xs, method=method)
        return jnp.sum(o * o) + jnp.sum(S * S)

    return jax.grad(loss, argnums=(0, 1, 2, 3, 4))


def gib(n):
    return None if n is None else n / (1 << 30)


def run(sizes, max_gib):
    B, H, D = sizes["batch"], sizes["heads"], sizes["dim"]
    results, rows = [], []
    for n_h in sizes["householder"]:
        for L in sizes["lengths"]:
            args = make_inputs(jax.random.PRNGKey(0), B, L, H, n_h, D)
            entry = {"B": B, "L": L, "H": H, "Dk": D, "Dv": D, "n_h": n_h, "auto": resolve_method("delta_rule", "auto"),
                     "forward_ms": {}, "fwd_bwd_ms": {}, "fwd_bwd_peak_gib": {}}
            for m in METHODS:
                entry["forward_ms"][m] = 1e3 * median_seconds(jax.jit(forward(m)), *args, repeats=sizes["repeats"])
                peak = gib(peak_bytes(loss_gradients(m), *args))
                entry["fwd_bwd_peak_gib"][m] = peak
                too_large = peak is not None and peak > max_gib  # known before running
                entry["fwd_bwd_ms"][m] = None if too_large else 1e3 * median_seconds(
                    jax.jit(loss_gradients(m)), *args, repeats=sizes["repeats"])
            results.append(entry)
            cell = lambda x, fmt: "skipped" if x is None else format(x, fmt)
            rows.append([n_h, L]
                        + [cell(entry["forward_ms"][m], ".3g") for m in METHODS]
                        + [cell(entry["fwd_bwd_ms"][m], ".3g") for m in METHODS]
                        + [cell(entry["fwd_bwd_peak_gib"][m], ".3g") for m in METHODS])
    headers = (["n_h", "L"] + [f"fwd {m} ms" for m in METHODS] + [f"fwd+bwd {m} ms" for m in METHODS]
               + [f"peak {m} GiB" for m in METHODS])
    title = (f"### delta_rule (B = {B}, H = {H}, Dk = Dv = {D}, float32; auto = "
             f"{resolve_method('delta_rule', 'auto')} on {jax.default_backend()}; peaks of fwd+bwd, "
             f"cases above {max_gib:g} GiB skipped)")
    return results, f"{title}\n\n" + markdown_table(headers, rows)


def goals(results):
    """One line per goal, ``goal: goal met (actual vs target)`` or ``goal: missed: actual
    vs target`` (the format ``benchmarks/run.py`` collects): ``auto`` within 1.2× of the
    fastest explicit method, and forward+backward under 4 GiB at B = 8, L = 16k."""
    line = lambda goal, met, actual, target: (f"{goal}: goal met ({actual} vs {target})" if met
                                              else f"{goal}: missed: {actual} vs {target}")
    lines = []
    for kind, label in (("forward_ms", "forward"), ("fwd_bwd_ms", "forward+backward")):
        ratios = []
        for r in results:
            times = [r[kind][m] for m in METHODS[:-1] if r[kind][m] is not None]
            if times and r[kind]["auto"] is not None:
                ratios.append(r[kind]["auto"] / min(times))
        if ratios:
            lines.append(line(f"delta_rule auto {label} vs the fastest method", max(ratios) <= 1.2,
                              f"worst {max(ratios):.2f}×", "≤ 1.2×"))
    for r in results:
        if r["B"] == 8 and r["L"] == 16384 and r["fwd_bwd_peak_gib"]["auto"] is not None:
            peak = r["fwd_bwd_peak_gib"]["auto"]
            lines.append(line(f"delta_rule auto forward+backward peak at B = 8, L = 16k, n_h = {r['n_h']}",
                              peak <= 4.0, f"{peak:.2f} GiB", "≤ 4 GiB"))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="B = 1, H = 2, D = 16, L = 256, 3 repeats (checks the script, not the speed)")
    p.add_argument("--max-gib", type=float, default=8.0, help="skip cases whose fwd+bwd peak is larger (GiB)")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    results, table = run(sizes, args.max_gib)
    verdicts = goals(results)
    print(table + "\n\n" + "\n".join(verdicts))
    name = "delta_quick" if args.quick else "delta"
    record = {"sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
              "max_gib": args.max_gib, "results": results, "verdicts": verdicts}
    save_json(name, record)

    def draw(plt):
        fig, axes = plt.subplots(1, 2 * len(sizes["householder"]), figsize=(18, 3.8))
        for i, n_h in enumerate(sizes["householder"]):
            rs = [r for r in results if r["n_h"] == n_h]
            for ax, kind, label in ((axes[2 * i], "fwd_bwd_ms", "fwd+bwd ms"),
                                    (axes[2 * i + 1], "fwd_bwd_peak_gib", "fwd+bwd peak GiB")):
                for m in METHODS:
                    points = [(r["L"], r[kind][m]) for r in rs if r[kind][m] is not None]
                    if points:
                        ax.loglog(*zip(*points), "o-", label=m)
                ax.set_title(f"delta_rule n_h = {n_h}")
                ax.set_xlabel("L")
                ax.set_ylabel(label)
                ax.legend()
        fig.tight_layout()

    save_plot(name, draw)
    return record


if __name__ == "__main__":
    main()
