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
# # Aaren: attention as an RNN
#
# **Paper.** "Attention as an RNN", Leo Feng, Frederick Tung, Hossein Hajimirsadeghi,
# Mohamed Osama Ahmed, Yoshua Bengio, Greg Mori (2024).
#
# **Claim.** Softmax attention of *one* query over a growing prefix is an RNN whose
# state is a running `(max, normalizer, weighted sum)`, and all prefix outputs come
# from one parallel prefix scan. Aaren uses a learned query token per head (not a
# projection of the input), so it trains in parallel like a Transformer and streams
# with a constant-size state. On 38 datasets (reinforcement learning, event
# forecasting, time-series forecasting and classification) the paper reports results
# comparable to Transformers while being more time- and memory-efficient when
# tokens arrive one at a time.
#
# **What this notebook tests, at toy size.** Two of the paper's settings at small
# scale — time-series classification on a dataset shipped with `aeon` (BasicMotions,
# from the UEA multivariate archive the paper uses) and next-value forecasting of noisy
# multi-sine series — comparing Aaren with a causal Transformer (mixer `attention`,
# RoPE, KV cache) of the same width, depth and heads, trained by the library's loop on
# the same batches. Then streaming: for the trained forecasters, the recurrent state
# a model carries per sequence and the latency of one `step` as the context grows —
# Aaren's state is a few numbers per head, the Transformer's KV cache grows with the
# context it holds.

# %% [markdown]
# ## Result
#
# **The 3-seed full run is pending.** The code now trains every classifier and
# forecaster with seeds 0, 1, 2 (`run_seeds`) and reports mean ± std, the per-seed values
# and bands over the seeds; streaming uses the seed-0 forecasters. To bring the 27 runs
# towards 30 minutes on an idle 2-core machine the forecasters train **1,000 steps**
# instead of the 1,500 of the run below (classification is unchanged, 300 steps on tiny
# data sets); the full-size time of one seed was not measured (the machine was loaded,
# load average 12–16, and busy with notebook 02's run), so whether 27 runs fit in 30
# minutes is still to be checked — shrink the forecast length or width next if not. It
# has been smoke-tested (one seed, tiny sizes). Until the full run, the tables and
# verdict below are the **single-seed run** and cannot tell whether the 2× forecast gap
# is noise.
#
# Single-seed run of 2026-12-01 on this project's 2-core CPU, shared with other jobs at the time
# (load average 6–15), jax 0.10.2. Sizes: d_model 64, 2 layers (mixer + MLP blocks),
# 4 heads; classification: 300 steps, batch 16, lr 1e-3, dropout 0.1; forecasting:
# length 128, 1,500 steps, batch 32, lr 2e-3; one seed. Streaming: batch 1, contexts
# 128 … 32,768, median of 200 steps. The training runs were spread over three sittings
# of the notebook (it was edited between them; finished runs are reused): 29 min 50 s,
# an interrupted ≈ 16 min, and the final 10 min 59 s (172 s CPU) that printed the
# tables below — about 57 min of wall time under load in all.
#
# | model | parameters (forecaster) | BasicMotions acc. (chance 0.25) | ArrowHead acc. (majority 0.394) | forecast test MSE (predict 0: 0.2075) |
# |---|---|---|---|---|
# | Aaren | 92,097 | **1.000** | 0.560 | 0.0531 |
# | Transformer (RoPE) | 100,289 | **1.000** | **0.583** | **0.0269** |
# | Transformer, no positions | 100,289 | **1.000** | 0.526 | 0.0559 |
#
# Streaming one token at a time (trained forecasters; `step` output equals the
# parallel output to 6e-7 for Aaren, 7e-7 for the Transformer):
#
# | context T | Aaren state (bytes) | Aaren step (ms) | Transformer KV cache (bytes) | Transformer step (ms) |
# |---|---|---|---|---|
# | 128 | 576 | 0.11 | 131,080 | 0.26 |
# | 2,048 | 576 | 0.21 | 2,097,160 | 0.50 |
# | 32,768 | 576 | 0.18 | 33,554,440 | 43.4 |
#
# ![](figures/07_aaren_training.png)
# ![](figures/07_aaren_streaming.png)
#
# **Partly reproduced.** The efficiency claim holds exactly: Aaren's streaming state is
# 576 bytes per sequence at every context length and its step latency stays flat
# (0.11–0.21 ms), while the Transformer's cache grows linearly (33 MB at 32k tokens) and
# its step slows ≈ 170×. Accuracy is comparable on classification (both 1.000 on
# BasicMotions; 0.560 vs 0.583 on ArrowHead, within the noise of 175 test series and
# one seed), but on forecasting the Transformer with RoPE is twice as accurate (MSE
# 0.027 vs 0.053); without positions it is on par with Aaren (0.056).

# %%
import dataclasses
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from _common import RUNS, SEEDS, SMOKE, pick, pm, run_seeds, savefig, seed_curves
from seqmodels.train import Config, Experiment, load_state
from seqmodels.train.config import ModelConfig, OptimizerConfig, TaskConfig, TrainConfig

D_MODEL, N_LAYERS, HEADS = pick(64, 16), pick(2, 1), pick(4, 2)
# label: (mixer, options, run-name key). The library's models add no position embedding:
# attention gets positions from RoPE inside the mixer, Aaren has none (its learned query
# pools the prefix by content), so a Transformer without RoPE is compared as well.
MODELS = {
    "Aaren": ("aaren", {}, "aaren"),
    "Transformer": ("attention", {}, "transformer"),
    "Transformer, no RoPE": ("attention", {"rope": False}, "transformer_norope"),
}
if SMOKE:  # fewer runs: the third model takes the same code path
    MODELS.pop("Transformer, no RoPE")


def config(mixer, options, task, task_options, *, steps, batch, lr, dropout=0.0, eval_batches=8):
    return Config(
        model=ModelConfig(mixer=mixer, d_model=D_MODEL, n_layers=N_LAYERS,
                          mixer_options=dict(options, num_heads=HEADS), dropout=dropout),
        task=TaskConfig(name=task, options=task_options),
        optimizer=OptimizerConfig(learning_rate=lr, warmup_steps=pick(50, 1), weight_decay=0.01),
        train=TrainConfig(steps=steps, batch_size=batch, log_every=pick(25, 1), eval_every=0,
                          eval_batches=eval_batches, checkpoint_every=steps, plot=False))


def parameter_count(cfg):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(Experiment(cfg).init_state()["params"]))


def run_name(experiment, label):
    return f"07_aaren_{experiment}_{MODELS[label][2]}"


def per_seed(summary, key, digits):
    """Metric ``key`` of each seed's run in a ``run_seeds`` summary, comma-separated."""
    return ", ".join(f"{r[key]:.{digits}f}" for r in summary["runs"])


# %% [markdown]
# ## 1. Time-series classification (two data sets shipped with aeon)
# *BasicMotions* (UEA multivariate archive, as in the paper): 40 training and 40 test
# recordings of a 6-channel accelerometer/gyroscope, 100 steps, 4 activities.
# *ArrowHead* (UCR univariate): 36 training and 175 test outlines of arrowheads,
# 251 steps, 3 classes. Official splits, z-scored with training statistics; the
# classifier mean-pools the last layer over time.

# %%
DATASETS = pick(["BasicMotions", "ArrowHead"], ["ItalyPowerDemand"])
ucr_configs = {(dataset, label): config(mixer, options, "ucr", {"dataset": dataset}, steps=pick(300, 2),
                                        batch=pick(16, 4), lr=1e-3, dropout=0.1)
               for dataset in DATASETS for label, (mixer, options, _) in MODELS.items()}
ucr = {}
for (dataset, label), cfg in ucr_configs.items():
    ucr[dataset, label] = summary = run_seeds(cfg, run_name(dataset.lower(), label))
    print(f"{dataset:12s} {label:20s} {parameter_count(cfg):6d} parameters  test accuracy "
          f"{pm(summary, 'test/accuracy')} (per seed {per_seed(summary, 'test/accuracy', 3)}; "
          f"majority class {summary['runs'][0]['chance']:.3f})")

# %% [markdown]
# ## 2. Forecasting noisy multi-sine series
# Predict `x_{t+1}` from `x_{≤t}` at every step (task `forecast`, 3 sinusoids of random
# frequency, amplitude and phase per sequence, noise std 0.05, length 128); test MSE
# against always predicting 0 (the series' mean). The noise alone sets a floor of
# 0.05² = 0.0025.

# %%
FORECAST = {"process": "sines", "seq_len": pick(128, 16), "num_components": 3}
forecast_configs = {label: config(mixer, options, "forecast", FORECAST, steps=pick(1000, 2), batch=pick(32, 4),
                                  lr=2e-3, eval_batches=pick(16, 1))
                    for label, (mixer, options, _) in MODELS.items()}
forecast = {}
for label, cfg in forecast_configs.items():
    forecast[label] = summary = run_seeds(cfg, run_name("forecast", label))
    print(f"{label:20s} {parameter_count(cfg):6d} parameters  test MSE {pm(summary, 'test/mse', 4)} "
          f"(per seed {per_seed(summary, 'test/mse', 4)}; "
          f"predicting 0: {summary['runs'][0]['chance']:.4f})")

# %%
fig, axes = plt.subplots(1, len(DATASETS) + 1, figsize=(4.7 * (len(DATASETS) + 1), 3.5))
panels = [(ax, dataset.lower(), dataset, "train cross-entropy") for ax, dataset in zip(axes, DATASETS)]
panels.append((axes[-1], "forecast", "multi-sine forecasting", "train MSE"))
for ax, experiment, title, ylabel in panels:
    for label in MODELS:
        steps, loss = seed_curves(run_name(experiment, label), "train/loss")
        mean, std = loss.mean(0), loss.std(0, ddof=1) if len(loss) > 1 else np.zeros(loss.shape[1])
        line, = ax.plot(steps, mean, label=label)
        ax.fill_between(steps, np.maximum(mean - std, 1e-4), mean + std, color=line.get_color(), alpha=0.2)
    ax.set(xlabel="step", ylabel=ylabel, yscale="log", title=f"{title} (mean ± std, {len(SEEDS)} seed(s))")
    ax.legend(fontsize=8)
fig.tight_layout()
savefig(fig, "07_aaren_training")


# %%
table = ("| model | parameters (forecaster) | "
         + " | ".join(f"{d} acc. | per seed" for d in DATASETS)
         + " | forecast test MSE | per seed |\n" + "|---" * (2 * len(DATASETS) + 4) + "|\n")
for label in MODELS:
    table += (f"| {label} | {parameter_count(forecast_configs[label])} | "
              + " | ".join(f"{pm(ucr[dataset, label], 'test/accuracy')} | "
                           f"{per_seed(ucr[dataset, label], 'test/accuracy', 3)}" for dataset in DATASETS)
              + f" | {pm(forecast[label], 'test/mse', 4)} | {per_seed(forecast[label], 'test/mse', 4)} |\n")
print(table)

# %% [markdown]
# ## 3. Streaming: the trained forecasters, one value at a time
# Restore each trained model (seed 0; `load_state`, `Experiment(...).graphdef`) and run it with
# `init_state` / `step`. First check that streaming gives the parallel outputs; then,
# for contexts of `T` tokens, measure the bytes of the recurrent state one sequence
# carries and the latency of one compiled `step` (batch 1, median of repeated calls).
# The Transformer's cache is built for `max_length = T` (it holds keys and values for
# `T` positions and a step attends over all its slots); Aaren's state does not depend
# on `T`.

# %%
def trained_model(label, max_length=None, seed=SEEDS[0]):
    cfg = forecast_configs[label]
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
    _, state = load_state(cfg, RUNS / run_name("forecast", label) / f"seed_{seed}")
    if max_length is not None:
        options = dict(cfg.model.mixer_options, max_length=max_length)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mixer_options=options))
    return nnx.merge(Experiment(cfg).eval_graphdef, state["params"], state["rest"])


STREAMED = ["Aaren", "Transformer"]   # without RoPE the Transformer's cache is the same
series = Experiment(forecast_configs["Aaren"]).task.batch("test", 0, 1, seed=0)
x = jnp.asarray(series["inputs"])
streamed = {}
for label in STREAMED:
    model = trained_model(label)
    graphdef, params = nnx.split(model)
    step = jax.jit(lambda p, x_t, s: nnx.merge(graphdef, p).step(x_t, s))
    state, outs = model.init_state(1), []
    for t in range(x.shape[1]):
        y_t, state = step(params, x[:, t], state)
        outs.append(y_t)
    streamed[label] = jnp.stack(outs, axis=1)
    gap = float(jnp.max(jnp.abs(streamed[label] - model(x))))
    print(f"{label:12s} max |streamed - parallel| = {gap:.2e}")
    assert gap < 1e-3

# %%
CONTEXTS = pick([128, 512, 2048, 8192, 32768], [16, 64])
REPEATS = pick(200, 3)


def median_ms(fn, *args):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


streaming = {label: {"bytes": [], "ms": []} for label in STREAMED}
for T in CONTEXTS:
    for label in STREAMED:
        model = trained_model(label, max_length=T if label == "Transformer" else None)
        graphdef, params = nnx.split(model)
        step = jax.jit(lambda p, x_t, s: nnx.merge(graphdef, p).step(x_t, s))
        state = model.init_state(1)
        streaming[label]["bytes"].append(sum(leaf.nbytes for leaf in jax.tree.leaves(state)))
        streaming[label]["ms"].append(median_ms(step, params, x[:, 0], state))
rows = ["| context T | " + " | ".join(f"{label} state bytes | {label} step ms" for label in STREAMED) + " |",
        "|---|" + "---|---|" * len(STREAMED)]
for i, T in enumerate(CONTEXTS):
    cells = [f"{streaming[label]['bytes'][i]} | {streaming[label]['ms'][i]:.3f}" for label in STREAMED]
    rows.append(f"| {T} | " + " | ".join(cells) + " |")
print("\n".join(rows))

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
t = np.arange(x.shape[1])
axes[0].plot(t[1:], series["targets"][0, :-1, 0], color="k", lw=1, label="x_{t+1}")
for label in STREAMED:
    axes[0].plot(t[1:], streamed[label][0, :-1, 0], lw=1, label=f"{label} (streamed)")
axes[0].set(xlabel="t", title="one test series, next-value forecasts")
axes[0].legend(fontsize=8)
for label in STREAMED:
    axes[1].plot(CONTEXTS, streaming[label]["bytes"], "o-", label=label)
    axes[2].plot(CONTEXTS, streaming[label]["ms"], "o-", label=label)
axes[1].set(xscale="log", yscale="log", xlabel="context T (tokens)", ylabel="bytes",
            title="recurrent state per sequence")
axes[2].set(xscale="log", yscale="log", xlabel="context T (tokens)", ylabel="ms", title="one step (batch 1)")
for ax in axes[1:]:
    ax.legend()
fig.tight_layout()
savefig(fig, "07_aaren_streaming")

# %% [markdown]
# ## What the numbers mean
#
# * Aaren has no position information of its own: its learned query pools the prefix by
#   content. On the multi-sine forecast, where phase matters, the Transformer's rotary
#   positions make the difference — the Transformer without positions is as good as
#   Aaren. Adding positional features to the inputs might close the gap; we did not
#   try it, to keep one backbone for every mixer.
# * The state of one Aaren layer and head is a running (max, normalizer, weighted sum):
#   2 + d/heads numbers per head per layer, whatever the context; a KV cache stores two
#   vectors per past token. This is why the step time is flat for Aaren and grows with
#   T for the Transformer (at short contexts both are dominated by per-call overhead).
# * Differences from the paper: two small datasets instead of 38, tiny models, 300 /
#   1,500 steps and one seed; no reinforcement-learning or event-forecasting settings.
