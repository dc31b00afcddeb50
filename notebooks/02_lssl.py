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
# # LSSL: dense HiPPO state matrices, fixed or learned, as recurrence and convolution
#
# **Paper.** "Combining Recurrent, Convolutional, and Continuous-time Models with Linear
# State-Space Layers" (Gu, Johnson, Goel, Saab, Dao, Rudra, Ré, NeurIPS 2021).
#
# **Claim.** A Linear State-Space Layer — `x' = Ax + Bu`, `y = Cx + Du`, discretized with
# the bilinear transform at a step `Δ` per channel — is a recurrence and a convolution
# at once, and with `A` set to a HiPPO matrix (the "memory" operators LegS, LegT, LagT,
# FouT of "HiPPO", Gu et al. 2020) it models long-range dependencies. Already
# *LSSL-fixed* (HiPPO `A` and the `Δ`s frozen, only `C`, `D` and the rest learned) is
# strong; learning `A` and `Δ` helps further (§4–5).
#
# **What this notebook tests, at toy size.** The copy-memory task of notebook 01 (8
# symbols, a delay of 200 blanks, recall after a cue; each answer is the input
# `delay + 8` steps earlier), with one LSSL block (width 16, state size 32, one output
# channel per input channel, `Δ` log-uniform in [1e-3, 1e-1]) for each of the four HiPPO
# measures, once with `A, B, Δ` trainable (LSSL) and once frozen (LSSL-fixed), with the
# same recipe and number of steps, each with 3 seeds. Then, on the trained layers (seed 0), the convolution (Krylov
# kernel + FFT), the dense recurrence (`seqmodels.scans.matrix_scan`) and `step` are
# compared. The library's LSSL has no random-`A` option, so the random baseline is the
# S4D random-init run of notebook 01 on the same task (a diagonal layer of twice the
# width, see the result there).
#
# ## Result
#
# **Full run of all 24 seed runs, figures regenerated from it.** On the trained layers
# (seed 0) scan and `step` match the convolution to ≤ 8.6e-6 relative, and the model
# run token by token scores as in parallel.
# The notebook trains every variant with seeds 0, 1, 2 (`run_seeds`) and prints mean ±
# std and the per-seed accuracies, with bands and error bars in the figure. To fit the
# 24 runs in about 30 minutes of an idle 2-core machine the task is **halved to a delay
# of 200** (length 216, answers 208 steps after their input, as in notebook 01); the
# model (width 16, state 32) and the budget (batch 32, 600 steps) are those of the
# single-seed run below. Started 2026-12-08 00:43 on this project's 2-core CPU, shared
# with other jobs (load average 16 falling to 6 over the run; this job, at `nice 10`,
# got 13–46 % of one core): whole notebook 59 min 2 s of wall time, 1,715 s user + 10 s
# system CPU (≈ 29 CPU-minutes, ≈ 72 CPU-s per run; the unloaded wall time was not
# measured). Finished runs are reused when the notebook is
# run again. Measured (jax 0.10.2, test accuracy over 8 × 32 sequences):
#
# | measure | variant | test accuracy, mean ± std | per seed (0, 1, 2) |
# |---|---|---|---|
# | LegS | LSSL (`A, B, Δ` trained) | 0.448 ± 0.021 | 0.436, 0.472, 0.438 |
# | LegS | LSSL-fixed | 0.303 ± 0.008 | 0.312, 0.298, 0.299 |
# | LegT | LSSL (`A, B, Δ` trained) | 0.650 ± 0.064 | 0.637, 0.719, 0.593 |
# | LegT | LSSL-fixed | 0.287 ± 0.054 | 0.258, 0.253, 0.349 |
# | LagT | LSSL (`A, B, Δ` trained) | 0.322 ± 0.014 | 0.317, 0.338, 0.312 |
# | LagT | LSSL-fixed | 0.311 ± 0.023 | 0.325, 0.322, 0.285 |
# | FouT | LSSL (`A, B, Δ` trained) | **0.813 ± 0.086** | 0.852, 0.873, 0.715 |
# | FouT | LSSL-fixed | 0.589 ± 0.067 | 0.581, 0.660, 0.526 |
#
# Chance is 0.125; notebook 01's random-`Λ` S4D (width 32, state 64, 800 steps) gets
# 0.329 ± 0.004 on this same delay-200 task.
#
# **Partly reproduced (3 seeds).** Learning the HiPPO `A` (and `B`, `Δ`) helps, beyond
# the seed spread, for LegT (0.650 ± 0.064 vs 0.287 ± 0.054 fixed), LegS (0.448 ± 0.021
# vs 0.303 ± 0.008) and FouT (0.813 ± 0.086 vs 0.589 ± 0.067), not for LagT (0.322 vs
# 0.311). At this shorter delay **LSSL-fixed with FouT is strong** (0.589 ± 0.067, every
# seed far above the random diagonal SSM's 0.329 ± 0.004) — new against the delay-400
# single seed (0.323) — while fixed LegS, LegT and LagT stay at random-SSM level
# (0.29–0.31). No LSSL variant solves the copy in 600 steps. What was tried: four measures,
# trained and fixed, at delays 400 (one seed) and 200 (three seeds). Likely reason, as
# below: with `A, B, Δ` frozen each channel's kernel is a combination of 32 fixed basis
# functions at its fixed `Δ`, too few to place a bump sharp enough to separate 8
# neighbouring positions at lag 208; the paper's fixed-`A` results come from deep, wide
# stacks trained for many epochs.
#
# ![](figures/02_lssl_training.png)
# ![](figures/02_lssl_kernels.png)
#
# Single-seed run of 2026-12-01 (delay 400) on the 2-core
# CPU of this project's machine, **shared with other jobs at the time** (load average
# ≈ 13–17; this job got 35 % of the CPU): jax 0.10.2.
# Sizes: one block (pre-norm, MLP ratio 2), width 16, state size 32, one output channel
# per input channel, bilinear discretization; copy memory with 8 symbols and a delay of
# 400 (length 416, answers 408 steps after their input), batch 32, 600 steps per run,
# eight runs. Wall time of the whole notebook **36 min 27 s** (755 s user + 11 s system
# CPU time; the unloaded time was not measured).
#
# | measure | LSSL (`A, B, Δ` trained): test accuracy | LSSL-fixed: test accuracy |
# |---|---|---|
# | LegS | 0.258 | 0.241 |
# | LegT | **0.609** | 0.263 |
# | LagT | 0.319 | 0.301 |
# | FouT | **0.707** | 0.323 |
#
# Chance is 0.125; the random-init S4D layer of notebook 01 (width 32, 1,500 steps) got
# 0.323 on the same task. Seconds per run (loaded): 167–371. On every trained layer the
# dense recurrence (`mode="scan"`) and `step` match the Krylov convolution to ≤ 1.2e-5
# relative, and the model run token by token scores exactly as in parallel.
#
# Single-seed verdict: **partly reproduced.** The convolution and recurrent views of the trained layers agree,
# and LSSL with a learned HiPPO `A` goes well past chance on the 408-step copy with the
# translated measures (FouT 0.71, LegT 0.61, still rising at the end); but LSSL-fixed
# stays at 0.24–0.32 for every measure, no better than a random diagonal SSM in
# notebook 01, so the paper's "LSSL-fixed is already strong" is not seen at this size
# and budget, LegS (the default) is the weakest measure here, and no LSSL run solved
# the task. A random-`A` LSSL could not be run (no such option; see below).

# %%
import dataclasses

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from _common import RUNS, SEEDS, SMOKE, pick, pm, relative, run_seeds, savefig, seed_curves, step_outputs
from seqmodels.train import (Config, Experiment, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig,
                             load_state)

NUM_TOKENS = pick(8, 4)
DELAY = pick(200, 12)
LAG = DELAY + NUM_TOKENS
SEQ_LEN = 2 * NUM_TOKENS + DELAY
STEPS = pick(600, 2)
WIDTH, STATE = pick(16, 8), pick(32, 8)
MEASURES = ("legs", "legt", "lagt", "fout")


def make_config(measure: str, trainable: bool) -> Config:
    options = {"state_size": STATE, "measure": measure, "trainable_A": trainable, "trainable_dt": trainable}
    return Config(
        model=ModelConfig(mixer="lssl", d_model=WIDTH, n_layers=1, mlp_ratio=2, mixer_options=options),
        task=TaskConfig(name="copy_memory",
                        options={"num_tokens": NUM_TOKENS, "num_symbols": 8, "delay": DELAY}),
        optimizer=OptimizerConfig(learning_rate=3e-3, ssm_learning_rate=1e-3, warmup_steps=pick(50, 1)),
        train=TrainConfig(steps=STEPS, batch_size=pick(32, 4), log_every=pick(25, 1), eval_batches=pick(8, 1),
                          checkpoint_every=STEPS, plot=False),
    )


def run_name(measure: str, trainable: bool) -> str:
    return f"02_lssl_{measure}_{'trainable' if trainable else 'fixed'}"


# smoke mode (CI) runs two of the eight: both kinds of variables, every code path
VARIANTS = [(m, t) for m in MEASURES for t in (True, False)
            if not SMOKE or (m, t) in (("legs", True), ("fout", False))]
CONFIGS = {(m, t): make_config(m, t) for m, t in VARIANTS}
print(f"copy_memory: {NUM_TOKENS} symbols, delay {DELAY}, length {SEQ_LEN}; {STEPS} steps per run, "
      f"seeds {SEEDS}")

# %% [markdown]
# ## Training: four HiPPO measures, trainable or fixed
# AdamW, learning rate 3e-3 (1e-3 and no weight decay for `A`, `B`, `Δ` when they are
# trained), batch 32, warmup then cosine decay. Chance is 1/8. Each variant is trained with
# seeds 0, 1, 2 (the seed sets the draw of the `Δ`s, `C`, the MLP and embeddings, and the
# data order; the HiPPO `A` and `B` are the same for every seed).

# %%
results = {key: run_seeds(config, run_name(*key)) for key, config in CONFIGS.items()}


def cell(summary):
    per_seed = ", ".join(f"{r['test/accuracy']:.3f}" for r in summary["runs"])
    seconds = "/".join(f"{r['seconds']:.0f}" for r in summary["runs"])
    return f"{pm(summary, 'test/accuracy')} | {per_seed} | {seconds}"


# (a reused run's seconds are only the time to load it)
print("| measure | variant | test accuracy, mean ± std | per seed | seconds per seed |")
print("|---|---|---|---|---|")
for (measure, trainable), summary in results.items():
    print(f"| {measure} | {'LSSL (A, B, Δ trained)' if trainable else 'LSSL-fixed'} | {cell(summary)} |")

# %%
fig, (ax_bars, *axes) = plt.subplots(1, 3, figsize=(14, 3.8), gridspec_kw={"width_ratios": [2, 3, 3]},
                                     constrained_layout=True)
for ax, trainable in zip(axes, (True, False)):
    for measure in MEASURES:
        if (measure, trainable) in CONFIGS:
            steps, acc = seed_curves(run_name(measure, trainable), "train/accuracy")
            mean, std = acc.mean(0), acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
            line, = ax.plot(steps, mean, label=measure)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.axhline(1 / 8, color="gray", ls=":", label="chance")
    ax.set(xlabel="training step", title=("LSSL (A, B, Δ trained)" if trainable else "LSSL-fixed")
           + f": mean ± std, {len(SEEDS)} seed(s)", ylim=(0, 1.02))
    ax.legend(fontsize=8)
axes[0].set_ylabel("train accuracy (recall positions)")
x = np.arange(len(MEASURES))
for offset, trainable in ((-0.2, True), (0.2, False)):
    keys = [(m, trainable) for m in MEASURES]
    present = [i for i, key in enumerate(keys) if key in results]
    ax_bars.bar(x[present] + offset, [results[keys[i]]["mean"]["test/accuracy"] for i in present], width=0.4,
                yerr=[results[keys[i]]["std"]["test/accuracy"] for i in present], capsize=3,
                label="trained" if trainable else "fixed")
    for i in present:
        runs = results[keys[i]]["runs"]
        ax_bars.scatter([x[i] + offset] * len(runs), [r["test/accuracy"] for r in runs], s=10, color="k", zorder=3)
ax_bars.axhline(1 / 8, color="gray", ls=":")
ax_bars.set(xticks=x, xticklabels=MEASURES, ylim=(0, 1.02), ylabel="test accuracy",
            title="bars: mean ± std, dots: seeds")
ax_bars.legend(fontsize=8)
savefig(fig, "02_lssl_training")

# %% [markdown]
# ## The trained kernels and timescales
# Seed 0. Left: RMS over channels of the trained kernel `K_l = C Ā^l B̄` (dashed: the copy lag).
# Right: the channels' steps `Δ_h` before and after training (trainable runs), the
# paper's "multiple timescales".


# %%
def trained_model(config: Config, name: str, seed: int = SEEDS[0]):
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    restored = load_state(config, RUNS / name / f"seed_{seed}")
    assert restored is not None, f"no checkpoint for {name}, seed {seed}"
    _, state = restored
    return nnx.merge(Experiment(config).graphdef, state["params"], state["rest"]), state


trained = {key: trained_model(config, run_name(*key)) for key, config in CONFIGS.items()}

fig, (ax, ax_dt) = plt.subplots(1, 2, figsize=(10, 3.5))
for (measure, trainable), (model, _) in trained.items():
    mixer = model.blocks[0].mixer
    K = np.asarray(mixer.kernel(SEQ_LEN)[:, 0])                              # (channels, L)
    ax.semilogy(np.maximum(np.sqrt(np.mean(K ** 2, axis=0)), 1e-7), ls="-" if trainable else ":",
                label=f"{measure}, {'trained' if trainable else 'fixed'}")
    if trainable:
        config = CONFIGS[measure, trainable]
        exp = Experiment(dataclasses.replace(config, train=dataclasses.replace(config.train, seed=SEEDS[0])))
        start = exp.init_state()
        initial = nnx.merge(exp.graphdef, start["params"], start["rest"]).blocks[0].mixer
        ax_dt.plot(np.sort(np.asarray(initial.dt)), color="gray", lw=0.8)
        ax_dt.plot(np.sort(np.asarray(mixer.dt)), label=measure)
ax.axvline(LAG, color="k", ls="--", lw=0.8)
ax.set(xlabel="lag l", ylabel="RMS over channels of K_l")
ax.legend(fontsize=7, ncol=2)
ax_dt.set(yscale="log", xlabel="channel (sorted)", ylabel="Δ_h", title="Δ: initial (gray) and trained")
ax_dt.legend(fontsize=7)
savefig(fig, "02_lssl_kernels")

# %% [markdown]
# ## Convolution view == recurrent view, on the trained layers
# As in notebook 01 (seed 0): the trained mixer's own inputs through `mode="conv"`, `mode="scan"`
# and `step` (largest differences relative to `max|y|`), and the whole trained model run
# token by token.


# %%
def accuracy(logits, batch):
    w = batch["weights"]
    return float(np.sum((np.argmax(logits, -1) == batch["targets"]) * w) / np.sum(w))


rows = []
for key, config in CONFIGS.items():
    model, state = trained[key]
    batch = Experiment(config).host_batch("test", 0)
    inputs = jnp.asarray(batch["inputs"])
    block = model.blocks[0]
    u = block.mixer_norm(model.embed(inputs))
    y_conv = block.mixer(u)
    options = dict(config.model.mixer_options, mode="scan")
    scan_config = dataclasses.replace(config, model=dataclasses.replace(config.model, mixer_options=options))
    scan_model = nnx.merge(Experiment(scan_config).graphdef, state["params"], state["rest"])
    rows.append((key, relative(scan_model.blocks[0].mixer(u), y_conv), relative(step_outputs(block.mixer, u), y_conv),
                 accuracy(model(inputs), batch), accuracy(step_outputs(model, inputs), batch)))

print("| model | scan vs conv | step vs conv | accuracy, parallel | accuracy, step by step |")
print("|---|---|---|---|---|")
for (measure, trainable), scan_gap, step_gap, acc_parallel, acc_step in rows:
    print(f"| {measure}, {'trained' if trainable else 'fixed'} | {scan_gap:.1e} | {step_gap:.1e} | "
          f"{acc_parallel:.3f} | {acc_step:.3f} |")

# %%
assert all(scan_gap < 1e-3 and step_gap < 1e-3 for _, scan_gap, step_gap, _, _ in rows)

# %% [markdown]
# ## What the numbers mean, and how this differs from the paper
#
# (Written for the single-seed delay-400 run; to be revisited with the 3-seed numbers.)
#
# * **What learning `A` buys.** With `A, B, Δ` frozen only `C` (and `D`, the MLP, the
#   embeddings) adapt, so each channel's kernel is a combination of 32 fixed HiPPO basis
#   functions at its fixed `Δ`. The copy needs, at lag 408, a kernel sharp enough to
#   tell 8 adjacent input positions apart; our reading is that the fixed 32-function
#   bases cannot form such a kernel at that lag, so all four measures stall near 0.3.
#   Training `A` and `B` (the steps `Δ` barely moved from their log-uniform start, right
#   panel) changes the basis itself: the translated measures LegT and FouT, whose
#   memories are sliding windows, reach 0.6–0.7; LegS and LagT, whose memories fade
#   with elapsed time, stay near 0.3 (LagT's trained kernel does carry mass near the
#   lag, but not enough to separate the neighbours).
# * **Differences from the paper.** The paper's results (sequential and permuted
#   MNIST, CIFAR, speech, vital signs) come from deep stacks of wide layers trained for
#   many epochs, and its learned `A` is structured (`diag(p)(T⁻¹ + diag(c))diag(p)`,
#   with a small learning rate for `A`, `B`); here it is one layer of width 16 with a
#   *dense* trainable `A` (the official code's `learn=3` variant) and 600 steps, on a
#   synthetic delay task. Width 16 and state size 32 were chosen for time: the layer
#   recomputes the bilinear discretization of its `(H, N, N)` dense matrices (a batched
#   `jnp.linalg.solve`) on every step, and on this (loaded) CPU a forward and backward
#   pass of the width-32, state-64 layer took tens of times longer than S4D's.
# * **No random baseline here.** `seqmodels.layers.lssl` offers the four HiPPO measures
#   but no random `A`; the closest comparison is notebook 01's random S4D (0.323).
