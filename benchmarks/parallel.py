"""Sequence-parallel scans against one device: time and per-device peak memory.

    python -m benchmarks.parallel            # L = 65536, P ∈ {1, 2, 4, 8}
    python -m benchmarks.parallel --quick    # L = 8192

For ``linear_scan`` (B = 1, D = 256), ``linear_attention`` (B = 1, H = 4, Dk = Dv = 64,
per-head decay) and ``delta_rule`` (B = 1, H = 4, Dk = Dv = 32, gated) it compiles the
forward+backward (the gradient of ``Σ w·outputs`` with respect to every input) on
one device (``P = 1``, the plain scan) and inside ``scans.sequence_parallel`` on a
mesh of P devices with the inputs sharded along time, and reports the median time
and XLA's compiled peak memory *per device* (``memory_analysis`` of the SPMD program:
temporaries + arguments + outputs), with the ratio to one device. Goal: memory per
device ~1/P, judged twice: against one device (``peak(8) ≤ 1.5 · peak(1) / 8``) and as a
slope (``peak(8) ≤ 1.25 · peak(2) / 4``). The sharded backward differentiates two local
scans (the summary and the rerun), so its temporaries are ~1.5× those of a plain scan
of the same shard: memory falls as 1/P from a ~1.5× higher start.

The measurements run in a subprocess with 8 forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``). On a CPU those devices
share the machine's cores, so the times show the overhead of the sharded algorithm
(two local scans, the exchange) rather than a speed-up; on GPU/TPU the subprocess
uses the real devices (P larger than their number is skipped). Results go to
``results/parallel.{json,png}`` (``parallel_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from ._common import format_bytes, markdown_table, save_json, save_plot, verdict

SHARDS = (1, 2, 4, 8)
SCANS = ("linear_scan", "linear_attention", "delta_rule")


def _inputs(op: str, L: int):
    """``(function, inputs)`` of one scan at length ``L`` (numpy inputs, float32)."""
    import jax
    import jax.numpy as jnp

    from seqmodels import scans

    rng = np.random.default_rng(0)
    normal = lambda *shape: rng.standard_normal(shape, np.float32)
    if op == "linear_scan":
        a = rng.uniform(0.9, 0.999, (1, L, 256)).astype(np.float32)
        return (lambda a, b: scans.linear_scan(a, b)), (a, normal(1, L, 256))
    if op == "linear_attention":
        H, D = 4, 64
        g = -0.1 * rng.uniform(size=(1, L, H)).astype(np.float32)
        return ((lambda q, k, v, g: scans.linear_attention(q, k, v, g)),
                (normal(1, L, H, D) / 8, normal(1, L, H, D) / 8, normal(1, L, H, D), g))
    H, D = 4, 32
    k = normal(1, L, H, D)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    return ((lambda q, k, v, b, g: scans.delta_rule(q, k, v, jax.nn.sigmoid(b), -jnp.abs(g))),
            (normal(1, L, H, D) / 6, k, normal(1, L, H, D), normal(1, L, H), 0.05 * normal(1, L, H)))


def _measure(L: int, repeats: int) -> list[dict]:
    """Runs in the subprocess: every scan at every P, forward+backward."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    from seqmodels import scans

    from ._common import compile_stats, median_seconds

    rows = []
    for op in SCANS:
        fn, inputs = _inputs(op, L)

        def loss(*args):
            out, final = fn(*args)
            return jnp.sum(out.astype(jnp.float32)) + jnp.sum(final)

        grad = jax.grad(loss, argnums=tuple(range(len(inputs))))
        for P in SHARDS:
            if P > jax.device_count():
                rows.append({"op": op, "P": P, "skipped": f"{jax.device_count()} devices"})
                continue
            if P == 1:
                step, args = grad, tuple(jnp.asarray(x) for x in inputs)
            else:
                mesh = jax.make_mesh((P,), ("seq",), (AxisType.Auto,), devices=jax.devices()[:P])
                timed = NamedSharding(mesh, PartitionSpec(None, "seq"))
                args = tuple(jax.device_put(x, timed) for x in inputs)

                def step(*args, mesh=mesh):
                    with scans.sequence_parallel(mesh, axis="seq"):
                        return grad(*args)
            compiled = compile_stats(step, *args)
            seconds = median_seconds(compiled.run, *args, repeats=repeats, warmup=1)
            rows.append({"op": op, "P": P, "seconds": seconds, "peak_bytes": compiled.peak_bytes,
                         "compile_seconds": compiled.seconds})
            print(f"{op} P={P}: {seconds * 1e3:.1f} ms, peak {format_bytes(compiled.peak_bytes)} per device",
                  flush=True)
    return rows


def _report(rows: list[dict], L: int, quick: bool) -> dict:
    one = {r["op"]: r for r in rows if r["P"] == 1 and "seconds" in r}
    table_rows, verdicts = [], []
    for r in rows:
        if "seconds" not in r:
            table_rows.append([r["op"], r["P"], "skipped", "", "", "", r["skipped"]])
            continue
        base = one.get(r["op"])
        time_ratio = r["seconds"] / base["seconds"] if base else float("nan")
        memory_ratio = (r["peak_bytes"] / base["peak_bytes"]
                        if base and r["peak_bytes"] and base["peak_bytes"] else float("nan"))
        r.update(time_ratio=time_ratio, memory_ratio=memory_ratio)
        table_rows.append([r["op"], r["P"], r["seconds"] * 1e3, time_ratio, format_bytes(r["peak_bytes"]),
                           memory_ratio, f"{1 / r['P']:.3g}"])
    for op in SCANS:
        peaks = {r["P"]: r.get("peak_bytes") for r in rows if r["op"] == op and r.get("peak_bytes")}
        if 1 in peaks and 8 in peaks:
            ratio = peaks[8] / peaks[1]
            verdicts.append(verdict(f"parallel suite, {op} per-device memory at P = 8 vs one device",
                                    ratio <= 1.5 / 8, f"{ratio:.3f}", "≤ 1.5/P = 0.188"))
        if 2 in peaks and 8 in peaks:
            ratio = peaks[8] / peaks[2]
            verdicts.append(verdict(f"parallel suite, {op} per-device memory falls as 1/P (P = 2 → 8)",
                                    ratio <= 1.25 * 2 / 8, f"{ratio:.3f}", "≤ 1.25 · 2/8 = 0.312"))
    headers = ["scan", "P", "fwd+bwd ms", "time / P=1", "peak per device", "memory / P=1", "1/P"]
    table = markdown_table(headers, table_rows)
    print(f"\nL = {L}, forward+backward, sequence-parallel vs one device\n\n{table}\n")
    for line in verdicts:
        print(line)
    name = "parallel_quick" if quick else "parallel"
    record = {"length": L, "rows": rows, "table": table, "verdicts": verdicts}
    save_json(name, record)

    def draw(plt):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for op in SCANS:
            done = [r for r in rows if r["op"] == op and "seconds" in r]
            P = [r["P"] for r in done]
            axes[0].plot(P, [r["time_ratio"] for r in done], "o-", label=op)
            axes[1].plot(P, [r["memory_ratio"] for r in done], "o-", label=op)
        axes[1].plot(SHARDS, [1 / p for p in SHARDS], "k--", label="1/P")
        for ax, title in zip(axes, ("time / one device", "peak memory per device / one device")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("devices P")
            ax.set_title(title)
            ax.legend()
        axes[1].set_yscale("log", base=2)
        fig.suptitle(f"sequence-parallel scans, L = {L}, forward+backward")

    save_plot(name, draw)
    return record


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="L = 8192, fewer repeats")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # the measuring subprocess
    args = p.parse_args(argv)
    L, repeats = (8192, 3) if args.quick else (65536, 5)
    if args.worker:
        print("ROWS " + json.dumps(_measure(L, repeats)), flush=True)
        return {}
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    command = [sys.executable, "-m", "benchmarks.parallel", "--worker"] + (["--quick"] if args.quick else [])
    proc = subprocess.run(command, env=dict(os.environ, XLA_FLAGS=flags.strip()), capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.stdout.write("".join(line + "\n" for line in proc.stdout.splitlines() if not line.startswith("ROWS ")))
    if proc.returncode != 0:
        raise RuntimeError(f"the measuring subprocess failed:\n{proc.stderr[-4000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("ROWS "))
    return _report(json.loads(line[len("ROWS "):]), L, args.quick)


if __name__ == "__main__":
    main()
