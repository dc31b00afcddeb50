"""The side-by-side half of ``benchmarks/accelerator.py``: our scans against the Triton
kernels of flash-linear-attention (``fla``, PyTorch) at identical shapes and dtypes.

Three pairs, inputs ``[B, T, H, D]`` (fla's one layout, also ours), drawn once in float32
on the host and rounded to bfloat16 the same way on both sides (round to nearest even),
so both get bit-identical inputs:

* ``scans.delta_rule(q, k, v, β)`` (no gate, one Householder step, unit keys) vs
  ``fla.ops.delta_rule.chunk_delta_rule(q, k, v, beta, scale=1)``, both
  ``S_t = S_{t−1} − β_t k_t (k_tᵀ S_{t−1} − v_tᵀ)``, ``o_t = S_tᵀ q_t`` (fla's chunked delta rule
  accepts bfloat16/float16 only);
* ``scans.linear_attention(q, k, v, g)`` with one log decay per head and step vs
  ``fla.ops.simple_gla.chunk_simple_gla(q, k, v, g=g, scale=1)``:
  ``S_t = e^{g_t} S_{t−1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t``;
* causal softmax attention, our quadratic baseline
  (``seqmodels.layers.attention.softmax_attention``) vs
  ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)`` (FlashAttention-
  style kernels; layout ``[B, H, T, D]``, so q, k, v are transposed views).

Each pair is timed forward and forward+backward (gradients of ``Σ o² + Σ S²`` with
respect to every input, ``S`` the final state where there is one), and the forward
outputs are compared: ``max |ours − theirs| / max |theirs|`` in float32.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from seqmodels import scans
from seqmodels.layers.attention import softmax_attention

from ._common import budgeted_seconds, compile_stats

AGREEMENT_TOLERANCE = 2e-2  # relative, bfloat16 inputs and outputs (2^-8 ≈ 4e-3 per rounding)
PAIRS = ("delta_rule", "linear_attention", "softmax_attention")
THEIRS = {"delta_rule": "fla chunk_delta_rule", "linear_attention": "fla chunk_simple_gla",
          "softmax_attention": "torch scaled_dot_product_attention"}


def unavailable() -> str | None:
    """Why the comparison cannot run here (None when it can)."""
    try:
        import torch
    except ImportError:
        return "torch is not importable"
    try:
        import fla.ops.delta_rule  # noqa: F401
        import fla.ops.simple_gla  # noqa: F401
    except Exception as error:  # ImportError, or a Triton/CUDA failure at import
        return f"fla (flash-linear-attention) is not importable: {type(error).__name__}: {error}"[:200]
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (fla's kernels are Triton GPU kernels)"
    return None


def host_inputs(pair: str, batch: int, length: int, heads: int, dim: int, seed: int = 0) -> dict:
    """float32 numpy inputs of ``pair`` (unit keys for the delta rule, log decays in (−0.1, 0])."""
    rng = np.random.default_rng(seed)
    shape = (batch, length, heads, dim)
    q = rng.standard_normal(shape, np.float32) * dim ** -0.5
    k = rng.standard_normal(shape, np.float32)
    k = k / np.linalg.norm(k, axis=-1, keepdims=True) if pair == "delta_rule" else k * dim ** -0.5
    v = rng.standard_normal(shape, np.float32) * dim ** -0.5
    if pair == "delta_rule":
        return {"q": q, "k": k, "v": v, "beta": 1 / (1 + np.exp(-rng.standard_normal(shape[:3], np.float32)))}
    if pair == "linear_attention":
        return {"q": q, "k": k, "v": v, "g": -rng.uniform(0, 0.1, shape[:3]).astype(np.float32)}
    return {"q": q, "k": k, "v": v}


def ours(pair: str):
    """``f(**inputs) -> pytree`` in JAX for ``pair``."""
    if pair == "delta_rule":
        return lambda q, k, v, beta: scans.delta_rule(q, k, v, beta)
    if pair == "linear_attention":
        return lambda q, k, v, g: scans.linear_attention(q, k, v, g)

    def attention(q, k, v):
        L = q.shape[1]
        causal = jnp.tril(jnp.ones((L, L), bool))[None, None]
        return softmax_attention(q, k, v, causal, q.shape[-1] ** -0.5)

    return attention


def theirs(pair: str):
    """``f(**inputs) -> tuple of torch tensors`` for ``pair`` (fla or torch)."""
    import torch.nn.functional as F

    if pair == "delta_rule":
        from fla.ops.delta_rule import chunk_delta_rule
        return lambda q, k, v, beta: chunk_delta_rule(q, k, v, beta, scale=1.0, output_final_state=True)
    if pair == "linear_attention":
        from fla.ops.simple_gla import chunk_simple_gla
        return lambda q, k, v, g: chunk_simple_gla(q, k, v, g=g, scale=1.0, output_final_state=True)
    return lambda q, k, v: (F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2),)


def _jax_squares(fn):
    def loss(*xs):
        return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(fn(*xs)))

    return loss


def _torch_median_seconds(fn, repeats: int, budget_s: float) -> float:
    import torch

    def timed():
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    timed()  # warm-up: Triton compiles (or loads) its kernels here
    times = [timed()]
    times += [timed() for _ in range(max(1, min(repeats, int(budget_s / max(times[0], 1e-9)))) - 1)]
    return statistics.median(times)


def _time_theirs(pair, host, repeats, budget_s) -> tuple[dict, np.ndarray]:
    import torch

    fn = theirs(pair)
    tensors = {name: torch.from_numpy(x).cuda().to(torch.bfloat16) for name, x in host.items()}
    with torch.no_grad():
        output = fn(**tensors)[0].float().cpu().numpy()
    forward = _torch_median_seconds(lambda: fn(**tensors), repeats, budget_s)
    leaves = {name: t.detach().requires_grad_(True) for name, t in tensors.items()}

    def forward_backward():
        loss = sum((x.float() ** 2).sum() for x in fn(**leaves) if x is not None)
        torch.autograd.grad(loss, list(leaves.values()))

    fwd_bwd = _torch_median_seconds(forward_backward, repeats, budget_s)
    return {"forward_ms": 1e3 * forward, "fwd_bwd_ms": 1e3 * fwd_bwd}, output


def _time_ours(pair, host, repeats, budget_s, max_bytes) -> tuple[dict, np.ndarray | None]:
    fn = ours(pair)
    arrays = [jnp.asarray(x).astype(jnp.bfloat16) for x in host.values()]
    times = {}
    for kind, f in (("forward_ms", fn), ("fwd_bwd_ms", jax.grad(_jax_squares(fn), tuple(range(len(arrays)))))):
        compiled = compile_stats(lambda *xs, f=f: f(*xs), *arrays)
        if compiled.peak_bytes is not None and compiled.peak_bytes > max_bytes:
            times[kind] = None
            times.setdefault("skipped", f"too large ({compiled.peak_bytes / (1 << 30):.1f} GiB compiled)")
            continue
        times[kind] = 1e3 * budgeted_seconds(compiled.run, *arrays, repeats=repeats, budget_s=budget_s,
                                             slow_warmup_counts=True)[0]
    if times["forward_ms"] is None:
        return times, None
    output = jax.tree.leaves(jax.jit(fn)(*arrays))[0]
    return times, np.asarray(output.astype(jnp.float32))


def compare(pair: str, batch: int, length: int, heads: int, dim: int, *, repeats: int, budget_s: float,
            max_bytes: float) -> dict:
    """One pair at one shape: both sides timed, forward outputs compared."""
    host = host_inputs(pair, batch, length, heads, dim)
    entry = {"op": pair, "theirs": THEIRS[pair], "B": batch, "L": length, "H": heads, "D": dim, "dtype": "bfloat16"}
    our_times, our_output = _time_ours(pair, host, repeats, budget_s, max_bytes)
    their_times, their_output = _time_theirs(pair, host, repeats, budget_s)
    entry.update(ours=our_times, theirs_ms=their_times)
    for kind in ("forward_ms", "fwd_bwd_ms"):
        if our_times[kind] is not None:
            entry[kind.replace("_ms", "_ratio")] = our_times[kind] / their_times[kind]
    if our_output is not None:
        scale = max(float(np.max(np.abs(their_output))), 1e-12)
        entry["relative_difference"] = float(np.max(np.abs(our_output - their_output))) / scale
        entry["agree"] = entry["relative_difference"] <= AGREEMENT_TOLERANCE
    return entry
