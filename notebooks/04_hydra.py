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
# # Hydra: a bidirectional SSM as a quasiseparable matrix mixer
#
# **Paper.** "Hydra: Bidirectional State Space Models Through Generalized Matrix Mixers",
# Sukjun Hwang, Aakash Lahoti, Tri Dao, Albert Gu (2024).
#
# **Claim.** Many sequence mixers are matrix mixers `y = M x`. Hydra's `M` is
# *quasiseparable*: its strictly lower and strictly upper triangles are two semiseparable
# (Mamba-2 SSD) matrices — a forward and a backward scan, each shifted one step — and
# its diagonal is free and data dependent. The paper reports that this principled
# bidirectional extension beats both a causal SSM and the heuristic ways of making an
# SSM bidirectional (adding, multiplying or concatenating a forward and a backward
# SSM), and that Hydra beats BERT on GLUE and ViT on ImageNet at equal size.
#
# **What this notebook tests, at toy size.** Bidirectional associative recall
# (`bidirectional_recall`): a block of key→value pairs sits at a random offset and
# every key is queried once, *before or after* the block. A query before its pair can
# only be answered by a model that sees the future, so the task separates
# bidirectional from causal mixing; answering both kinds needs content-based
# retrieval through the scans' state, which is where the way the two directions are
# combined matters. Three models of equal width, depth and (nearly) equal parameter
# count, trained by the library's loop on the same batches:
#
# | model | mixer | matrix |
# |---|---|---|
# | Hydra | `hydra` | quasiseparable: shifted forward + shifted backward SSD + free diagonal `D + x W_D` |
# | Add | `hydra`, `combine="add"` | the paper's "Add" heuristic: `SS(x) + flip(SS(flip x)) + D x`, no shift, static `D` |
# | causal | `hydra_causal`, twice the state | Hydra's lower triangle + free diagonal only (a Mamba-2-style causal SSD block) |
#
# The causal baseline is the forward half of Hydra itself (rather than S4D or S5), so
# that the comparison changes one thing, the backward half; it gets `d_state` 2N so
# that its parameter count and its state per position equal Hydra's (two scans of N).

# %% [markdown]
# ## Result
#
# **The 3-seed full run is pending.** The code now trains every model with seeds 0, 1, 2
# (`run_seeds`) and reports mean ± std, the per-seed values and error bars; to keep the
# 9 runs near 30 minutes on an idle 2-core machine, training is **1,000 steps** instead of
# the 1,200 of the run below (estimated from that run's 740 s of CPU for three runs:
# ≈ 31 CPU-minutes for nine; not measured). It has been smoke-tested (one seed, tiny
# sizes) but not yet run at full size: the machine was too loaded (load average 12–16)
# to finish it before this edit. Until it is, the table and verdict below are the
# **single-seed run at 1,200 steps** and cannot tell a tie from noise.
#
# Single-seed run of 2026-12-01, on this project's 2-core CPU shared with other jobs at the time
# (load average 13–15 throughout), jax 0.10.2. Sizes: d_model 64, 2 layers (mixer +
# MLP blocks), expand 2, headdim 16 (8 heads), d_state 16 (causal: 32), d_conv 7;
# task `bidirectional_recall` with L = 64, 4 pairs, vocabulary 16 (7 keys, chance
# 1/7 = 0.143); batch 32, 1200 steps, AdamW lr 3e-3 (warmup 100, cosine), seed 0;
# test sets of 16 × 32 sequences. Wall time of the whole notebook: 72 min under that
# load (740 s of CPU time: 452 s user + 287 s system). After a cosmetic edit (legend,
# the "steps to 90%" column) the notebook was executed again at full size, reusing the
# three finished runs: same numbers; the "wall s" printed by such a rerun is the
# evaluation only, the one below is the training run's.
#
# | model | parameters | test acc. | queries before their pair | queries after | steps to 90% train acc. | wall s |
# |---|---|---|---|---|---|---|
# | Hydra (quasiseparable) | 133,696 | 0.999 | 0.999 | 0.998 | 650 | 1247 |
# | Add (no shift, static D) | 131,648 | 1.000 | 1.000 | 1.000 | 350 | 1648 |
# | causal (forward half, 2N) | 132,672 | 0.536 | 0.166 | 0.893 | not reached | 1375 |
#
# ![](figures/04_hydra_recall.png)
#
# **Partly reproduced.** Hydra clearly beats the causal SSM of equal size: 0.999 vs
# 0.166 (chance 0.143) on queries that come before their pair, which a causal model
# cannot answer. It does **not** beat the "Add" heuristic here: both solve the task
# (≈ 100% on either side) and Add learned faster (90% training accuracy at step 350
# against 650 for Hydra). One seed, one toy task.

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np

from _common import SEEDS, SMOKE, curve, pick, pm, run_seeds, savefig, seed_curves
from seqmodels.train import Config, Experiment
from seqmodels.train.config import ModelConfig, OptimizerConfig, TaskConfig, TrainConfig

TASK = dict(seq_len=pick(64, 24), num_pairs=pick(4, 2), vocab_size=pick(16, 8))
D_MODEL, N_LAYERS = pick(64, 16), pick(2, 1)
D_STATE, HEADDIM = pick(16, 4), pick(16, 8)
STEPS, BATCH = pick(1000, 2), pick(32, 4)
COMMON = {"d_state": D_STATE, "headdim": HEADDIM, "expand": 2, "d_conv": pick(7, 3)}
MODELS = {
    "Hydra": ("hydra", COMMON),
    "Add": ("hydra", dict(COMMON, combine="add")),
    "causal": ("hydra_causal", dict(COMMON, d_state=2 * D_STATE)),
}


def config(mixer, options):
    return Config(
        model=ModelConfig(mixer=mixer, d_model=D_MODEL, n_layers=N_LAYERS, mixer_options=options),
        task=TaskConfig(name="bidirectional_recall", options=TASK),
        optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=pick(100, 1), weight_decay=0.01),
        train=TrainConfig(steps=STEPS, batch_size=BATCH, log_every=pick(50, 1), eval_every=0,
                          eval_batches=pick(16, 1), checkpoint_every=STEPS, plot=False))


def parameter_count(cfg):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(Experiment(cfg).init_state()["params"]))


configs = {label: config(mixer, options) for label, (mixer, options) in MODELS.items()}
for label, cfg in configs.items():
    print(f"{label:7s} {cfg.model.mixer:13s} {parameter_count(cfg):7d} parameters  options {cfg.model.mixer_options}")

# %% [markdown]
# ## The task
# One test sequence: blanks (0), the key→value block, and the queries (keys again)
# on both sides; the targets are the values bound to the queried keys.

# %%
task = Experiment(configs["Hydra"]).task
example = task.batch("test", 0, 1, seed=0)
print("inputs ", example["inputs"][0])
print("targets", np.where(example["weights"][0] > 0, example["targets"][0], 0))
print("chance accuracy", round(task.chance(), 4))

# %% [markdown]
# ## Training
# Each model with seeds 0, 1, 2 (`train.seed`: initialization and data order; a given
# seed gives all three models the same batches), the library's loop (`run_seeds`).
# Evaluation reports accuracy on all queries and, separately, on the queries before
# (`test_before`) and after (`test_after`) the block.

# %%
SPLITS = ("test", "test_before", "test_after")


def run_name(label):
    return f"04_hydra_{label.lower()}"


results = {label: run_seeds(cfg, run_name(label)) for label, cfg in configs.items()}
for label, summary in results.items():
    print(f"{label:7s} " + "  ".join(f"{split} {pm(summary, f'{split}/accuracy')}" for split in SPLITS))

# %%
fig, (ax_curve, ax_bar) = plt.subplots(1, 2, figsize=(11, 3.8))
for label in configs:
    steps, acc = seed_curves(run_name(label), "train/accuracy")
    mean, std = acc.mean(0), acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
    line, = ax_curve.plot(steps, mean, label=label)
    ax_curve.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
ax_curve.axhline(task.chance(), color="gray", ls=":", label="chance")
ax_curve.set(xlabel="step", ylabel="train accuracy (queries)", title=f"training: mean ± std, {len(SEEDS)} seed(s)")
ax_curve.legend()
width = 0.25
for i, label in enumerate(configs):
    x = np.arange(3) + (i - 1) * width
    ax_bar.bar(x, [results[label]["mean"][f"{split}/accuracy"] for split in SPLITS], width, label=label,
               yerr=[results[label]["std"][f"{split}/accuracy"] for split in SPLITS], capsize=3)
    for j, split in enumerate(SPLITS):
        runs = results[label]["runs"]
        ax_bar.scatter([x[j]] * len(runs), [r[f"{split}/accuracy"] for r in runs], s=8, color="k", zorder=3)
ax_bar.axhline(task.chance(), color="gray", ls=":")
ax_bar.set_xticks(range(3), ["all queries", "query before its pair", "query after its pair"])
ax_bar.set(ylabel="test accuracy", ylim=(0, 1.15), title="held-out accuracy (bars: mean ± std, dots: seeds)")
ax_bar.legend(loc="upper center", ncol=3)
fig.tight_layout()
savefig(fig, "04_hydra_recall")

# %% [markdown]
# How fast each model learns: per seed, the first logged step at which the training
# accuracy (mean over the last `log_every` steps) reaches 90% ("—": not reached).

# %%
def steps_to(label, seed, level=0.9):
    steps, acc = curve(f"{run_name(label)}/seed_{seed}", "train/accuracy")
    return next((s for s, a in zip(steps, acc) if a >= level), None)


table = ("| model | parameters | test acc. | before | after | per seed (all / before / after) "
         "| steps to 90% train acc., per seed | s per seed |\n|---|---|---|---|---|---|---|---|\n")
for label, cfg in configs.items():
    summary = results[label]
    per_seed = "; ".join(" / ".join(f"{r[f'{split}/accuracy']:.3f}" for split in SPLITS) for r in summary["runs"])
    reached = ", ".join(str(steps_to(label, seed) or "—") for seed in summary["seeds"])
    seconds = ", ".join(f"{r['seconds']:.0f}" for r in summary["runs"])
    means = " | ".join(pm(summary, f"{split}/accuracy") for split in SPLITS)
    table += f"| {label} | {parameter_count(cfg)} | {means} | {per_seed} | {reached} | {seconds} |\n"
print(table)

# %% [markdown]
# ## What the numbers mean
#
# * **Bidirectionality.** The causal model answers most queries *after* their pair
#   (0.89) but stays at chance on queries *before* it: those need the
#   future. Hydra's backward scan supplies it (0.999 on both sides). This part of the
#   claim — a bidirectional SSM beats a causal one of the same size and state — is
#   reproduced plainly, and it holds for Add too.
# * **Quasiseparable vs Add.** The paper's stronger claim is that Hydra's combination
#   (shifted scans, free diagonal) beats heuristic combinations. On this task it did
#   not: Add reached the same final accuracy sooner. A plausible reason (a hypothesis,
#   not tested here): with the shift, the off-diagonal entries of row `i` read the
#   projections `C_{i-1}` / `C_{i+1}` of the *neighbours*, so a query token's own
#   content reaches the scans only through the ±3 convolution, while Add reads
#   `C_i` directly. Hydra's curve sits at ≈ 43% for ~150 steps before it takes off.
#   The authors say the shift improved Hydra's results empirically (goombalab/hydra
#   issue #2; their experiments are masked-language modelling and image
#   classification); recall at the query position does not reward it.
# * **Differences from the paper.** 2-layer, 130K-parameter models on a synthetic
#   recall task, against 112M-parameter BERT-style models pretrained on C4 and
#   evaluated on GLUE (and ImageNet for the ViT variant). The paper's "Add" sums two
#   separate SSM layers; ours shares the in-projection and conv of `x`, `z` with the
#   backward scan, exactly as Hydra does, so Hydra and Add differ only in the shift and
#   the diagonal (`fc_D`: 2,048 parameters). The causal baseline is Hydra's own forward
#   half with twice the state, rather than Mamba-2 (Mamba-2 has no shift and a static
#   `D`). One seed; the ordering of Hydra and Add could change with other seeds,
#   sizes or learning rates, which this run did not explore.
