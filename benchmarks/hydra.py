"""Hydra benchmark: the ``hydra`` mixer's forward+backward with its SSD scans sequential,
chunked and ``auto``.

    python -m benchmarks.hydra            # B = 8, d_model 128 (4 heads of 64, d_state 64), L ∈ {4k, 16k}
    python -m benchmarks.hydra --quick    # tiny sizes: checks the script

Hydra runs two Mamba-2 SSD scans (forward, and forward over the reversed sequence) in
one call of ``scans.linear_attention`` with a per-head scalar decay; the layer's
``method`` option is handed to it. At the full size the SSD shapes are those of the
matrix-state memory goal (H = 4, Dk = N = 64, Dv = P = 64, 2·B sequences). For each
length and method it reports the median time of the mixer's forward pass and of
forward+backward (gradients of ``Σ y²`` with respect to the parameters and the input),
and XLA's compiled peak memory of forward+backward (``_common.peak_bytes``; compiled,
not run). A case whose peak exceeds ``--max-gib`` is not run backward: the sequential
scan's backward stores every step's state. Results go to
``benchmarks/results/hydra.{json,png}`` (``hydra_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

from seqmodels import layers
from seqmodels.scans._dispatch import resolve_method

from ._common import markdown_table, median_seconds, peak_bytes, save_json, save_plot, verdict

METHODS = ("sequential", "chunked", "auto")
FULL = dict(batch=8, d_model=128, headdim=64, d_state=64, lengths=(4096, 16384), repeats=3)
QUICK = dict(batch=2, d_model=32, headdim=16, d_state=16, lengths=(256,), repeats=2)


def build(sizes, method):
    mixer = layers.build("hydra", sizes["d_model"], rngs=nnx.Rngs(0), d_state=sizes["d_state"],
                         headdim=sizes["headdim"], method=method)
    return nnx.split(mixer)


def forward(graphdef):
    return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))


def forward_backward(graphdef):
    def loss(state, x):
        y = nnx.merge(graphdef, state)(x)
        return jnp.sum(jnp.square(y.astype(jnp.float32)))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def run(sizes, max_gib):
    B, d = sizes["batch"], sizes["d_model"]
    results, rows = [], []
    for L in sizes["lengths"]:
        x = jax.random.normal(jax.random.PRNGKey(1), (B, L, d))
        entry = {"B": B, "L": L, "d_model": d, "auto": resolve_method("linear_attention", "auto"),
                 "forward_ms": {}, "fwd_bwd_ms": {}, "fwd_bwd_peak_gib": {}}
        for m in METHODS:
            graphdef, state = build(sizes, m)
            entry["forward_ms"][m] = 1e3 * median_seconds(forward(graphdef), state, x, repeats=sizes["repeats"])
            grad = forward_backward(graphdef)
            peak = peak_bytes(grad, state, x)
            peak = None if peak is None else peak / (1 << 30)
            entry["fwd_bwd_peak_gib"][m] = peak
            too_large = peak is not None and peak > max_gib  # known before running
            entry["fwd_bwd_ms"][m] = None if too_large else 1e3 * median_seconds(
                grad, state, x, repeats=sizes["repeats"])
        results.append(entry)
        cell = lambda v, fmt: "skipped (too large)" if v is None else format(v, fmt)
        rows.append([L] + [cell(entry["forward_ms"][m], ".4g") for m in METHODS]
                    + [cell(entry["fwd_bwd_ms"][m], ".4g") for m in METHODS]
                    + [cell(entry["fwd_bwd_peak_gib"][m], ".3g") for m in METHODS])
    headers = (["L"] + [f"fwd {m} ms" for m in METHODS] + [f"fwd+bwd {m} ms" for m in METHODS]
               + [f"peak {m} GiB" for m in METHODS])
    title = (f"### hydra (B = {B}, d_model = {d}, headdim {sizes['headdim']}, d_state {sizes['d_state']}, "
             f"float32; SSD auto = {resolve_method('linear_attention', 'auto')} on {jax.default_backend()}; "
             f"peaks of fwd+bwd, cases above {max_gib:g} GiB not run backward)")
    return results, f"{title}\n\n" + markdown_table(headers, rows)


def goals(results):
    """``auto`` within 1.2× of the faster explicit method (forward and forward+backward),
    and the chunked path's forward+backward peak bounded (below the sequential one)."""
    lines = []
    for kind, label in (("forward_ms", "forward"), ("fwd_bwd_ms", "forward+backward")):
        ratios = [r[kind]["auto"] / min(t for t in (r[kind]["sequential"], r[kind]["chunked"]) if t is not None)
                  for r in results if r[kind]["auto"] is not None
                  and any(r[kind][m] is not None for m in ("sequential", "chunked"))]
        if ratios:
            lines.append(verdict(f"hydra auto {label} vs the faster method", max(ratios) <= 1.2,
                                 f"worst {max(ratios):.2f}×", "≤ 1.2×"))
    for r in results:
        chunked, sequential = r["fwd_bwd_peak_gib"]["chunked"], r["fwd_bwd_peak_gib"]["sequential"]
        if chunked is not None and sequential is not None:
            lines.append(verdict(f"hydra chunked fwd+bwd peak below sequential at L = {r['L']}",
                                 chunked < sequential, f"{chunked:.3g} GiB vs {sequential:.3g} GiB", "chunked lower"))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (checks the script, not the speed)")
    p.add_argument("--max-gib", type=float, default=8.0, help="do not run backward above this peak (GiB)")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    results, table = run(sizes, args.max_gib)
    verdicts = goals(results)
    print(table + "\n\n" + "\n".join(verdicts))
    name = "hydra_quick" if args.quick else "hydra"
    record = {"sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
              "max_gib": args.max_gib, "results": results, "verdicts": verdicts, "table": table}
    save_json(name, record)

    def draw(plt):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, kind, label in ((axes[0], "fwd_bwd_ms", "fwd+bwd ms"), (axes[1], "fwd_bwd_peak_gib", "fwd+bwd peak GiB")):
            for m in METHODS:
                points = [(r["L"], r[kind][m]) for r in results if r[kind][m] is not None]
                if points:
                    ax.loglog(*zip(*points), "o-", label=m)
            ax.set(title="hydra", xlabel="L", ylabel=label)
            ax.legend()
        fig.tight_layout()

    save_plot(name, draw)
    return record


if __name__ == "__main__":
    main()
