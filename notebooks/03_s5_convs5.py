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
# # S5 and ConvS5: one MIMO diagonal SSM; convolutional state for video
#
# **Papers.** "Simplified State Space Layers for Sequence Modeling" (Smith, Warrington,
# Linderman, ICLR 2023) and "Convolutional State Space Models for Long-Range
# Spatiotemporal Modeling" (Smith, De Mello, Kautz, Linderman, Byeon, NeurIPS 2023).
#
# **Claims.** S5 replaces S4's many single-input SSMs by one multi-input multi-output
# diagonal SSM (HiPPO-N init) evaluated with a parallel scan, and keeps S4's long memory.
# ConvS5 makes the state an image and the input/output maps convolutions, with a
# pointwise state matrix, so the recurrence over frames is still a diagonal linear scan:
# it trains in parallel over time — the paper reports about 3× faster training than a
# ConvLSTM — and, unlike a Transformer, generates frame by frame at constant cost; on
# long Moving-MNIST rollouts (trained on 300 frames, rolled out to 1,200) it beats
# ConvLSTM and Transformers and its rollouts stay stable (Tables 1–2, Fig. 3).
#
# **What this notebook tests, at toy size.**
# 1. *ConvS5 on bouncing shapes* (`bouncing_shapes`: one 3×3 shape moving and bouncing in
#    16×16 frames, the dynamics of Moving MNIST in miniature): a next-frame predictor
#    (`VideoModel`: conv encoder to 8×8, two mixer blocks, conv decoder ending in a
#    sigmoid) with ConvS5 and, as the baseline, a ConvLSTM (`mixer="convlstm"`, Shi et
#    al. 2015) with the same number of mixer parameters, both trained on 16-frame clips;
#    then rolled out from 8 context frames to 64 frames, four times the training length,
#    against repeating the last context frame and predicting zeros. ConvS5's Δ range is
#    scaled to the training length (`timescale = 300 / 16`); an ablation keeps the
#    paper's 300-frame range. Every configuration over seeds 0, 1, 2.
# 2. *Training speed*: time per training step of the two models over several clip
#    lengths (the library's own step timing of `train_and_evaluate`; seed 0).
# 3. *S5 sanity check*: S5 on the copy-memory task of notebook 01 (delay 400), 3 seeds.
#
# ## Result
#
# **Not yet re-run at full size** with the set-up above (issue 16: 3 seeds, scaled Δ,
# bounded head, and the fixed initialization: the old runs started with gradient norms
# of ~1e9, see below). Expected wall time of the full run on this 2-core CPU: see the
# estimate at the end of this section. The numbers below are the previous full run's
# (2026-12-01, one seed, paper Δ range, unbounded head, that initialization), kept until
# the re-run replaces them; their verdict is superseded by whatever the re-run shows.
#
# Previous run: 16×16 frames, one 3×3 shape; VideoModel of width 16 (encoder to
# 8×8, two mixer blocks, MLP ratio 2), 3×3 kernels; ConvS5 with P = 56 state channels;
# batch 8, 400 steps on 16-frame clips; rollouts from 8 context frames to 64 frames
# (64 test videos); step timing over 4/16/64/128-frame clips; S5 (d_model 32, P = 64,
# 4 blocks, 1 layer) on copy memory with delay 400, 1,500 steps. Wall time of the whole
# notebook: 19 min 21 s (318 s user CPU).
#
# | | ConvS5 | ConvLSTM |
# |---|---|---|
# | mixer parameters | 37,032 | 37,088 |
# | test next-frame MSE (16-frame clips; predicting zeros: 0.0256) | 0.00224 | **0.00200** |
# | training wall time, 400 steps | **193 s** | 332 s |
# | max \|step − parallel\| on the first predicted frame | 6.0e-07 | 9.5e-07 |
#
# Rollout MSE per frame (8 context frames, then the model's own predictions fed back):
#
# | rollout frames | ConvS5 | ConvLSTM | repeat last context frame | predict zeros |
# |---|---|---|---|---|
# | 8–15 (within the training length) | **0.0135** | 0.0183 | 0.0520 | 0.0278 |
# | 16–31 (1–2× training length) | 0.1584 | **0.0722** | 0.0544 | 0.0278 |
# | 32–63 (2–4× training length) | 0.2808 | **0.0787** | 0.0484 | 0.0278 |
#
# Seconds per training step (same model sizes, batch 8):
#
# | frames | ConvS5 | ConvLSTM | ConvLSTM / ConvS5 |
# |---|---|---|---|
# | 4 | 0.048 | 0.109 | 2.28 |
# | 16 | 0.270 | 0.711 | 2.63 |
# | 64 | 1.178 | 1.709 | 1.45 |
# | 128 | 3.321 | 3.547 | 1.07 |
#
# S5 on copy memory (delay 400, 8 classes, chance 0.125): test accuracy 0.481;
# max |step − parallel| / max |y| = 1.9e-07.
#
# ![](figures/03_convs5_frames.png)
# ![](figures/03_convs5_rollout.png)
# ![](figures/03_convs5_speed.png)
#
# **Previous verdict (one seed, old set-up): partly reproduced.** ConvS5 trained faster
# per step than a ConvLSTM of equal size (2.3–2.6× at 4–16 frames, 1.1× at 128 frames on
# this CPU) and predicted the frames inside the training length better, but its
# rollouts past the training length drifted above the trivial baselines (0.28 at 2–4×).
# The audit of issue 16 traced the drift to the Δ range: the paper's [1e-3, 0.1] is set
# for 300-frame clips, and over 16 frames none of its modes settles (a single-seed
# check with Δ scaled by 300/16 gave 0.030 at 2–4×, below the ConvLSTM). The acceptance
# test of the re-run: ConvS5's 2–4× rollout MSE below ConvLSTM's in all 3 seeds — the
# cell after the rollout table prints in how many seeds it is.
#
# **Expected wall time of the full run**: about 36 min, from 20-step runs of the
# full-size configs on 2026-12-08 (load average ≈ 14 on the 2 cores): per run, compile and
# evaluation ≈ 40 s (ConvS5), 24 s (ConvLSTM), 31 s (S5) plus 0.130, 0.462 and 0.087 s per
# step; so 3 seeds × (ConvS5 92 s + ablation 92 s + ConvLSTM 209 s) ≈ 20 min, S5 copy
# 3 × 161 s ≈ 8 min, the step timing ≈ 6 min (the previous run's step times), rollouts
# ≈ 2 min. Above the 30 min aimed at; the step timing (one seed) is the first thing to
# cut if that matters more than the 128-frame point.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from _common import RUNS, SEEDS, SMOKE, curve, pick, pm, relative, run, run_seeds, savefig, seed_curves, step_outputs
from seqmodels.models.video import rollout
from seqmodels.tasks import build_task
from seqmodels.train import (Config, Experiment, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig,
                             load_state)
from seqmodels.train.seeds import with_seed

WIDTH = pick(16, 8)
SIZE = pick(16, 8)
FRAMES = pick(16, 4)                    # training clip length
STEPS = pick(400, 2)
CONTEXT, HORIZON = pick(8, 2), 4 * FRAMES  # rollout: context frames, total frames (4× training)
# ConvS5's Δ range [1e-3, 0.1] is the paper's for 300-frame clips; scaled to ours (`timescale`).
TIMESCALE = 300 / FRAMES
# Equal mixer parameters: ConvLSTM 8·k²·d² (four gates, input and hidden kernels);
# ConvS5 k²·(2·d·P + d²) (B̃, C̃ complex on P/2 modes, D) -> P = 3.5·d.
MIXERS = {"ConvS5": ("convs5", {"state_size": 7 * WIDTH // 2, "timescale": TIMESCALE}),
          "ConvLSTM": ("convlstm", {})}
# the ablation: ConvS5 with the paper's 300-frame Δ range, everything else equal (full size
# only: the same code path as "ConvS5", so smoke runs, which only check that the notebook
# works, skip it and CI's time does not grow)
ABLATION = pick({"ConvS5, paper Δ": ("convs5", {"state_size": 7 * WIDTH // 2})}, {})


def video_config(mixer: str, options: dict, frames: int, steps: int, log_every: int) -> Config:
    return Config(
        model=ModelConfig(kind="video", mixer=mixer, d_model=WIDTH, n_layers=2, n_down=1, mlp_ratio=2,
                          output="sigmoid", mixer_options=options),
        task=TaskConfig(name="bouncing_shapes", options={"frames": frames, "size": SIZE}),
        optimizer=OptimizerConfig(learning_rate=2e-3, ssm_learning_rate=1e-3, warmup_steps=pick(50, 1)),
        train=TrainConfig(steps=steps, batch_size=pick(8, 2), log_every=log_every, eval_batches=pick(8, 1),
                          checkpoint_every=steps, plot=False),
    )


def trained_model(config: Config, name: str):
    restored = load_state(config, RUNS / name)
    assert restored is not None, f"no checkpoint for {name}"
    _, state = restored
    return nnx.merge(Experiment(config).graphdef, state["params"], state["rest"])


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


RUN_NAMES = {"ConvS5": "03_video_convs5", "ConvLSTM": "03_video_convlstm",
             "ConvS5, paper Δ": "03_video_convs5_paper_dt"}


CONFIGS = {label: video_config(mixer, options, FRAMES, STEPS, pick(25, 1))
           for label, (mixer, options) in {**MIXERS, **ABLATION}.items()}

# %% [markdown]
# ## 1. Next-frame prediction: ConvS5 and ConvLSTM, same size, same recipe, 3 seeds
# Mean squared error per pixel of the next frame; 0.5·MSE + 0.5·L1 in the paper, MSE
# here. Both models end in a sigmoid (frames lie in [0, 1]; the official models end in
# tanh on frames mapped to [−1, 1]). ConvS5's Δ range is scaled to the 16-frame clips
# (`timescale = 300 / 16`); the ablation keeps the paper's 300-frame range. AdamW,
# learning rate 2e-3 (1e-3 and no weight decay for ConvS5's `Λ, B̃, Δ`), batch 8,
# warmup then cosine decay. Each configuration is trained with seeds 0, 1, 2 (seed:
# initialization and data order).

# %%
summaries, models = {}, {}
for label, config in CONFIGS.items():
    summaries[label] = run_seeds(config, RUN_NAMES[label])
    models[label] = [trained_model(with_seed(config, s), f"{RUN_NAMES[label]}/seed_{s}") for s in SEEDS]

task = build_task("bouncing_shapes", frames=FRAMES, size=SIZE)
print(f"predict-zero MSE (task.chance()): {summaries['ConvS5']['mean']['chance']:.4f}")
for label, summary in summaries.items():
    m = models[label][0]
    mixer_params = sum(count(nnx.state(block.mixer, nnx.Param)) for block in m.blocks)
    mse = [r["test/mse"] for r in summary["runs"]]
    print(f"{label:16s} test MSE {summary['mean']['test/mse']:.5f} ± {summary['std']['test/mse']:.5f} "
          f"(seeds: {', '.join(f'{v:.5f}' for v in mse)})   mixer parameters {mixer_params:,}  "
          f"(model {count(nnx.state(m, nnx.Param)):,})   {summary['mean']['seconds']:.0f} s per run")

fig, ax = plt.subplots(figsize=(5, 3.4))
for label in CONFIGS:
    steps, loss = seed_curves(RUN_NAMES[label], "train/loss")
    ax.plot(steps, loss.mean(0), label=label)
    ax.fill_between(steps, loss.mean(0) - loss.std(0), loss.mean(0) + loss.std(0), alpha=0.25)
ax.set(xlabel="step", ylabel="train MSE", yscale="log", title=f"training loss (mean ± std, {len(SEEDS)} seeds)")
ax.legend(fontsize=8)
savefig(fig, "03_convs5_loss")

# %% [markdown]
# ## Rollouts four times longer than training
# From `CONTEXT` true frames the model predicts a frame, reads its own prediction back in,
# and so on up to `HORIZON` = 4 × the training length (`seqmodels.models.video.rollout`,
# the recurrent `step` of each block). Reference curves: repeating the last context frame,
# and predicting zeros. The true continuation comes from the task's generator (same
# bouncing rule); the same 64 test videos for every model and seed.

# %%
truth = task.videos(np.random.default_rng(123), pick(64, 2), HORIZON)            # (B, T, H, W, 1)
future = truth[:, CONTEXT:]
per_frame = lambda pred, target: np.mean((pred - target) ** 2, axis=(0, 2, 3, 4))  # noqa: E731
# errors[label]: (seeds, frames after the context); the baselines do not depend on a seed
errors = {label: np.stack([per_frame(np.asarray(rollout(m, jnp.asarray(truth[:, :CONTEXT]), HORIZON - CONTEXT)),
                                     future) for m in ms]) for label, ms in models.items()}
errors["repeat last context frame"] = per_frame(truth[:, CONTEXT - 1:CONTEXT], future)[None]
errors["predict zeros"] = per_frame(0.0, future)[None]

# teacher-forced (parallel) predictions over the whole long clip, and the parallel ==
# recurrent check on it: the first generated frame is the parallel prediction after the context
teacher = {label: np.stack([per_frame(np.asarray(m(jnp.asarray(truth)))[:, :-1], truth[:, 1:]) for m in ms])
           for label, ms in models.items()}
for label, ms in models.items():
    first = np.asarray(rollout(ms[0], jnp.asarray(truth[:, :CONTEXT]), 1))[:, 0]
    parallel = np.asarray(ms[0](jnp.asarray(truth[:, :CONTEXT])))[:, -1]
    gap = np.max(np.abs(first - parallel))
    print(f"{label}: max |step - parallel| on the frame after the context = {gap:.1e}")
    assert gap < 1e-4

frames_ahead = np.arange(CONTEXT, HORIZON)
fig, (ax, ax_tf) = plt.subplots(1, 2, figsize=(11, 3.6))
for label, e in errors.items():
    line, = ax.plot(frames_ahead, e.mean(0), label=label, ls="-" if label in models else ":")
    ax.fill_between(frames_ahead, e.mean(0) - e.std(0), e.mean(0) + e.std(0), color=line.get_color(), alpha=0.2)
for k in (1, 2, 3):
    ax.axvline(k * FRAMES, color="k", lw=0.8, ls="--")
ax.set(xlabel="frame index (context = first %d)" % CONTEXT, ylabel="MSE per pixel", yscale="log",
       title=f"autoregressive rollout, mean ± std over {len(SEEDS)} seeds\n(dashed: 1, 2, 3 × training length)")
ax.legend(fontsize=8)
for label, e in teacher.items():
    line, = ax_tf.plot(np.arange(1, HORIZON), e.mean(0), label=label)
    ax_tf.fill_between(np.arange(1, HORIZON), e.mean(0) - e.std(0), e.mean(0) + e.std(0),
                       color=line.get_color(), alpha=0.2)
ax_tf.axvline(FRAMES, color="k", lw=0.8, ls="--")
ax_tf.set(xlabel="frame index", ylabel="MSE per pixel", yscale="log", title="teacher-forced next frame")
ax_tf.legend(fontsize=8)
savefig(fig, "03_convs5_rollout")

windows = [(lo, hi) for lo, hi in [(CONTEXT, FRAMES), (FRAMES, 2 * FRAMES), (2 * FRAMES, HORIZON)] if lo < hi]
window_mse = {label: np.stack([e[:, lo - CONTEXT:hi - CONTEXT].mean(1) for lo, hi in windows], axis=1)
              for label, e in errors.items()}                                          # (seeds, windows)
print("| rollout frames | " + " | ".join(errors) + " |")
print("|---|" + "---|" * len(errors))
for w, (lo, hi) in enumerate(windows):
    cells = [f"{v[:, w].mean():.4f}" + (f" ± {v[:, w].std(ddof=1):.4f}" if len(v) > 1 else "")
             for v in window_mse.values()]
    print(f"| {lo}–{hi - 1} | " + " | ".join(cells) + " |")
wins = window_mse["ConvS5"][:, -1] < window_mse["ConvLSTM"][:, -1]
listed = lambda v: ", ".join(f"{x:.4f}" for x in v)  # noqa: E731
print(f"ConvS5 below ConvLSTM at 2–4× the training length in {int(wins.sum())} of {len(SEEDS)} seeds "
      f"(per seed: ConvS5 {listed(window_mse['ConvS5'][:, -1])}; ConvLSTM {listed(window_mse['ConvLSTM'][:, -1])})")

# %%
shown = [CONTEXT, CONTEXT + 4, FRAMES, 2 * FRAMES, HORIZON - 1] if not SMOKE else [CONTEXT, HORIZON - 1]
generated = {label: np.asarray(rollout(ms[0], jnp.asarray(truth[:1, :CONTEXT]), HORIZON - CONTEXT))
             for label, ms in models.items()}
strips = {"truth": truth[0]}
strips.update({label: np.concatenate([truth[0, :CONTEXT], g[0]]) for label, g in generated.items()})
fig, axes = plt.subplots(len(strips), len(shown), figsize=(1.6 * len(shown), 1.7 * len(strips)), squeeze=False)
for row, (label, video) in enumerate(strips.items()):
    for col, t in enumerate(shown):
        axes[row, col].imshow(video[t, :, :, 0], cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
        if row == 0:
            axes[row, col].set_title(f"frame {t}", fontsize=9)
    axes[row, 0].set_ylabel(label, fontsize=9)
savefig(fig, "03_convs5_frames")

# %% [markdown]
# ## 2. Training step time over clip length
# The same two models (the parameter counts above) trained for a few steps on clips of
# other lengths (seed 0's training runs above give the 16-frame point); the time per step is
# the loop's own measurement (`train/steps_per_second`, logged every few steps), the
# median of the intervals after the first one (which includes compilation).

# %%
LENGTHS = pick((4, FRAMES, 64, 128), (FRAMES,))
TIMING_STEPS, TIMING_LOG = 16, 4
seconds_per_step = {}
for label, (mixer, options) in MIXERS.items():
    for frames in LENGTHS:
        name = f"{RUN_NAMES[label]}/seed_{SEEDS[0]}"
        if frames != FRAMES:
            name = f"03_timing_{label.lower()}_{frames}"
            run(video_config(mixer, options, frames, TIMING_STEPS, TIMING_LOG), name)
        rates = curve(name, "train/steps_per_second")[1]
        seconds_per_step[label, frames] = 1.0 / float(np.median(rates[1:] or rates))

print("| frames | ConvS5 s/step | ConvLSTM s/step | ConvLSTM / ConvS5 |")
print("|---|---|---|---|")
for frames in LENGTHS:
    s5, lstm = seconds_per_step["ConvS5", frames], seconds_per_step["ConvLSTM", frames]
    print(f"| {frames} | {s5:.3f} | {lstm:.3f} | {lstm / s5:.2f} |")

fig, ax = plt.subplots(figsize=(5, 3.4))
for label in MIXERS:
    ax.plot(LENGTHS, [seconds_per_step[label, f] for f in LENGTHS], "o-", label=label)
ax.set(xscale="log", yscale="log", xlabel="frames per clip", ylabel="seconds per training step",
       title="training step time (batch 8, 16×16 frames)")
ax.legend()
savefig(fig, "03_convs5_speed")

# %% [markdown]
# ## 3. S5 sanity check: the copy-memory task of notebook 01
# One S5 block (width 32, `state_size` 64 in 4 HiPPO-N blocks) with notebook 01's recipe
# and number of steps.

# %%
DELAY = pick(400, 12)
s5_config = Config(
    model=ModelConfig(mixer="s5", d_model=pick(32, 8), n_layers=1, mlp_ratio=2,
                      mixer_options={"state_size": pick(64, 8), "blocks": pick(4, 1)}),
    task=TaskConfig(name="copy_memory", options={"num_tokens": pick(8, 4), "num_symbols": 8, "delay": DELAY}),
    optimizer=OptimizerConfig(learning_rate=3e-3, ssm_learning_rate=1e-3, warmup_steps=pick(50, 1)),
    train=TrainConfig(steps=pick(1500, 2), batch_size=pick(32, 4), log_every=pick(50, 1), eval_batches=pick(8, 1),
                      checkpoint_every=pick(1500, 2), plot=False),
)
s5_summary = run_seeds(s5_config, "03_s5_copy")
s5_model = trained_model(with_seed(s5_config, SEEDS[0]), f"03_s5_copy/seed_{SEEDS[0]}")
batch = Experiment(s5_config).host_batch("test", 0)
u = s5_model.blocks[0].mixer_norm(s5_model.embed(jnp.asarray(batch["inputs"])))
mixer = s5_model.blocks[0].mixer
y = mixer(u)
gap = relative(step_outputs(mixer, u), y)
print(f"S5 copy memory (delay {DELAY}): test accuracy {pm(s5_summary, 'test/accuracy')} over {len(SEEDS)} "
      f"seed(s) (chance {s5_summary['mean']['chance']:.3f}), {s5_summary['mean']['seconds']:.0f} s per run; "
      f"max |step - parallel| / max|y| = {gap:.1e} (seed {SEEDS[0]})")

# %%
assert gap < 1e-3

# %% [markdown]
# ## What the numbers mean, and how this differs from the papers
#
# * Speed: both models run the same convolutions per frame; ConvS5's recurrence is a
#   diagonal linear scan over frames (parallel in time), ConvLSTM's a sequential
#   nonlinear loop. On 2 CPU cores the scan's advantage is largest for short clips, where
#   the ConvLSTM's per-frame overhead dominates; for long clips both are bound by the
#   same convolution FLOPs, so the ratio tends to 1. The paper's 3× is on GPUs, where the
#   parallel scan has far more parallel hardware to use.
# * Rollout stability: the paper trains on 300 frames with Δ initialized in
#   [1e-3, 0.1]; with ``Re Λ = −½`` a mode decays by ``e^{−Δ·T/2}`` over a clip of T
#   frames, so over 300 frames the fast modes settle and the slow ones carry memory.
#   Over our 16-frame clips the same range leaves every mode unsettled: the model only
#   ever sees the transient, and once its own predictions are fed back past 16 frames
#   the state drifts. `timescale = 300 / T` restores the paper's ratio of time constants
#   to clip length (the ablation shows the difference, over seeds). The sigmoid head
#   keeps fed-back frames in the data's range [0, 1] (the official models use tanh on
#   frames mapped to [−1, 1]; an unbounded head predicted values up to 3 here, which the
#   next step then read as input). The official blocks are post-norm with a GroupNorm
#   ResNet output path (`norm_position="post"`, `output="resnet"`, available as options);
#   this notebook keeps the pre-norm blocks and plain output of the earlier run, so the
#   comparison isolates the two changes above.
# * Initialization: until issue 16, `VideoModel`'s stem had a zero bias, so blank pixels
#   encoded to exactly-zero latents, which the LayerNorms (Jacobian 1/√ε = 1e3 at a zero
#   vector) turned into first gradient norms of ~1e9 (1e12 in `configs/convs5.py`),
#   clipped to 1 by the optimizer. The input embeddings now start with an N(0, 1) bias.
# * The S5 check shows that the parallel scan and the recurrent `step` agree to float32
#   rounding; S5's weaker copy accuracy than S4D-LegS's is at one seed and one learning
#   rate, not a tuned comparison.
