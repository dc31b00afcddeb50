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
# # S4 and S4D: HiPPO initialization gives long memory; one layer, two views
#
# **Papers.** "Efficiently Modeling Long Sequences with Structured State Spaces" (Gu, Goel,
# Ré, ICLR 2022) and "On the Parameterization and Initialization of Diagonal State Space
# Models" (Gu, Gupta, Goel, Ré, NeurIPS 2022).
#
# **Claim.** A linear state-space layer `x' = Ax + Bu, y = Cx + Du` captures long-range
# dependencies when its state matrix starts from HiPPO (S4: the LegS matrix in
# diagonal-plus-low-rank form; S4D: diagonal approximations of it, S4D-LegS / S4D-Lin);
# the same model with a random state matrix does much worse (S4 §4.4, S4D §5 ablations).
# The layer is at once a recurrence (`x_k = Ā x_{k-1} + B̄ u_k`, for generation) and a long
# convolution (`y = K̄ * u`, `K̄_l = C Ā^l B̄`, for parallel training), and the two give the
# same outputs.
#
# **What this notebook tests, at toy size.** The copy-memory task (Arjovsky et al. 2016):
# 8 random symbols, then `delay` blanks, then a cue; after the cue the model must output
# the 8 symbols in order. Each answer is the input exactly `delay + 8` steps earlier, so a
# single linear layer solves it if its convolution kernel can hold a sharp bump at that
# lag — precisely the long-memory property the HiPPO initialization is meant to give.
# One S4/S4D block (width 32, state size 64) is trained with the same recipe and steps
# for four initializations: S4 (DPLR HiPPO-LegS), S4D-LegS, S4D-Lin, and S4D with a random
# diagonal `A` (`init="random"`: `Λ_n = -½ - i·exp(z_n)`, `z_n ~ N(0, 1)`, the
# random-imaginary-part init of state-spaces/s4). Then, on the trained layers, the
# convolution mode, the scan mode and the token-by-token `step` are compared.
#
# ## Result (full-size CPU run)
#
# Run of 2026-12-01 on the 2-core CPU of this project's machine, **shared with other
# jobs at the time** (load average ≈ 13; this job got 24 % of the CPU): jax 0.10.2.
# Sizes: one block (pre-norm, MLP ratio 2), width 32, state size 64 (32 complex modes),
# copy memory with 8 symbols and a delay of 400 (length 416, answers 408 steps after
# their input), batch 32, 1,500 steps per run, four runs. Wall time of the whole notebook
# **33 min 19 s** (315 s user + 181 s system CPU time; the unloaded time was not measured).
#
# | layer (same block, same recipe) | test accuracy | seconds (loaded) |
# |---|---|---|
# | S4, DPLR HiPPO-LegS | 0.382 | 636 |
# | S4D-LegS | **1.000** | 447 |
# | S4D-Lin | **0.989** | 309 |
# | S4D, random `Λ` | 0.323 | 462 |
#
# Chance is 0.125. On the trained layers, scan mode and token-by-token `step` match the
# convolution mode to 1.5e-5 relative (S4) and 4e-6–1.5e-5 (S4D), and the whole model run
# step by step has the same accuracy as in parallel (table at the end).
#
# ![](figures/01_s4_training.png)
# ![](figures/01_s4_kernels.png)
#
# **Partly reproduced.** HiPPO-derived diagonal inits solve the 408-step copy (S4D-LegS
# above 99 % train accuracy by step 350, S4D-Lin by step 1,300) where the random diagonal init stalls at 32 %, and
# the convolution and recurrent views agree on the trained layers; but S4 itself (the
# DPLR HiPPO-LegS layer) learned this task much more slowly than its diagonal
# approximations and stayed at 38 % after 1,500 steps, barely above the random init, so
# "HiPPO beats random" holds here for S4D, not for S4 at this budget.

# %%
import dataclasses

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from _common import RUNS, SMOKE, curve, pick, relative, run, savefig, step_outputs
from seqmodels.train import (Config, Experiment, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig,
                             load_state)

NUM_TOKENS = pick(8, 4)
DELAY = pick(400, 12)
LAG = DELAY + NUM_TOKENS           # answer t is the input LAG steps earlier
SEQ_LEN = 2 * NUM_TOKENS + DELAY
STEPS = pick(1500, 2)
WIDTH, STATE = pick(32, 8), pick(64, 8)

VARIANTS = {                       # label: (mixer, options)
    "S4 (DPLR LegS)": ("s4", {"init": "legs", "l_max": SEQ_LEN}),
    "S4D-LegS": ("s4d", {"init": "legs"}),
    "S4D-Lin": ("s4d", {"init": "lin"}),
    "S4D random": ("s4d", {"init": "random"}),
}


def make_config(mixer: str, options: dict) -> Config:
    return Config(
        model=ModelConfig(mixer=mixer, d_model=WIDTH, n_layers=1, mlp_ratio=2,
                          mixer_options=dict(state_size=STATE, **options)),
        task=TaskConfig(name="copy_memory",
                        options={"num_tokens": NUM_TOKENS, "num_symbols": 8, "delay": DELAY}),
        optimizer=OptimizerConfig(learning_rate=3e-3, ssm_learning_rate=1e-3, warmup_steps=pick(50, 1)),
        train=TrainConfig(steps=STEPS, batch_size=pick(32, 4), log_every=pick(50, 1), eval_batches=pick(8, 1),
                          checkpoint_every=STEPS, plot=False),
    )


def run_name(label: str) -> str:
    return "01_s4_" + label.lower().replace(" ", "_").replace("(", "").replace(")", "")


# smoke mode (CI) runs one S4 and one S4D variant: every code path, half the compiles
CONFIGS = {label: make_config(*spec) for label, spec in VARIANTS.items()
           if not SMOKE or label in ("S4 (DPLR LegS)", "S4D random")}
print(f"copy_memory: {NUM_TOKENS} symbols, delay {DELAY}, length {SEQ_LEN}; {STEPS} steps per run")

# %% [markdown]
# ## Training: the same block, the same recipe, four initializations
# AdamW, learning rate 3e-3 (1e-3 and no weight decay for the state-space parameters
# `Λ, P, B, Δ`, the S4 recipe), batch 32, warmup then cosine decay. Chance is 1/8.

# %%
results = {}
for label, config in CONFIGS.items():
    results[label] = run(config, run_name(label))

for label, r in results.items():
    print(f"{label:16s} test accuracy {r['test/accuracy']:.3f}  (chance {r['chance']:.3f})  "
          f"test loss {r['test/loss']:.3f}  {r['seconds']:.0f} s")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.5))
for label in CONFIGS:
    steps, acc = curve(run_name(label), "train/accuracy")
    ax.plot(steps, acc, label=label)
ax.axhline(1 / 8, color="gray", ls=":", label="chance")
ax.set(xlabel="training step", ylabel="train accuracy (recall positions)",
       title=f"copy memory, delay {DELAY}", ylim=(0, 1.02))
ax.legend()
savefig(fig, "01_s4_training")

# %% [markdown]
# ## What the layers learned: the convolution kernels
# `K̄_l` per channel of the trained layer (`mixer.kernel(L)`); the copy needs mass at lag
# `delay + 8` (dashed line).


# %%
def trained_model(config: Config, name: str):
    restored = load_state(config, RUNS / name)
    assert restored is not None, f"no checkpoint for {name}"
    _, state = restored
    return nnx.merge(Experiment(config).graphdef, state["params"], state["rest"]), state


trained = {label: trained_model(config, run_name(label)) for label, config in CONFIGS.items()}

fig, axes = plt.subplots(1, len(CONFIGS), figsize=(3.2 * len(CONFIGS), 3), sharey=True)
for ax, (label, (model, _)) in zip(axes, trained.items()):
    K = np.asarray(model.blocks[0].mixer.kernel(SEQ_LEN)[0])          # (channels, L)
    envelope = np.sqrt(np.mean(K ** 2, axis=0))
    ax.semilogy(np.maximum(envelope, 1e-6))
    ax.axvline(LAG, color="k", ls="--", lw=0.8)
    ax.set(title=label, xlabel="lag l")
axes[0].set_ylabel("RMS over channels of K̄_l")
savefig(fig, "01_s4_kernels")

# %% [markdown]
# ## Convolution view == recurrent view, on the trained layers
# For each trained layer, the inputs its mixer saw (normed embeddings of test sequences)
# go through `mode="conv"` (kernel + FFT), `mode="scan"` (the recurrence in
# `seqmodels.scans`) and `step` (one token at a time, as a `lax.scan`); the table gives the
# largest differences relative to `max|y|`. The last column runs the whole trained model
# token by token (`SequenceModel.step`) and reports its test accuracy on the same batch.

# %%
rows = []
for label, config in CONFIGS.items():
    model, state = trained[label]
    batch = Experiment(config).host_batch("test", 0)
    block = model.blocks[0]
    u = block.mixer_norm(model.embed(jnp.asarray(batch["inputs"])))
    y_conv = block.mixer(u)
    options = dict(config.model.mixer_options, mode="scan")
    scan_config = dataclasses.replace(config, model=dataclasses.replace(config.model, mixer_options=options))
    scan_model = nnx.merge(Experiment(scan_config).graphdef, state["params"], state["rest"])
    y_scan = scan_model.blocks[0].mixer(u)
    y_step = step_outputs(block.mixer, u)
    logits = step_outputs(model, jnp.asarray(batch["inputs"]))
    w = batch["weights"]
    step_accuracy = float(np.sum((np.argmax(logits, -1) == batch["targets"]) * w) / np.sum(w))
    parallel_accuracy = float(np.sum((np.argmax(model(jnp.asarray(batch["inputs"])), -1) == batch["targets"]) * w)
                              / np.sum(w))
    rows.append((label, relative(y_scan, y_conv), relative(y_step, y_conv), parallel_accuracy, step_accuracy))

print("| model | scan vs conv | step vs conv | accuracy, parallel | accuracy, step by step |")
print("|---|---|---|---|---|")
for label, scan_gap, step_gap, acc_parallel, acc_step in rows:
    print(f"| {label} | {scan_gap:.1e} | {step_gap:.1e} | {acc_parallel:.3f} | {acc_step:.3f} |")

# %%
assert all(scan_gap < 1e-3 and step_gap < 1e-3 for _, scan_gap, step_gap, _, _ in rows)

# %% [markdown]
# ## What the numbers mean, and how this differs from the papers
#
# * **Initialization is what separates the runs.** The four layers share the block, the
#   optimizer, the data and the number of steps; only `Λ` (and for S4 the low-rank `P`)
#   differ at the start. The kernel plots show why: the S4D-LegS and S4D-Lin layers
#   learned a sharp spike at lag 408, the random layer's kernel is smooth — its
#   log-normal imaginary parts (mostly 0.1–7) give slowly oscillating modes that cannot
#   form a narrow bump, and training does not move them far enough in 1,500 steps.
#   It gets about a third of the recalls right and stays there from step ~400 on.
# * **S4 (DPLR) is the surprise.** It is the same LegS operator S4D-LegS approximates,
#   plus the rank-1 term; its scan and conv modes agree with each other, and the
#   library's S4 kernel is tested against dense powers of `Ā`, so we read the result as
#   a property of this setting rather than a bug: with the full LegS matrix the kernel's
#   basis functions are exponentially warped Legendre polynomials (memory and
#   resolution both fall off with `Δ·l`), while S4D's diagonal modes are damped
#   sinusoids that form a spike at any lag within `1/Δ` easily. An S4 run on a shorter
#   delay (200, not part of this notebook) reached 57 % after 2,000 steps, still behind
#   S4D-LegS, which solved that delay in 400. The papers' S4 results use deep stacks,
#   many more steps and tuned learning rates; we did not tune per variant.
# * **Differences from the papers.** S4 §4.4 and S4D §5 ablate initializations on
#   sequential CIFAR with 4–6 layer models trained for tens of epochs, where random
#   inits lose 15+ points; here it is one block on a synthetic delay task. Our random
#   init follows state-spaces/s4 (`init="rand"`: `Re Λ = -½`, `Im Λ = exp(N(0,1))`) with
#   one draw shared by all channels (the official code draws per channel). The block is
#   this library's pre-norm residual block with the S4 output stage (GELU, linear), not
#   the paper's GLU block.
