"""Sequence-parallel scans (``seqmodels.scans.parallel``) equal the single-device scans.

Subprocesses with 8 forced CPU devices (the device count is fixed when JAX starts) run
every core scan sharded over P ∈ {2, 4, 8} (mesh ``(8/P, P)``, the batch split over
``data`` where it divides) and on one device, in float64: outputs, final states and
the gradients of every input (initial state included) for a random cotangent. The
length 29 splits unevenly into shards and into chunks of 4; resets fall exactly on
shard boundaries (one per direction; the other boundaries carry); decays are slow (a
broken carry would show). Explicit sharding mode is checked too: selection by the
input's sharding, and the context with replicated inputs. Each subprocess prints one
JSON line, so JAX starts once per process; two processes run at once (compiling
dominates and uses one core each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import full_size
from seqmodels import scans

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    sys.path.insert(0, "tests")
    from helpers import relative_error
    from seqmodels import scans

    assert jax.device_count() == 8, jax.devices()
    FULL, PARTS = sys.argv[1] == "full", sys.argv[2].split(",")
    B, L, D, N, H, Dk = 2, 29, 3, 2, 2, 4
    # L = 29 shards as 15+14 / 8·3+5 / 4·7+1. A forward scan pads the start, so shard 1
    # begins at step 14 / 5 / 1 (P = 2 / 4 / 8); reversed, shard 1's state enters step
    # Ls - 1 = 14 / 7 / 3. Resets there cut exactly at a boundary; the other boundaries carry.
    RESET_FORWARD, RESET_REVERSE = np.zeros((B, L), bool), np.zeros((B, L), bool)
    RESET_FORWARD[:, [1, 5, 14]], RESET_REVERSE[:, [3, 7, 14]] = True, True

    def cases(seed):
        # name -> (function of the inputs, inputs). Inputs come from numpy (no compile per
        # array); decays are slow so that every carry shows.
        rng = np.random.default_rng(seed)
        normal = lambda *shape: jnp.asarray(rng.standard_normal(shape))
        uniform = lambda lo, hi, *shape: jnp.asarray(rng.uniform(lo, hi, shape))
        unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
        phase = jnp.exp(0.3j * normal(D))
        q, k = normal(B, L, H, Dk) / 2, normal(B, L, H, Dk) / 2
        a, a_const, a_head = uniform(0.97, 1.0, B, L, D), uniform(0.97, 1.0, D), uniform(0.97, 1.0, B, L, 1)
        b, h0 = normal(B, L, D), normal(B, D)
        A, A_const = 0.7 * jnp.eye(N) + 0.2 * normal(B, L, D, N, N), 0.9 * jnp.eye(N) + 0.05 * normal(D, N, N)
        b_m, h0_m = normal(B, L, D, N), normal(B, D, N)
        scores, values, state = normal(B, L, H), normal(B, L, H, Dk), (normal(B, H), normal(B, H), normal(B, H, Dk))
        g_head, g_feature, s0 = 0.05 * normal(B, L, H), 0.05 * normal(B, L, H, Dk), normal(B, H, Dk, Dk)
        v, k2, v2, beta, beta2 = (normal(B, L, H, Dk), normal(B, L, H, 2, Dk), normal(B, L, H, 2, Dk),
                                  normal(B, L, H), normal(B, L, H, 2))
        masked = lambda s: jnp.where(jnp.arange(L)[None, :, None] < 9, -jnp.inf, s)
        gates = (uniform(0, 1, B, L, H, N), 0.7 * jnp.eye(N) + 0.2 * normal(B, L, H, N, N),
                 uniform(0, 1, B, L, H, N), uniform(0, 1, B, L, H))
        C0 = normal(B, H, Dk, Dk, N)

        def linear(method, reverse=False, complex_=False, reset=True):
            rotate = (lambda x: x * phase) if complex_ else (lambda x: x)
            resets = (RESET_REVERSE if reverse else RESET_FORWARD) if reset else None
            return lambda a, b, h0: scans.linear_scan(rotate(a), rotate(b), rotate(h0), reverse=reverse,
                                                      reset=resets, method=method, chunk_size=4)

        def matrix(method, reverse=False):
            return lambda A, b, h0: scans.matrix_scan(A, b, h0, reverse=reverse, method=method, chunk_size=4)

        def softmax(method, mask=False):
            if mask:
                return lambda s, v: scans.softmax_scan(masked(s), v, method=method, chunk_size=4)
            return lambda s, v, m, u, w: scans.softmax_scan(s, v, scans.SoftmaxState(m, jnp.abs(u) + 1, w),
                                                            method=method, chunk_size=4)

        def attention(method, decay=True):
            if not decay:
                return lambda q, k, v: scans.linear_attention(q, k, v, method=method, chunk_size=4)
            return lambda q, k, v, g, s0: scans.linear_attention(q, k, v, -jnp.abs(g), s0, method=method,
                                                                 chunk_size=4)

        def delta(method, gated=True):
            if not gated:
                return lambda q, k, v, b, s0: scans.delta_rule(q, unit(k), v, jax.nn.sigmoid(b), None, s0,
                                                               method=method, chunk_size=4)
            return lambda q, k, v, b, g, s0: scans.delta_rule(q, unit(k), v, 2 * jax.nn.sigmoid(b), -jnp.abs(g),
                                                              s0, method=method, chunk_size=4)

        def plstm(method):
            return lambda q, k, v, S, T, M, D, C0: scans.plstm_scan(q, k, v, S, T, M, D, C0, method=method,
                                                                    chunk_size=4)

        return {
            "linear": (linear("sequential"), (a, b, h0)),
            "linear reverse, complex time-invariant a, chunked": (
                linear("chunked", reverse=True, complex_=True), (a_const, b, h0)),
            "linear per-head a, associative": (linear("associative"), (a_head, b, h0)),
            "linear reverse, no resets": (linear("sequential", reverse=True, reset=False), (a, b, h0)),
            "matrix": (matrix("sequential"), (A, b_m, h0_m)),
            "matrix reverse": (matrix("sequential", reverse=True), (A, b_m, h0_m)),
            "matrix reverse, time-invariant A": (matrix("sequential", reverse=True), (A_const, b_m, h0_m)),
            "matrix time-invariant A, chunked": (matrix("chunked"), (A_const, b_m, h0_m)),
            "matrix reverse, chunked": (matrix("chunked", reverse=True), (A, b_m, h0_m)),
            "softmax": (softmax("sequential"), (scores, values) + state),
            "softmax masked steps": (softmax("sequential", mask=True), (scores, values)),
            "softmax chunked": (softmax("chunked"), (scores, values) + state),
            "linear_attention per-feature decay": (attention("sequential"), (q, k, v, g_feature, s0)),
            "linear_attention per-head decay": (attention("sequential"), (q, k, v, g_head, s0)),
            "linear_attention no decay": (attention("sequential", decay=False), (q / 2, k / 2, v)),
            "linear_attention per-feature decay, chunked": (attention("chunked"), (q, k, v, g_feature, s0)),
            "delta_rule n_h=2, gated": (delta("sequential"), (q, k2, v2, beta2, g_head, s0)),
            "delta_rule": (delta("sequential", gated=False), (q, k, v, beta, s0)),
            "delta_rule n_h=2, chunked": (delta("chunked"), (q, k2, v2, beta2, g_head, s0)),
            "plstm": (plstm("sequential"), (q, k, v) + gates + (C0,)),
            "plstm chunked": (plstm("chunked"), (q, k, v) + gates + (C0,)),
        }

    # Every P runs every scan, one variant each by default (rotating over P, one of them
    # chunked); "full" runs every variant at every P.
    BASE = {2: ["linear", "matrix reverse, time-invariant A", "softmax", "linear_attention per-feature decay",
                "delta_rule n_h=2, gated", "plstm chunked"],
            4: ["linear reverse, complex time-invariant a, chunked", "matrix", "softmax masked steps",
                "linear_attention per-head decay", "delta_rule", "plstm"],
            8: ["linear reverse, complex time-invariant a, chunked", "matrix reverse", "softmax",
                "linear_attention per-feature decay", "delta_rule n_h=2, gated", "plstm chunked"]}

    def like(cotangent, x):  # explicit mode: the cotangent takes the output's sharding
        spec = jax.typeof(x).sharding.spec
        return jax.reshard(cotangent, spec) if any(s is not None for s in spec) else cotangent

    def values_and_gradients(table, key):
        # outputs, final states and input gradients for a fixed random cotangent, every case
        results = {}
        for name, (fn, args) in table.items():
            out, vjp = jax.vjp(fn, *args)
            leaves, tree = jax.tree.flatten(out)
            cot = [like(jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float64).astype(x.dtype), x)
                   for i, x in enumerate(leaves)]
            results[name] = (out, vjp(jax.tree.unflatten(tree, cot)))
        return results

    def compare(got, want):
        report = {}
        for name in want:
            (out, grads), (ref_out, ref_grads) = got[name], want[name]
            pairs = lambda x, y: zip(jax.tree.leaves(x), jax.tree.leaves(y))
            report[name] = {
                "outputs": relative_error(out[0], ref_out[0]),
                "final": max(relative_error(x, y) for x, y in pairs(out[1], ref_out[1])),
                "gradients": max(relative_error(x, y) for x, y in pairs(grads, ref_grads)),
                "dtypes": all(x.dtype == y.dtype for x, y in pairs(out, ref_out)),
                "finite": all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((out, grads))),
            }
        return report

    result = {}
    with jax.enable_x64(True):
        key = jax.random.key(0)
        table = cases(0)
        selection = {P_: list(table) if FULL else names for P_, names in BASE.items() if f"P={P_}" in PARTS}
        explicit = "explicit" in PARTS
        used = {n: table[n] for names in selection.values() for n in names}
        used.update({n: table[n] for n in ("linear_attention per-feature decay",) if explicit})
        want = jax.jit(lambda: values_and_gradients(used, key))()
        for shards, names in selection.items():
            mesh = jax.make_mesh((8 // shards, shards), ("data", "seq"), (AxisType.Auto,) * 2)

            def sharded():
                with scans.sequence_parallel(mesh, axis="seq"):
                    return values_and_gradients({n: table[n] for n in names}, key)
            result[f"P={shards}"] = compare(jax.jit(sharded)(), {n: want[n] for n in names})

        if explicit:
            # the input's time sharding selects it (L = 28, divisible by 4); and the
            # context with replicated inputs of the uneven length (resharded, gathered back)
            mesh = jax.make_mesh((2, 4), ("data", "seq"), (AxisType.Explicit,) * 2)
            timed = lambda x: x.shape[:2] == (B, L)
            chosen = {n: table[n] for n in ("linear_attention per-feature decay",)}
            even = {"linear": (lambda a, b, h0: scans.linear_scan(a, b, h0), tuple(
                x[:, :28] if timed(x) else x for x in table["linear"][1]))}
            want_even = jax.jit(lambda: values_and_gradients(even, key))()
            with jax.set_mesh(mesh):
                put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data", "seq") if x.shape[:2] == (B, 28)
                                                                 else P("data")))
                inputs = {n: (fn, tuple(put(x) for x in args)) for n, (fn, args) in even.items()}
                result["explicit, sharded inputs"] = compare(
                    jax.jit(lambda: values_and_gradients(inputs, key))(), want_even)
                a, b, h0 = inputs["linear"][1]
                spec = jax.jit(lambda a, b, h0: scans.linear_scan(a, b, h0)[0])(a, b, h0).sharding.spec
                result["explicit, sharded inputs"]["linear"]["output spec"] = list(spec)

                def in_context():
                    with scans.sequence_parallel(mesh):
                        return values_and_gradients(chosen, key)
                result["explicit, context"] = compare(jax.jit(in_context)(), {n: want[n] for n in chosen})

            # arguments are checked at their global shapes, before sharding
            with scans.sequence_parallel(jax.make_mesh((2, 4), ("data", "seq"), (AxisType.Auto,) * 2)):
                try:
                    scans.linear_scan(jnp.ones((2, 12, 3)), jnp.ones((2, 12, 3)), jnp.ones((2, 4)))
                    result["error"] = None
                except ValueError as error:
                    result["error"] = str(error)
    print("RESULT " + json.dumps(result))
''')

PARTITIONS = ("P=2", "P=4", "P=8", "explicit, sharded inputs", "explicit, context")


def run_scripts(cases: str, *groups: str) -> dict:
    """Run the script once per group of parts, the groups concurrently (compiling dominates
    and is single-threaded; two processes use both CI cores), and merge their results."""
    # no LLVM optimization passes: compile time dominates these tiny runs (both sides alike)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, cases, group], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO) for group in groups]
    results = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-4000:]
        line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
        results.update(json.loads(line[len("RESULT "):]))
    return results


@pytest.fixture(scope="module")
def sharded_results():
    return run_scripts("base", "P=2,P=8", "P=4,explicit")


def check_report(results: dict, partition: str, num_cases: int) -> None:
    report = results[partition]
    assert len(report) == num_cases, sorted(report)
    for name, errors in report.items():
        assert errors["finite"] and errors["dtypes"], (partition, name, errors)
        for part in ("outputs", "final", "gradients"):
            assert errors[part] <= 1e-10, f"{partition} {name} {part}: relative error {errors[part]:.3g}"


@pytest.mark.parametrize("partition", PARTITIONS)
def test_sharded_scans_equal_single_device(sharded_results, partition):
    check_report(sharded_results, partition, 6 if partition.startswith("P=") else 1)


@pytest.mark.heavy
def test_every_method_and_form_sharded():
    if not full_size():
        pytest.skip("by default each P runs one variant of every scan; SEQMODELS_FULL=1 runs all 21 at every P")
    results = run_scripts("full", "P=2,P=8", "P=4")
    for partition in PARTITIONS[:3]:
        check_report(results, partition, 21)


def test_explicit_mode_keeps_the_sharded_layout(sharded_results):
    assert sharded_results["explicit, sharded inputs"]["linear"]["output spec"][:2] == ["data", "seq"]


def test_arguments_are_checked_at_global_shapes(sharded_results):
    assert sharded_results["error"] == "h0 must have shape (2, 3); got (2, 4)"


def test_context_state_and_errors():
    mesh = jax.make_mesh((1,), ("seq",), (jax.sharding.AxisType.Auto,))
    assert not scans.sequence_parallel_active()
    with scans.sequence_parallel(mesh):
        assert scans.sequence_parallel_active()
        # a single device along the axis: the plain scan, unchanged
        a, b = jnp.full((3,), 0.5), jnp.ones((2, 5, 3))
        np.testing.assert_array_equal(scans.linear_scan(a, b)[0], scans.linear_scan.__wrapped__(a, b)[0])
    assert not scans.sequence_parallel_active()
    with pytest.raises(ValueError, match=r"axis 'time' is not an axis of the mesh; its axes are \('seq',\)"):
        with scans.sequence_parallel(mesh, axis="time"):
            pass
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        with scans.sequence_parallel("seq"):
            pass
