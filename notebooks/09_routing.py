# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Routing Transformer: content-based sparse attention
#
# **Paper.** "Efficient Content-Based Sparse Attention with Routing Transformers",
# Aurko Roy, Mohammad Saffar, Ashish Vaswani, David Grangier (TACL 2021).
#
# **Claim.** Local (sliding-window) attention is cheap but only sees nearby tokens.
# Routing attention clusters queries and keys with an online k-means and lets each
# query attend only within its cluster: with `k ≈ √L` clusters the cost falls from
# `O(L²)` to `O(L^1.5)`, while the attention stays content based. Mixing local heads
# with routing heads, the paper matches or beats full attention on language modelling
# (Wikitext-103 15.8 vs 18.3 perplexity, PG-19) and image generation at lower cost.
#
# **What this notebook tests, at toy size.** Content-based retrieval at `L = 1024`
# (task `fact_recall`): 8 "facts" — single tokens that each name a key and its value —
# are scattered among blanks, and the last 8 positions ask for every key once; the
# target is the value. One attention hop from the question to its fact answers it, so
# the task measures how far back a mixer can *find* content, and most facts lie far
# beyond any local window. (`mqar`, whose key and value are two tokens, needs a
# two-layer induction circuit: in a trial at L = 256, 400 steps, neither full attention
# (43%) nor routing (34%) got far, too slow for this CPU budget at L = 1024.) Three
# models of the same width, depth and heads, trained by the library's loop on the same
# batches:
#
# | model | mixer | what a query can see |
# |---|---|---|
# | local only | `routing` with every head local (`local_heads=num_heads`) | the last `window` tokens |
# | routing | `routing`, 2 local + 2 routing heads, `k = L / window` clusters, `admission="content"` | the window, plus the `window` keys of its k-means cluster closest to the centroid among earlier tokens |
# | full | `attention` without rotary embedding | every earlier token (`L × L` logits) |
#
# No model has positional information (the routing layer has none, and full attention
# runs with `rope=False`), so they differ only in who meets whom; local heads have their
# own key projection in every model. Local-only attention cannot reach most facts, so it
# should stay near chance on the far ones; routing should recover much of full
# attention's accuracy at a lower cost per step. The routing heads' k-means commitment
# loss is sown by the layer and added to the task loss by the loop (it appears as
# # `train/aux_loss`).

# %% [markdown]
# ## Result: 3 seeds at L = 256 (`benchmarks/routing_recall.py`)
#
# Run on 2026-12-07 on this project's 2-core CPU shared with other jobs (load average
# 11–24 during the runs), jax 0.10: `fact_recall` at L = 256, 8 facts, 16 keys, 8 values
# (chance 0.125); d_model 64, 2 layers, 4 heads, window 32; routing 2 local + 2 routing
# heads, k = 8 clusters, random unit centroids (no data initialization); batch 8,
# 400 steps, AdamW lr 3e-3 (warmup 100, cosine), weight decay 0.01; seeds 0, 1, 2 (one
# seed = initialization and data); test set 16 × 8 sequences. *Reachability*: share of
# test questions whose fact is among the admissible keys of a routing head (any head,
# layer 0 / layer 1 / any layer), under the rule the model was trained with.
#
# | model | test accuracy, mean ± std (3 seeds) | per seed | reachability L0 / L1 / any | wall s per run |
# |---|---|---|---|---|
# | local only | 0.185 ± 0.007 | 0.178, 0.191, 0.185 | — | 177, 161, 192 |
# | routing (`admission="content"`) | **0.349 ± 0.066** | 0.422, 0.330, 0.295 | 0.27 / 0.29 / **0.45 ± 0.07** | 464, 234, 249 |
# | routing (`admission="recency"`) | 0.312 ± 0.072 | 0.303, 0.388, 0.245 | 0.25 / 0.22 / 0.38 ± 0.06 | 200, 385, 147 |
# | full attention (no rope) | 0.981 ± 0.019 | 0.999, 0.962, 0.981 | — | 217, 131, 129 |
#
# Routing beats local-only by 0.16 (2.5 standard deviations of routing's seeds) and
# recovers about a quarter of full attention's gain over chance ((0.349 − 0.125) /
# (0.981 − 0.125) = 0.26). The content admission reaches more facts than the recency
# rule in the same layer (0.45 vs 0.38, and more in each layer) and scores a little
# higher (0.349 vs 0.312), a gap within one standard deviation of the seeds: most of
# the gain over the earlier layer comes from the local heads' own keys, the spherical
# k-means and the masked self, which both variants share. Wall times mix compilation and a machine load that varied
# between runs; they are not a cost comparison (at L = 256 routing's training step was
# *slower* than full attention's on this CPU: its top-k and gathers cost more than a
# 256 × 256 matrix). Reproduce: `python -m benchmarks.routing_recall`.
#
# ## Earlier result at L = 1024, before the routing layer was reworked
#
# One seed, run on 2026-12-01 with the *previous* routing layer (shared QK in every head,
# Euclidean k-means, admission of the most recent same-cluster keys, self allowed;
# local-only was a one-cluster routing model): local only 0.142, routing 0.232, full
# attention (with rotary embedding) 0.604 test accuracy; 541 / 579 / 1198 ms per training
# step. **The full-size re-run of this notebook with the present layer (L = 1024, 500
# steps, 3 seeds) is not done yet**: the code below is the present layer's, the figures in
# `figures/09_routing_*.png` are still the earlier run's.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

import seqmodels.layers as layers
from _common import RUNS, curve, pick, run, savefig
from seqmodels.train import Config, Experiment, load_state
from seqmodels.train.config import ModelConfig, OptimizerConfig, TaskConfig, TrainConfig

TASK = dict(seq_len=pick(1024, 64), num_facts=pick(8, 2), num_keys=pick(16, 4), num_values=pick(8, 4))
D_MODEL, N_LAYERS, HEADS, WINDOW = pick(64, 16), pick(2, 1), 4, pick(128, 8)
STEPS, BATCH = pick(500, 2), pick(8, 2)
# k·window = L, as in the paper's configurations (Wikitext-103 at 4096 tokens: 8 clusters
# of 512); fewer, larger clusters than k = √L = 32 also put a question and its fact in
# one cluster more often early in training (a short trial: 31% vs 23% test accuracy
# after 300 steps with window 64 and k = 4 vs 32)
CLUSTERS = TASK["seq_len"] // WINDOW
MODELS = {
    "local only": ("routing", {"num_heads": HEADS, "local_heads": HEADS, "window": WINDOW}),
    "routing": ("routing", {"num_heads": HEADS, "local_heads": HEADS // 2, "window": WINDOW,
                            "num_clusters": CLUSTERS, "admission": "content"}),
    "full": ("attention", {"num_heads": HEADS, "rope": False}),
}


def config(mixer, options):
    return Config(
        model=ModelConfig(mixer=mixer, d_model=D_MODEL, n_layers=N_LAYERS, mixer_options=options),
        task=TaskConfig(name="fact_recall", options=TASK),
        optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=pick(100, 1), weight_decay=0.01),
        train=TrainConfig(steps=STEPS, batch_size=BATCH, log_every=pick(25, 1), eval_every=0,
                          eval_batches=pick(16, 1), checkpoint_every=STEPS, plot=False))


def parameter_count(cfg):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(Experiment(cfg).init_state()["params"]))


def run_name(label):
    return "09_routing_" + label.replace(" ", "_")


configs = {label: config(mixer, options) for label, (mixer, options) in MODELS.items()}
routing_mixer = layers.build("routing", D_MODEL, rngs=nnx.Rngs(0), **MODELS["routing"][1])
print(f"routing heads use k = {routing_mixer.num_clusters} clusters at L = {TASK['seq_len']}")
for label, cfg in configs.items():
    print(f"{label:10s} {parameter_count(cfg):6d} parameters  {cfg.model.mixer} {cfg.model.mixer_options}")

# %% [markdown]
# ## Training
# Step time is the loop's own measure (`train/steps_per_second`, logged every
# `log_every` steps); its median over the run leaves out the first interval, which
# holds the compilation.

# %%
results = {}
for label, cfg in configs.items():
    r = run(cfg, run_name(label))
    _, rate = curve(run_name(label), "train/steps_per_second")
    r["ms_per_step"] = 1e3 / float(np.median(rate[1:] if len(rate) > 1 else rate))
    results[label] = r
    print(f"{label:10s} test accuracy {r['test/accuracy']:.3f} (chance {r['chance']:.3f})  "
          f"{r['ms_per_step']:.0f} ms/step  ({r['seconds']:.0f} s)")

steps, aux = curve(run_name("routing"), "train/aux_loss")
print(f"routing: train/aux_loss logged at {len(steps)} points, last {aux[-1]:.3g} (commitment loss, β = 1e-4)")
assert len(steps) > 0 and all(a > 0 for a in aux)

# %%
fig, (ax_curve, ax_bar) = plt.subplots(1, 2, figsize=(11, 3.8))
for label in configs:
    ax_curve.plot(*curve(run_name(label), "train/accuracy"), label=label)
ax_curve.axhline(results["full"]["chance"], color="gray", ls=":", label="chance")
ax_curve.set(xlabel="step", ylabel="train accuracy (questions)", title=f"fact recall, L = {TASK['seq_len']}")
ax_curve.legend()
labels = list(configs)
ax_bar.bar(labels, [results[label]["test/accuracy"] for label in labels], color=["C0", "C1", "C2"])
ax_bar.set(ylabel="test accuracy", ylim=(0, 1), title="held-out accuracy (bars), ms per step (labels)")
for i, label in enumerate(labels):
    ax_bar.text(i, results[label]["test/accuracy"] + 0.02, f"{results[label]['ms_per_step']:.0f} ms/step",
                ha="center")
fig.tight_layout()
savefig(fig, "09_routing_recall")

# %% [markdown]
# ## Accuracy against the distance to the fact
# The trained models (restored with `load_state`) on the test batches, each question
# scored by how far back its fact lies. Within the local window every model can reach
# the fact; beyond it, only attention that is content based can.

# %%
BINS = pick([0, 128, 256, 512, 1024], [0, 8, 64])
task = Experiment(configs["full"]).task
distance_accuracy = {}
for label, cfg in configs.items():
    exp = Experiment(cfg)
    _, state = load_state(cfg, RUNS / run_name(label))
    model = nnx.merge(exp.graphdef, state["params"], state["rest"])
    model.eval()                                                    # freezes the routing centroids too
    forward = jax.jit(lambda x: jnp.argmax(model(x), axis=-1))
    hits, distances = [], []
    for index in range(cfg.train.eval_batches):
        batch = exp.host_batch("test", index)
        predicted = np.asarray(forward(jnp.asarray(batch["inputs"])))
        rows, cols = np.nonzero(batch["weights"])
        asked = batch["inputs"][rows, cols] - 1                     # question token 1 + key
        fact_key = (batch["inputs"][rows] - 1 - TASK["num_keys"]) // TASK["num_values"]
        is_fact = batch["inputs"][rows] > TASK["num_keys"]
        fact_position = np.argmax(is_fact & (fact_key == asked[:, None]), axis=1)
        distances.append(cols - fact_position)
        hits.append(predicted[rows, cols] == batch["targets"][rows, cols])
    hits, distances = np.concatenate(hits), np.concatenate(distances)
    which = np.digitize(distances, BINS[1:-1])
    distance_accuracy[label] = [float(hits[which == b].mean()) if np.any(which == b) else np.nan
                                for b in range(len(BINS) - 1)]
    print(f"{label:10s} " + "  ".join(f"[{BINS[b]}, {BINS[b + 1]}): {a:.3f}"
                                      for b, a in enumerate(distance_accuracy[label])))

fig, ax = plt.subplots(figsize=(6, 3.5))
centres = np.arange(len(BINS) - 1)
for i, label in enumerate(configs):
    ax.bar(centres + (i - 1) * 0.27, distance_accuracy[label], 0.27, label=label)
ax.axhline(task.chance(), color="gray", ls=":", label="chance")
ax.set_xticks(centres, [f"{BINS[b]}–{BINS[b + 1]}" for b in range(len(BINS) - 1)])
ax.set(xlabel="distance from the question back to its fact", ylabel="test accuracy", ylim=(0, 1))
ax.legend(fontsize=8)
fig.tight_layout()
savefig(fig, "09_routing_distance")

# %%
table = "| model | parameters | test acc. | ms / train step | wall s |\n|---|---|---|---|---|\n"
for label, cfg in configs.items():
    r = results[label]
    table += (f"| {label} | {parameter_count(cfg)} | {r['test/accuracy']:.3f} | {r['ms_per_step']:.0f} | "
              f"{r['seconds']:.0f} |\n")
print(table)

# %% [markdown]
# ## What the numbers mean
#
# * Why routing still lags: a question finds its fact only if the k-means puts both in
#   one cluster *and* the fact is among the cluster's admitted keys. The content rule
#   admits, per cluster, the `window` earlier keys closest to the centroid instead of
#   the latest ones (reachability 0.45 against 0.38 for recency, at 400 steps); but more
#   than half of the questions still cannot reach their fact through any routing head,
#   and accuracy follows reachability. The centroids move by an EMA with decay 0.999
#   (~1,000 updates) and the projections co-adapt with them slowly: the paper trains for
#   many thousands of steps.
# * Differences from the official codes that remain (see the layer's docstring): no
#   learned memory key/values, no rotary embedding in the routing heads, evenly spaced
#   (not random) seeds for the optional data initialization, the EMA mean renormalized,
#   the causal default admission is the prefix rule (the paper's whole-sequence top-w is
#   `admission="paper"`, whose step then differs from its parallel form), the centroid
#   update runs in the training-mode forward pass rather than in a backward hook.
# * Not done: the full-size re-run (L = 1024, 3 seeds, accuracy against steps, cost at
#   L = 1024 and 4096 against full attention).
