"""Routing against local-only and full attention on ``fact_recall``, with reachability.

    python -m benchmarks.routing_recall                  # L = 256, 400 steps, seeds 0 1 2
    python -m benchmarks.routing_recall --steps 20 --seeds 0 --length 64   # a quick look

Trains each model with the library's loop (``train_and_evaluate``) on the same batches
(one seed per run: initialization and data), sequentially in this process, and reports
test accuracy mean ± std over seeds, wall time per run and the machine load. For the
routing models it also measures *reachability*: the share of test questions whose fact
is among the admissible keys of at least one routing head (per layer, and in any layer),
under the admission rule the model was trained with. Models (2 layers, 4 heads, no
positional encoding in any of them, so they differ only in who meets whom):

  local only        ``routing`` with 4 local heads (sliding window ``window``)
  routing           2 local + 2 routing heads, ``num_clusters = L / window``, ``admission="content"``
  routing recency   the same with ``admission="recency"`` (the last ``window`` keys of a cluster)
  full              ``attention`` without rotary embedding (every earlier token)

Writes ``benchmarks/results/routing_recall.json``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seqmodels.train import Config, Experiment, load_state, train_and_evaluate
from seqmodels.train.config import ModelConfig, OptimizerConfig, TaskConfig, TrainConfig

from ._common import save_json


def models(length: int, window: int, heads: int) -> dict[str, tuple[str, dict]]:
    routed = {"num_heads": heads, "local_heads": heads // 2, "window": window,
              "num_clusters": max(length // window, 1)}
    return {
        "local only": ("routing", {"num_heads": heads, "local_heads": heads, "window": window}),
        "routing": ("routing", dict(routed, admission="content")),
        "routing recency": ("routing", dict(routed, admission="recency")),
        "full": ("attention", {"num_heads": heads, "rope": False}),
    }


def config(args, mixer: str, options: dict, seed: int) -> Config:
    task = {"seq_len": args.length, "num_facts": 8, "num_keys": 16, "num_values": 8}
    return Config(
        model=ModelConfig(mixer=mixer, d_model=args.d_model, n_layers=2, mixer_options=options),
        task=TaskConfig(name="fact_recall", options=task),
        optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=min(100, args.steps // 4), weight_decay=0.01),
        train=TrainConfig(steps=args.steps, batch_size=8, log_every=max(args.steps // 4, 1), eval_every=0,
                          eval_batches=args.eval_batches, checkpoint_every=args.steps, plot=False, seed=seed))


def reachability(cfg: Config, workdir: str) -> list[float]:
    """Per layer, then any layer: share of test questions whose fact a routing head admits."""
    exp = Experiment(cfg)
    _, state = load_state(cfg, workdir)
    model = nnx.merge(exp.graphdef, state["params"], state["rest"])
    model.eval()
    facts_start = 1 + cfg.task.options["num_keys"]

    @jax.jit
    def admitted_facts(inputs, fact_positions):
        h = model._embed(inputs, jnp.float32)
        per_layer = []
        for block in model.blocks:
            positions = block.mixer.admitted_keys(block.mixer_norm(h))                  # (B, L, H_r, w)
            hit = jnp.any(positions == fact_positions[:, :, None, None], axis=-1)         # (B, L, H_r)
            per_layer.append(jnp.any(hit, axis=-1))
            h = block(h)
        return jnp.stack(per_layer)                                                     # (layers, B, L)

    hits = []
    for index in range(cfg.train.eval_batches):
        batch = exp.host_batch("test", index)
        inputs = batch["inputs"]
        rows, cols = np.nonzero(batch["weights"])
        asked = inputs[rows, cols] - 1
        fact_key = (inputs[rows] - facts_start) // cfg.task.options["num_values"]
        fact_pos = np.argmax((inputs[rows] >= facts_start) & (fact_key == asked[:, None]), axis=1)
        fact_positions = np.full(inputs.shape, -2)
        fact_positions[rows, cols] = fact_pos
        reached = np.asarray(admitted_facts(jnp.asarray(inputs), jnp.asarray(fact_positions)))
        hits.append(reached[:, rows, cols])
    hits = np.concatenate(hits, axis=1)
    return [float(layer.mean()) for layer in hits] + [float(hits.any(axis=0).mean())]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-batches", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", default=None, help="model names to run")
    args = parser.parse_args(argv)
    record = {"args": vars(args), "runs": []}
    chosen = models(args.length, args.window, 4)
    names = args.only or list(chosen)
    with tempfile.TemporaryDirectory() as root:
        for name in names:
            mixer, options = chosen[name]
            for seed in args.seeds:
                cfg = config(args, mixer, options, seed)
                workdir = os.path.join(root, f"{name.replace(' ', '_')}_{seed}")
                start = time.perf_counter()
                result = train_and_evaluate(cfg, workdir)
                run = {"model": name, "seed": seed, "accuracy": float(result["test/accuracy"]),
                       "chance": float(result["chance"]), "seconds": time.perf_counter() - start,
                       "load": os.getloadavg()[0]}
                if mixer == "routing" and options["local_heads"] < options["num_heads"]:
                    run["reachability"] = reachability(cfg, workdir)
                record["runs"].append(run)
                print(run, flush=True)
    print(table(record["runs"], names))
    save_json("routing_recall", record)
    return record


def mean_std(values) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def table(runs: list[dict], names: list[str]) -> str:
    lines = ["| model | test accuracy (mean ± std) | reachability, any layer | s / run | seeds |",
             "|---|---|---|---|---|"]
    for name in names:
        mine = [r for r in runs if r["model"] == name]
        reach = [r["reachability"][-1] for r in mine if "reachability" in r]
        lines.append(f"| {name} | {mean_std([r['accuracy'] for r in mine])} | "
                     f"{mean_std(reach) if reach else '—'} | {statistics.mean(r['seconds'] for r in mine):.0f} | "
                     f"{len(mine)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
