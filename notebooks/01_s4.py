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
# for: S4D-LegS, S4 (DPLR HiPPO-LegS), S4 with the low-rank term `P` set to 0 at init
# (`p_init="zero"`: the control that isolates what `P` does), S4 with a 3× and a 10×
# larger learning rate for its state-space parameters, S4 with the official block options
# (GLU output, one `(Λ, P, B)` shared by all channels: `n_ssm=1`), and the controls S4D-Lin
# and S4D with a random diagonal `A` (`init="random"`: `Λ_n = -½ - i·exp(z_n)`,
# `z_n ~ N(0, 1)`, the random-imaginary-part init of state-spaces/s4). Every row is
# trained with 3 seeds. Then, on the trained layers, the convolution mode, the scan mode
# and the token-by-token `step` are compared.
#
# ## Result (full-size CPU run, 3 seeds)
#
# Run of 2026-12-08 on the 2-core CPU of this project's machine, **shared with other
# jobs at the time** (load average 13–16), jax 0.10.2. Sizes: one block (pre-norm, MLP
# ratio 2), width 32, state size 64 (32 complex modes), copy memory with 8 symbols and a
# delay of 200 (length 216, answers 208 steps after their input), batch 32, **800 steps**
# per run, 8 rows × 3 seeds = 24 runs. To fit 3 seeds of every row in about 30 minutes,
# the task and budget are **smaller than the single-seed run this notebook reported
# before** (delay 400, 1,500 steps, four rows); the model is the same. Wall time of the
# whole notebook under that load: 17 min 49 s for the first 21 runs (475 s user + 23 s
# system CPU) plus 5 min 25 s for the GLU / `n_ssm` row added afterwards (143 s + 7 s;
# a second invocation that reused the finished runs); about 11 CPU-minutes in all, so
# roughly that much wall time on an idle machine (the unloaded time was not measured).
#
# | layer (same block, same recipe) | SSM lr | test accuracy, mean ± std | per seed | s per seed (loaded) |
# |---|---|---|---|---|
# | S4D-LegS | 1e-3 | **1.000 ± 0.000** | 1.000, 1.000, 1.000 | 43 |
# | S4, DPLR HiPPO-LegS | 1e-3 | 0.460 ± 0.010 | 0.458, 0.472, 0.451 | 66 |
# | S4, DPLR LegS with `P = 0` at init | 1e-3 | **1.000 ± 0.000** | 1.000, 1.000, 1.000 | 64 |
# | S4, DPLR LegS | 3e-3 | 0.544 ± 0.037 | 0.510, 0.584, 0.538 | 42 |
# | S4, DPLR LegS | 1e-2 | 0.894 ± 0.138 | 0.975, 0.735, 0.972 | 49 |
# | S4, DPLR LegS, GLU output, `n_ssm = 1` | 1e-3 | 0.502 ± 0.051 | 0.550, 0.506, 0.448 | 49 |
# | S4D-Lin | 1e-3 | **0.998 ± 0.003** | 0.994, 1.000, 1.000 | 32 |
# | S4D, random `Λ` | 1e-3 | 0.329 ± 0.004 | 0.330, 0.333, 0.324 | 33 |
#
# Chance is 0.125; std is the sample standard deviation over the seeds. On the trained
# layers (seed 0), scan mode and token-by-token `step` match the convolution mode to
# 2.5e-6–4.2e-5 relative, and the whole model run step by step has the same accuracy as
# in parallel (table at the end).
#
# ![](figures/01_s4_training.png)
# ![](figures/01_s4_eigenvalues.png)
# ![](figures/01_s4_initial_kernels.png)
# ![](figures/01_s4_kernels.png)
#
# **Reproduced, and S4's slow start explained.** The HiPPO-derived diagonal inits solve the
# 208-step copy in all three seeds (S4D-LegS 1.000 ± 0.000, S4D-Lin 0.998 ± 0.003) where
# the random diagonal init stalls at 0.329 ± 0.004; the spreads do not overlap. S4 itself
# (DPLR LegS) at the S4 recipe's SSM learning rate reaches only 0.460 ± 0.010 in 800 steps
# — above random in every seed, far below S4D. The cause is the low-rank term, not the
# implementation: the **same layer with `P = 0` at init reaches 1.000 in all three seeds**,
# as fast as S4D-LegS. `Λ − PP*` is unitarily similar to the LegS matrix, whose eigenvalues
# are the real numbers −1 … −N, so S4-LegS starts with no oscillating modes and a kernel
# that is smooth and gone within a few hundred `Δ`-scaled steps (figures above); training
# has to move `Λ, P` far to make a sharp bump at lag 208, and it does so faster with a
# larger SSM learning rate (0.544 ± 0.037 at 3e-3, 0.894 ± 0.138 at 1e-2, two seeds at
# 0.97). The official block options (GLU output, `(Λ, P, B)` shared by all channels) do
# not change this (0.502 ± 0.051).

# %%
import dataclasses
import re

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

import seqmodels.layers as layers
from _common import (RUNS, SEEDS, SMOKE, pick, pm, relative, run_seeds, savefig, seed_bars, seed_curves,
                     step_outputs)
from seqmodels import ssm
from seqmodels.train import (Config, Experiment, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig,
                             load_state)

NUM_TOKENS = pick(8, 4)
DELAY = pick(200, 12)
LAG = DELAY + NUM_TOKENS           # answer t is the input LAG steps earlier
SEQ_LEN = 2 * NUM_TOKENS + DELAY
STEPS = pick(800, 2)
WIDTH, STATE = pick(32, 8), pick(64, 8)
SSM_LR = 1e-3                      # the S4 recipe's learning rate for Λ, P, B, Δ

S4_LEGS = {"init": "legs", "l_max": SEQ_LEN}
VARIANTS = {                       # label: (mixer, options, SSM learning rate)
    "S4D-LegS": ("s4d", {"init": "legs"}, SSM_LR),
    "S4 (DPLR LegS)": ("s4", S4_LEGS, SSM_LR),
    "S4 (DPLR LegS), P = 0": ("s4", dict(S4_LEGS, p_init="zero"), SSM_LR),
    "S4 (DPLR LegS), SSM lr 3e-3": ("s4", S4_LEGS, 3e-3),
    "S4 (DPLR LegS), SSM lr 1e-2": ("s4", S4_LEGS, 1e-2),
    "S4 (DPLR LegS), GLU, n_ssm = 1": ("s4", dict(S4_LEGS, output="glu", n_ssm=1), SSM_LR),  # official block options
    "S4D-Lin": ("s4d", {"init": "lin"}, SSM_LR),
    "S4D random": ("s4d", {"init": "random"}, SSM_LR),
}
SWEEP = ("S4 (DPLR LegS), SSM lr 3e-3", "S4 (DPLR LegS), SSM lr 1e-2")  # same layer, other learning rate


def make_config(mixer: str, options: dict, ssm_learning_rate: float) -> Config:
    return Config(
        model=ModelConfig(mixer=mixer, d_model=WIDTH, n_layers=1, mlp_ratio=2,
                          mixer_options=dict(state_size=STATE, **options)),
        task=TaskConfig(name="copy_memory",
                        options={"num_tokens": NUM_TOKENS, "num_symbols": 8, "delay": DELAY}),
        optimizer=OptimizerConfig(learning_rate=3e-3, ssm_learning_rate=ssm_learning_rate,
                                  warmup_steps=pick(50, 1)),
        train=TrainConfig(steps=STEPS, batch_size=pick(32, 4), log_every=pick(25, 1), eval_batches=pick(8, 1),
                          checkpoint_every=STEPS, plot=False),
    )


def run_name(label: str) -> str:
    return "01_s4_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


# smoke mode (CI) runs one S4 and one S4D variant, one seed: every code path, few compiles
CONFIGS = {label: make_config(*spec) for label, spec in VARIANTS.items()
           if not SMOKE or label in ("S4 (DPLR LegS)", "S4D random")}
print(f"copy_memory: {NUM_TOKENS} symbols, delay {DELAY}, length {SEQ_LEN}; {STEPS} steps per run, "
      f"seeds {SEEDS}")

# %% [markdown]
# ## Why LegS's kernel does not oscillate: the eigenvalues of `Λ − PP*`
# S4 stores LegS as `A = Λ − PP*` in the basis that diagonalizes its normal part
# (`ssm.nplr`); that is a change of basis by a unitary `W`, so `A` has the eigenvalues of
# the HiPPO-LegS matrix itself, which is lower-triangular with diagonal `−1, −2, …, −N`:
# all **real**. A linear system with real eigenvalues has a kernel made of decaying
# exponentials (times polynomials, `A` being far from normal), with no oscillation; the
# bilinear rule maps them to real `Ā` eigenvalues in `(−1, 1)` (negative ones, which flip
# sign every step, for the fast modes with `λΔ < −2`; they are gone within a few steps). Setting `P = 0` leaves
# `A = Λ = −½ + iω_n` (the S4D-LegS spectrum): slowly decaying modes with frequencies
# `ω_n` up to ~`N²/3`, damped sinusoids that can add up to a bump at any lag.
# `numpy.linalg.eig` of the `N = 64` DPLR matrix is useless here (the matrix is so
# non-normal that rounding moves its eigenvalues by tens), so the cell checks the
# similarity `W (Λ − PP*) W* = A_LegS` instead and shows `eig` only at `N = 16`.

# %%
def legs_dplr(N: int):
    """``(W, A_dplr)``: the unitary ``W = [V, conj V]`` and the conjugate-doubled ``Λ − PP*`` of LegS."""
    d = ssm.nplr("legs", N)
    Lambda_f = np.concatenate([d.Lambda, d.Lambda.conj()])
    P_f = np.concatenate([d.P, d.P.conj()], axis=-1)[0]
    return np.concatenate([d.V, d.V.conj()], axis=1), np.diag(Lambda_f) - np.outer(P_f, P_f.conj())


W, A_dplr = legs_dplr(STATE)
A_legs, _ = ssm.hippo_legs(STATE)
print(f"N = {STATE}: max |W (Λ − PP*) W* − A_LegS| = {np.max(np.abs(W @ A_dplr @ W.conj().T - A_legs)):.1e}; "
      f"A_LegS is lower-triangular: {np.allclose(A_legs, np.tril(A_legs))}, diagonal {np.diag(A_legs)[:3]} … "
      f"{np.diag(A_legs)[-1]}")
eig16 = np.linalg.eigvals(legs_dplr(16)[1])
print(f"N = 16, numpy eig of Λ − PP*: max |Im| = {np.max(np.abs(eig16.imag)):.1e}, "
      f"Re from {eig16.real.min():.2f} to {eig16.real.max():.2f}")

Lambda_legs = ssm.nplr("legs", STATE).Lambda
fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.scatter(Lambda_legs.real, -Lambda_legs.imag, s=14, label="Λ (S4 with P = 0, S4D-LegS)")
ax.scatter(np.diag(A_legs), np.zeros(STATE), s=14, marker="x", label="Λ − PP* (S4, LegS): −1 … −N")
ax.set_yscale("symlog", linthresh=1)
ax.set(xlabel="Re (decay rate)", ylabel="−Im (frequency), symlog",
       title=f"continuous-time eigenvalues, N = {STATE} (one of each conjugate pair)")
ax.legend()
savefig(fig, "01_s4_eigenvalues")

# %% [markdown]
# The initial kernels `K̄_l` of the three layers (same seed, so the same `Δ` per channel
# and the same draw of `C`), for the channels with the smallest, median and largest `Δ`,
# each scaled to its largest tap. S4 with LegS starts with smooth kernels (a few slow
# swings from the polynomial factors, a sign-flipping transient of the fast modes at
# large `Δ`) that have died out well before lag 208 except at the smallest `Δ`; with
# `P = 0` it starts like S4D-LegS (which uses zero-order hold instead of the bilinear
# rule): oscillating at every scale, and reaching lag 208 at all three `Δ`.

# %%
INITIAL = {"S4 (DPLR LegS)": ("s4", S4_LEGS), "S4 (DPLR LegS), P = 0": ("s4", dict(S4_LEGS, p_init="zero")),
           "S4D-LegS": ("s4d", {"init": "legs"})}
fig, axes = plt.subplots(1, 3, figsize=(10, 3), sharey=True)
for ax, (label, (mixer, options)) in zip(axes, INITIAL.items()):
    layer = layers.build(mixer, WIDTH, state_size=STATE, rngs=nnx.Rngs(0), **options)
    K = np.asarray(layer.kernel(SEQ_LEN)[0])                             # (channels, L)
    order = np.argsort(np.asarray(layer.dt))
    for h, name in zip(order[[0, WIDTH // 2, -1]], ("smallest Δ", "median Δ", "largest Δ")):
        ax.plot(K[h] / np.max(np.abs(K[h])), lw=0.9, label=f"{name} ({float(layer.dt[h]):.0e})")
    ax.axvline(LAG, color="k", ls="--", lw=0.8)
    ax.set(title=label, xlabel="lag l")
axes[0].set_ylabel("K̄_l / max |K̄|, at init")
axes[0].legend(fontsize=7)
savefig(fig, "01_s4_initial_kernels")

# %% [markdown]
# ## Training: the same block, the same recipe, every row over 3 seeds
# AdamW, learning rate 3e-3 (1e-3 and no weight decay for the state-space parameters
# `Λ, P, B, Δ`, the S4 recipe; the sweep rows raise only that group's rate), batch 32,
# warmup then cosine decay. Chance is 1/8. Each row is trained with seeds 0, 1, 2 (the
# seed sets the initialization of the random parts and the data order).

# %%
results = {label: run_seeds(config, run_name(label)) for label, config in CONFIGS.items()}

# (a reused run's "seconds" is only the time to load it, so wall times are not tabulated here)
print("| layer | SSM learning rate | test accuracy (mean ± std) | per seed |")
print("|---|---|---|---|")
for label, summary in results.items():
    per_seed = ", ".join(f"{r['test/accuracy']:.3f}" for r in summary["runs"])
    print(f"| {label} | {CONFIGS[label].optimizer.ssm_learning_rate:.0e} | {pm(summary, 'test/accuracy')} | "
          f"{per_seed} |")

# %%
fig, (ax, bars) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [3, 2]},
                               constrained_layout=True)
for label in CONFIGS:
    steps, acc = seed_curves(run_name(label), "train/accuracy")
    mean, std = acc.mean(0), acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
    line, = ax.plot(steps, mean, label=label, ls=":" if label in SWEEP else "-")
    ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
ax.axhline(1 / 8, color="gray", ls=":", label="chance")
ax.set(xlabel="training step", ylabel="train accuracy (recall positions)",
       title=f"copy memory, delay {DELAY}: mean ± std over {len(SEEDS)} seeds", ylim=(0, 1.02))
ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
seed_bars(bars, {label: results[label] for label in CONFIGS})
bars.axvline(1 / 8, color="gray", ls=":")
bars.set(xlim=(0, 1.1), xlabel="test accuracy (bar: mean ± std, dots: seeds)")
savefig(fig, "01_s4_training")

# %% [markdown]
# ## What the layers learned: the convolution kernels
# `K̄_l` per channel of the trained layer (seed 0, `mixer.kernel(L)`); the copy needs mass
# at lag `delay + 8` (dashed line).


# %%
def trained_model(config: Config, name: str, seed: int = SEEDS[0]):
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    restored = load_state(config, RUNS / name / f"seed_{seed}")
    assert restored is not None, f"no checkpoint for {name}, seed {seed}"
    _, state = restored
    return nnx.merge(Experiment(config).graphdef, state["params"], state["rest"]), state


trained = {label: trained_model(config, run_name(label)) for label, config in CONFIGS.items()}

columns = min(4, len(CONFIGS))
rows_ = -(-len(CONFIGS) // columns)
fig, axes = plt.subplots(rows_, columns, figsize=(3.2 * columns, 2.8 * rows_), sharey=True, squeeze=False,
                         constrained_layout=True)
for ax in axes.flat[len(CONFIGS):]:
    ax.set_visible(False)
for ax, (label, (model, _)) in zip(axes.flat, trained.items()):
    K = np.asarray(model.blocks[0].mixer.kernel(SEQ_LEN)[0])          # (channels, L)
    envelope = np.sqrt(np.mean(K ** 2, axis=0))
    ax.semilogy(np.maximum(envelope, 1e-6))
    ax.axvline(LAG, color="k", ls="--", lw=0.8)
    ax.set_title(label, fontsize=8)
    ax.set(xlabel="lag l")
for ax in axes[:, 0]:
    ax.set_ylabel("RMS over channels of K̄_l")
savefig(fig, "01_s4_kernels")

# %% [markdown]
# ## Convolution view == recurrent view, on the trained layers
# For each trained layer (seed 0; the learning-rate sweep rows are the same layer and are
# skipped), the inputs its mixer saw (normed embeddings of test sequences)
# go through `mode="conv"` (kernel + FFT), `mode="scan"` (the recurrence in
# `seqmodels.scans`) and `step` (one token at a time, as a `lax.scan`); the table gives the
# largest differences relative to `max|y|`. The last column runs the whole trained model
# token by token (`SequenceModel.step`) and reports its test accuracy on the same batch.

# %%
rows = []
for label, config in CONFIGS.items():
    if label in SWEEP:
        continue
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
# * **Initialization is what separates the runs.** The rows share the block, the
#   optimizer, the data and the number of steps; only `Λ` (and for S4 the low-rank `P`)
#   differ at the start, except the learning-rate and block-option rows. The trained
#   kernels show it: S4D-LegS, S4D-Lin and S4 with `P = 0` learned a sharp spike at lag
#   208; the random layer's kernel is smooth — its log-normal imaginary parts (mostly
#   0.1–7) give slowly oscillating modes that cannot form a narrow bump, and training does
#   not move them far enough in 800 steps. It gets about a third of the recalls right
#   and stays there.
# * **S4 (DPLR) with LegS: real eigenvalues.** S4 stores LegS as `Λ − PP*` with
#   `Λ = −½ + iω_n` (`ω_n` up to ~1,300 at `N = 64`) and a rank-1 `P`; the sum is the LegS
#   operator, lower-triangular with eigenvalues −1 … −N. Its kernel is a sum of real
#   exponentials `e^{−nΔl}` times polynomials (the exponentially warped Legendre basis):
#   smooth, and for all but the smallest `Δ` decayed long before lag 208 (initial-kernel
#   figure). With `P = 0` the same layer starts as the diagonal normal part, the S4D-LegS
#   spectrum: every mode decays at only `Δ/2` per step and oscillates at `ω_n Δ`, a basis
#   in which a spike at any lag is a small change of `C`. So the DPLR layer is not broken
#   (its kernel is tested against dense powers of `Ā`, its modes agree, and `P = 0`
#   recovers S4D-LegS's result through the same code); it starts from a harder point for
#   this task and needs a larger SSM learning rate or more steps. The papers train S4
#   with deep stacks for many epochs; we use the recipe's SSM learning rate 1e-3 for
#   every row except the sweep. At 1e-2 the spread across seeds is
#   large (one seed at 0.735), so 800 steps are at the edge for it.
# * **Differences from the papers.** S4 §4.4 and S4D §5 ablate initializations on
#   sequential CIFAR with 4–6 layer models trained for tens of epochs, where random
#   inits lose 15+ points; here it is one block on a synthetic delay task. Our random
#   init follows state-spaces/s4 (`init="rand"`: `Re Λ = -½`, `Im Λ = exp(N(0,1))`) with
#   one draw shared by all channels (the official code draws per channel). The block is
#   this library's pre-norm residual block with the S4 output stage (GELU, linear; the
#   paper's GLU output in one row), plus a position-wise MLP that the official block does
#   not have.
