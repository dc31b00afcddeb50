"""How ``method="auto"`` chooses an algorithm, in one place.

The choices come from measurements (``benchmarks/scans.py``,
``research/cpu_scan_findings.md``):

* CPU: a sequential ``lax.scan`` is the fastest forward for every recurrence at every
  length we measured (it runs near memory bandwidth; ``associative_scan`` is ~7×
  slower). For matrix states (``linear_attention``, ``delta_rule``) the sequential
  scan's *backward* is the exception: 3-25× slower than the chunked backward, and it
  stores every step's state (``B·L·H·Dk·Dv`` floats). Those ops resolve ``auto`` to
  ``"sequential_forward_chunked_backward"``: the sequential forward, differentiated
  through the chunked form (:func:`sequential_forward_chunked_backward`). Such a hybrid
  never differentiates the sequential scan, so it keeps no per-step history and needs
  no memory rule. The other ops resolve to ``"sequential"``, whose backward does keep
  the history; they fall back to ``"chunked"`` when the caller's per-step state history
  would exceed ``STATE_HISTORY_LIMIT_BYTES``. ``plstm_scan`` (a ``Dk × Dv × N`` state
  per head) resolves to ``"chunked"`` both ways: its chunked forward is ~3× faster than
  the sequential one (B=2, L=2048, H=4, Dk=Dv=32, N=4: 42 ms against 133 ms; the
  gradient 134 ms against 842 ms).
* GPU/TPU: log-depth and matmul-shaped forms (associative for diagonal states,
  chunked for matrix states) keep the device busy.
"""

from __future__ import annotations

from typing import Callable

import jax

# Above this many bytes of per-step state history, prefer chunked (bounded memory).
STATE_HISTORY_LIMIT_BYTES = 1 << 30

_ACCELERATOR_CHOICE = {
    "linear_scan": "associative",
    "matrix_scan": "associative",
    "softmax_scan": "associative",
    "cumulative_logsumexp": "associative",
    "linear_attention": "chunked",
    "delta_rule": "chunked",
    "plstm_scan": "chunked",
}


_CPU_CHOICE = {
    "linear_attention": "sequential_forward_chunked_backward",
    "delta_rule": "sequential_forward_chunked_backward",
    "plstm_scan": "chunked",
}


def on_accelerator() -> bool:
    return jax.default_backend() not in ("cpu",)


def resolve_method(op: str, method: str, shape=None, *, state_history_bytes: int | None = None) -> str:
    """Return the concrete method for ``op``; explicit choices pass through unchanged."""
    if method != "auto":
        return method
    if on_accelerator():
        return _ACCELERATOR_CHOICE[op]
    if op in _CPU_CHOICE:  # no per-step history: chunked, or the hybrid whose backward is chunked
        return _CPU_CHOICE[op]
    if state_history_bytes is not None and state_history_bytes > STATE_HISTORY_LIMIT_BYTES:
        return "chunked"
    return "sequential"


def sequential_forward_chunked_backward(sequential: Callable, chunked: Callable) -> Callable:
    """The ``"sequential_forward_chunked_backward"`` method of an op, as a ``jax.custom_vjp``.

    ``sequential(*args)`` and ``chunked(*args)`` must compute the same function of the
    same positional arguments (arrays or None; options bound by the caller). The
    result evaluates ``sequential`` when not differentiated (the fastest forward on
    CPU) and, under reverse-mode differentiation, runs ``chunked`` forward and takes
    its vjp (for matrix states much faster than the sequential scan's backward, and it
    keeps only chunk-boundary states). Both compute the same function, so the gradient
    is exact; forward-mode differentiation (``jax.jvp``) needs an explicit method.
    Build it at call time (``sequential_forward_chunked_backward(_sequential,
    _chunked)(*args)``), so that the implementations are looked up when the op runs.
    """

    @jax.custom_vjp
    def hybrid(*args):
        return sequential(*args)

    def forward(*args):
        return jax.vjp(chunked, *args)  # outputs, and the chunked vjp as the residual

    def backward(chunked_vjp, cotangents):
        return chunked_vjp(cotangents)

    hybrid.defvjp(forward, backward)
    return hybrid
