"""A small training run on CPU: ``python -m seqmodels.demo``.

Trains a 2-layer Aaren ``SequenceModel`` to name the most frequent symbol of a random
sequence (a pooled classification that a softmax-weighted running average can solve)
and prints loss and accuracy against chance. The full training loop with configs,
checkpoints and a CLI is ``seqmodels.train`` (see README).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from seqmodels.models import SequenceModel


def majority_batch(rng: np.random.Generator, batch: int, length: int, vocab: int):
    """Sequences whose label is their most frequent symbol (ties broken by one extra copy)."""
    tokens = rng.integers(0, vocab, size=(batch, length))
    labels = rng.integers(0, vocab, size=batch)
    extra = length // 16  # overwrite a few positions with the label: a small majority margin
    for i in range(batch):
        tokens[i, rng.choice(length, extra, replace=False)] = labels[i]
    counts = np.stack([(tokens == v).sum(1) for v in range(vocab)], 1)
    return tokens.astype(np.int32), counts.argmax(1).astype(np.int32)


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--vocab", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    model = SequenceModel("aaren", d_model=32, n_layers=2, output_dim=args.vocab, vocab_size=args.vocab,
                          pooling="last", mixer_options={"num_heads": 4}, rngs=nnx.Rngs(args.seed))
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 30, args.steps), weight_decay=1e-2)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)

    def loss_fn(params, tokens, labels):
        logits = nnx.merge(graphdef, params, rest)(tokens)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

    @jax.jit
    def train_step(params, opt_state, tokens, labels):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tokens, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        params, opt_state, loss, acc = train_step(params, opt_state, *majority_batch(rng, args.batch, args.length, args.vocab))
        if step % 50 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {float(loss):.3f}  acc {float(acc):.2f}  ({time.perf_counter() - start:.1f}s)")
    test_tokens, test_labels = majority_batch(np.random.default_rng(args.seed + 1), 512, args.length, args.vocab)
    _, accuracy = jax.jit(loss_fn)(params, test_tokens, test_labels)
    print(f"held-out accuracy {float(accuracy):.3f} (chance {1 / args.vocab:.3f})")
    return float(accuracy)


if __name__ == "__main__":
    main()
