"""The scan-core half of ``benchmarks/accelerator.py``: every core scan at a given size,
checked against ``seqmodels/scans/reference.py`` and timed method by method.

One :class:`ScanCase` per core scan says how to make its inputs at a :class:`ScanSize`
(batch ``B``, length ``L``, heads ``H``, head size ``D``), which methods it has and how
to call the fast path and the plain-loop reference. Shapes (float32):

* ``linear_scan``: ``a, b (B, L, H·D)`` (a diagonal state of ``H·D`` features);
* ``softmax_scan``: ``scores (B, L, H)``, ``v (B, L, H, D)``;
* ``matrix_scan``: ``H`` channels with one dense time-invariant ``N × N`` transition,
  ``N = max(D // 4, 2)`` (LSSL-like), ``b (B, L, H, N)``;
* ``linear_attention``: ``q, k, v (B, L, H, D)`` and one log decay per head and step;
* ``delta_rule``: unit keys, ``β ∈ (0, 1)``, a log forget gate, one Householder step;
* ``grid_scan``: pLSTM 2-D D-mode (``T_dl`` absent) on an ``X × Y`` grid with
  ``X·Y = L`` (``benchmarks.mixers.grid``), edge states ``(H, D, 2)``;
* ``fft_conv``: ``u (B, L, H·D)`` with a kernel as long as the sequence.

:func:`check` runs every method (and ``auto``) of every case against the reference,
outputs, final states and the gradients of a fixed random projection of both with
respect to every input; the reference runs under ``jax.default_matmul_precision("float32")``
so that it stays exact where the device's default float32 matmul rounds (TF32 on recent
NVIDIA GPUs), while the fast paths run as users run them. :func:`time_case` times one
method, forward or forward+backward, after compiling it and checking its compiled
memory against a limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from seqmodels import scans
from seqmodels.scans import reference
from seqmodels.scans._dispatch import resolve_method

from ._common import budgeted_seconds, compile_stats
from .mixers import grid

DISPATCHED = ("linear_scan", "matrix_scan", "softmax_scan", "linear_attention", "delta_rule")


@dataclass(frozen=True)
class ScanSize:
    batch: int
    length: int
    heads: int
    dim: int


@dataclass(frozen=True)
class ScanCase:
    op: str
    methods: tuple[str, ...]
    make: Callable          # (key, ScanSize) -> tuple of float32 input arrays
    call: Callable          # (method, *inputs) -> outputs (any pytree)
    reference: Callable     # (*inputs) -> the same pytree, by the plain loop
    history_bytes: Callable = lambda size: None  # what the op passes to resolve_method


def _normal(key, shape, scale=1.0):
    return scale * jax.random.normal(key, shape, jnp.float32)


def _decays(key, shape):
    """Log decays in (−0.1, 0]."""
    return -jax.random.uniform(key, shape, jnp.float32, maxval=0.1)


def _linear_inputs(key, s: ScanSize):
    ka, kb = jax.random.split(key)
    shape = (s.batch, s.length, s.heads * s.dim)
    return jax.random.uniform(ka, shape, jnp.float32, minval=0.9, maxval=0.999), _normal(kb, shape)


def _softmax_inputs(key, s: ScanSize):
    ks, kv = jax.random.split(key)
    return _normal(ks, (s.batch, s.length, s.heads)), _normal(kv, (s.batch, s.length, s.heads, s.dim))


def matrix_state_size(s: ScanSize) -> int:
    return max(s.dim // 4, 2)


def _matrix_inputs(key, s: ScanSize):
    kA, kb = jax.random.split(key)
    N = matrix_state_size(s)
    return _normal(kA, (s.heads, N, N), 0.5 / N ** 0.5), _normal(kb, (s.batch, s.length, s.heads, N))


def _qkv(key, s: ScanSize, unit_keys: bool):
    kq, kk, kv = jax.random.split(key, 3)
    shape = (s.batch, s.length, s.heads, s.dim)
    k = _normal(kk, shape)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True) if unit_keys else k / s.dim ** 0.5
    return _normal(kq, shape, s.dim ** -0.5), k, _normal(kv, shape, s.dim ** -0.5)


def _linear_attention_inputs(key, s: ScanSize):
    k1, k2 = jax.random.split(key)
    return _qkv(k1, s, unit_keys=False) + (_decays(k2, (s.batch, s.length, s.heads)),)


def _delta_inputs(key, s: ScanSize):
    k1, k2, k3 = jax.random.split(key, 3)
    beta = jax.nn.sigmoid(_normal(k2, (s.batch, s.length, s.heads)))
    return _qkv(k1, s, unit_keys=True) + (beta, _decays(k3, (s.batch, s.length, s.heads)))


GRID_STATE = 2  # pLSTM's N: edge states (H, D, N)


def _grid_inputs(key, s: ScanSize):
    X, Y = grid(s.length)
    kr, kd, *kt = jax.random.split(key, 5)
    state = (s.batch, X, Y, s.heads, s.dim, GRID_STATE)
    transitions = (s.batch, X, Y, s.heads, 1, GRID_STATE, GRID_STATE)
    T_rl, T_ru, T_du = (_normal(k, transitions, 0.4) for k in kt[:3])
    return _normal(kr, state), _normal(kd, state), T_rl, T_ru, T_du


def _conv_inputs(key, s: ScanSize):
    ku, kk = jax.random.split(key)
    features = s.heads * s.dim
    decay = jnp.exp(-jnp.arange(s.length, dtype=jnp.float32) / 64.0)[:, None]
    return _normal(ku, (s.batch, s.length, features)), _normal(kk, (s.length, features), 0.1) * decay


def _grid_call(fast):
    return lambda method, b_r, b_d, T_rl, T_ru, T_du: fast(b_r, b_d, T_rl, T_ru, None, T_du, method=method)


CASES = (
    ScanCase("linear_scan", ("sequential", "associative", "chunked"), _linear_inputs,
             lambda m, a, b: scans.linear_scan(a, b, method=m), reference.linear_scan),
    ScanCase("softmax_scan", ("sequential", "associative", "chunked"), _softmax_inputs,
             lambda m, s, v: scans.softmax_scan(s, v, method=m), reference.softmax_scan,
             history_bytes=lambda s: s.batch * s.length * s.heads * (s.dim + 1) * 4),
    ScanCase("matrix_scan", ("sequential", "associative", "chunked"), _matrix_inputs,
             lambda m, A, b: scans.matrix_scan(A, b, method=m), reference.matrix_scan,
             history_bytes=lambda s: s.batch * s.length * s.heads * matrix_state_size(s) * 4),
    ScanCase("linear_attention", ("sequential", "chunked"), _linear_attention_inputs,
             lambda m, q, k, v, g: scans.linear_attention(q, k, v, g, method=m), reference.linear_attention),
    ScanCase("delta_rule", ("sequential", "chunked"), _delta_inputs,
             lambda m, q, k, v, beta, g: scans.delta_rule(q, k, v, beta, g, method=m), reference.delta_rule),
    ScanCase("grid_scan", ("factorized", "wavefront"), _grid_inputs, _grid_call(scans.grid_scan),
             lambda b_r, b_d, T_rl, T_ru, T_du: reference.grid_scan(b_r, b_d, T_rl, T_ru, None, T_du)),
    ScanCase("fft_conv", ("fft",), _conv_inputs, lambda m, u, kernel: scans.fft_conv(u, kernel),
             reference.fft_conv),
)


def auto_choice(case: ScanCase, size: ScanSize) -> str | None:
    """The method ``auto`` resolves to on this backend (``_dispatch.resolve_method``), or
    None for the scans that decide elsewhere (``grid_scan``); ``fft_conv`` has one method."""
    if case.op in DISPATCHED:
        return resolve_method(case.op, "auto", state_history_bytes=case.history_bytes(size))
    return case.methods[0] if len(case.methods) == 1 else None


def methods_to_time(case: ScanCase, size: ScanSize) -> tuple[str, ...]:
    """Every method, plus ``auto`` itself where it is not one of them (a hybrid, or unknown)."""
    return case.methods if auto_choice(case, size) in case.methods else case.methods + ("auto",)


# --- correctness -------------------------------------------------------------------------

def relative_error(actual, expected) -> float:
    """``max |actual − expected| / max |expected|`` over every leaf (float64 on the host)."""
    worst = 0.0
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        finite = np.isfinite(e)
        if not np.array_equal(finite, np.isfinite(a)):
            return float("inf")
        scale = max(float(np.max(np.abs(e[finite]), initial=0.0)), 1e-12)
        worst = max(worst, float(np.max(np.abs(a[finite] - e[finite]), initial=0.0)) / scale)
    return worst


def _projection_loss(fn, weights):
    """``Σ ⟨w, leaf⟩`` over the finite leaves of ``fn(*inputs)``: its gradient is the vjp of ``weights``."""
    def loss(*inputs):
        leaves = jax.tree.leaves(fn(*inputs))
        return sum(jnp.sum(jnp.where(jnp.isfinite(x), x * w, 0.0)) for x, w in zip(leaves, weights))

    return loss


def _sum_of_squares(fn):
    """``Σ x²`` over the finite entries of every leaf of ``fn(*inputs)`` (outputs and final state)."""
    def loss(*inputs):
        return sum(jnp.sum(jnp.where(jnp.isfinite(x), x * x, 0.0)) for x in jax.tree.leaves(fn(*inputs)))

    return loss


def _value_and_grads(fn, inputs, weights, gradients: bool):
    """``(fn(*inputs), gradients of the projection w.r.t. every input or None)``, jitted."""
    if not gradients:
        return jax.jit(fn)(*inputs), None
    argnums = tuple(range(len(inputs)))
    return jax.jit(lambda *xs: (fn(*xs), jax.grad(_projection_loss(fn, weights), argnums)(*xs)))(*inputs)


def check(case: ScanCase, size: ScanSize, tolerance: float, *, gradients: bool = True) -> list[dict]:
    """Every method of ``case`` (and ``auto``) against the reference at ``size``: one entry
    each, with the relative error of the outputs and final state and, with ``gradients``,
    of the gradients with respect to every input. Where ``auto`` resolves to one of the
    methods it runs that method's code, and its entry repeats that method's (``same_as``)."""
    inputs = case.make(jax.random.PRNGKey(1), size)
    expected_out = jax.eval_shape(case.reference, *inputs)
    keys = jax.random.split(jax.random.PRNGKey(2), len(jax.tree.leaves(expected_out)))
    weights = [_normal(k, x.shape) for k, x in zip(keys, jax.tree.leaves(expected_out))]
    with jax.default_matmul_precision("float32"):
        expected = _value_and_grads(case.reference, inputs, weights, gradients)
    entries = []
    for method in methods_to_time(case, size):
        entry = {"op": case.op, "method": method, "shape": [list(x.shape) for x in inputs]}
        try:
            out, grads = _value_and_grads(lambda *xs, m=method: case.call(m, *xs), inputs, weights, gradients)
            entry["output_error"] = relative_error(out, expected[0])
            if gradients:
                entry["gradient_error"] = relative_error(grads, expected[1])
            worst = max(entry["output_error"], entry.get("gradient_error", 0.0))
            if not worst <= tolerance:
                entry["failed"] = f"mismatch: relative error {worst:.2e} > tolerance {tolerance:.0e}"
        except Exception as error:  # reported, never fatal
            entry["failed"] = f"{type(error).__name__}: {error}"[:300]
        entries.append(entry)
    choice = auto_choice(case, size)
    if choice in case.methods:  # auto runs exactly that method's code: its result is that method's
        same = next(e for e in entries if e["method"] == choice)
        entries.append(dict(same, method="auto", same_as=choice))
    return entries


# --- timing ------------------------------------------------------------------------------

def time_case(case: ScanCase, size: ScanSize, method: str, fwd_bwd: bool, *, max_bytes: float,
              repeats: int, budget_s: float) -> dict:
    """Compile one method (forward, or gradients of ``Σ o² + Σ S²`` w.r.t. every input) and
    time it unless its compiled memory exceeds ``max_bytes``."""
    inputs = case.make(jax.random.PRNGKey(0), size)
    fn = lambda *xs: case.call(method, *xs)  # noqa: E731
    if fwd_bwd:
        fn = jax.grad(_sum_of_squares(fn), tuple(range(len(inputs))))
    compiled = compile_stats(fn, *inputs)
    entry = {"compile_s": compiled.seconds, "peak_bytes": compiled.peak_bytes}
    if compiled.peak_bytes is not None and compiled.peak_bytes > max_bytes:
        return dict(entry, skipped=f"too large ({compiled.peak_bytes / (1 << 30):.1f} GiB compiled)")
    seconds, calls = budgeted_seconds(compiled.run, *inputs, repeats=repeats, budget_s=budget_s,
                                      slow_warmup_counts=True)
    return dict(entry, ms=1e3 * seconds, timed_calls=calls)
