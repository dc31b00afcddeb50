"""Forward + backward time of routing attention against local-only and full causal attention.

    python -m benchmarks.routing            # L in {1k, 2k, 4k, 8k, 16k}
    python -m benchmarks.routing --quick    # L in {1k, 2k, 4k}

Batch 1, d_model 256, 4 heads. Each method runs one jitted training step (forward,
the sown auxiliary loss, gradients w.r.t. the parameters, the centroid update):
one warm-up call (compile), then the median of ``--repeats`` timed calls, each ended
by ``block_until_ready``. Prints a Markdown table and the growth exponent of each
method (least squares of log time on log length), saves a JSON file and, when
matplotlib is installed, a log-log plot under ``benchmarks/results/``. Times are
printed, never asserted.

Methods:
  routing     ``routing`` with its defaults: 2 local + 2 routing heads, window 64,
              8 clusters (the default), content admission.
  local       the same mixer with 4 local heads (sliding window 64), no routing.
  full        dense causal softmax attention, an (L × L) matrix per head.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
from flax import nnx

import seqmodels.layers as layers
from seqmodels.layers.common import Dense

from ._common import growth_exponent, markdown_table, median_seconds, save_json, save_plot

D_MODEL, NUM_HEADS, BATCH = 256, 4, 1
LENGTHS = {"full": [1024, 2048, 4096, 8192, 16384], "quick": [1024, 2048, 4096]}


class FullCausalAttention(nnx.Module):
    """Multi-head causal softmax attention over the whole sequence (the quadratic baseline)."""

    def __init__(self, d_model: int, *, num_heads: int, rngs: nnx.Rngs):
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.query = Dense(d_model, d_model, rngs=rngs)
        self.key = Dense(d_model, d_model, rngs=rngs)
        self.value = Dense(d_model, d_model, rngs=rngs)
        self.out = Dense(d_model, d_model, rngs=rngs)

    def __call__(self, x):
        batch, length, _ = x.shape
        shape = (batch, length, self.num_heads, self.head_dim)
        q, k, v = (proj(x).reshape(shape) for proj in (self.query, self.key, self.value))
        logits = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(self.head_dim)
        causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
        weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
        o = jnp.einsum("bhts,bshd->bthd", weights, v)
        return self.out(o.reshape(batch, length, self.num_heads * self.head_dim))


def build(method: str) -> nnx.Module:
    rngs = nnx.Rngs(0)
    if method == "routing":
        return layers.build("routing", D_MODEL, rngs=rngs, num_heads=NUM_HEADS)
    if method == "local":
        return layers.build("routing", D_MODEL, rngs=rngs, num_heads=NUM_HEADS, local_heads=NUM_HEADS)
    if method == "full":
        return FullCausalAttention(D_MODEL, num_heads=NUM_HEADS, rngs=rngs)
    raise ValueError(f"unknown method {method!r}")


def training_step(model: nnx.Module):
    """A jitted ``(state, x) -> (grads, state)``: forward, aux loss, backward, centroid update."""
    graphdef, state = nnx.split(model)

    def loss_fn(model, x):
        y, intermediates = nnx.capture(model, nnx.Intermediate)(x)
        return jnp.mean(jnp.square(y.astype(jnp.float32))) + sum(jax.tree.leaves(intermediates), 0.0)

    @jax.jit
    def step(state, x):
        model = nnx.merge(graphdef, state)
        grads = nnx.grad(loss_fn)(model, x)
        return grads, nnx.state(model)

    return step, state


def time_method(method: str, length: int, repeats: int) -> float:
    """Median seconds of one training step at ``length`` after a warm-up call."""
    step, state = training_step(build(method))
    x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, length, D_MODEL), jnp.float32)
    return median_seconds(step, state, x, repeats=repeats, warmup=1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="L in {1k, 2k, 4k} only")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per point (median)")
    parser.add_argument("--methods", default="routing,local,full", help="comma-separated subset")
    parser.add_argument("--lengths", type=int, nargs="+", help="override the lengths (full attention at "
                        "L = 16k needs ~17 GiB of host memory)")
    args = parser.parse_args(argv)

    lengths = args.lengths or LENGTHS["quick" if args.quick else "full"]
    methods = args.methods.split(",")
    results = {m: [] for m in methods}
    for method in methods:
        for n in lengths:
            results[method].append(time_method(method, n, args.repeats))
            print(f"{method:8s} L={n:6d} {1e3 * results[method][-1]:10.1f} ms", flush=True)
    exponents = {m: growth_exponent(lengths, results[m]) for m in methods}
    rows = [[n] + [1e3 * results[m][i] for m in methods] for i, n in enumerate(lengths)]
    rows.append(["exponent"] + [exponents[m] for m in methods])
    print()
    print(markdown_table(["L"] + [f"{m} ms" for m in methods], rows))
    print()
    print("growth exponents (time ∝ L^p): " + ", ".join(f"{m} p={exponents[m]:.2f}" for m in methods))

    stem = "routing_quick" if args.quick else "routing"
    record = {"lengths": lengths, "seconds": results, "exponents": exponents, "batch": BATCH,
              "d_model": D_MODEL, "num_heads": NUM_HEADS, "repeats": args.repeats}
    path = save_json(stem, record)

    def draw(plt):
        fig, ax = plt.subplots(figsize=(5, 4))
        for method, seconds in results.items():
            ax.loglog(lengths, [1e3 * t for t in seconds], marker="o", label=method)
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("forward + backward (ms)")
        ax.set_title(f"causal attention, B={BATCH}, d={D_MODEL}, {NUM_HEADS} heads")
        ax.legend()

    plot = save_plot(stem, draw)
    print(f"saved {path}" + (f" and {plot}" if plot else " (matplotlib not installed: no plot)"))
    return record


if __name__ == "__main__":
    main()
