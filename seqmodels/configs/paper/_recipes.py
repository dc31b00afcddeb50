"""Shared pieces of the paper configs: the S4 recipe of state-spaces/s4 and a steps-per-epoch helper.

state-spaces/s4 (commit e757cef57d89e448c413de7325ed5601aceaac13) trains every LRA and
audio model with AdamW (betas 0.9, 0.999), the SSM parameters (A, B, Δ) at their own
learning rate 1e-3 without weight decay, a linear warmup then cosine decay to 0 counted
in steps (``scheduler: cosine_warmup``), no gradient clipping, pooled (mean) decoding,
and a GLU output projection in every S4 layer; ``s4_recipe`` sets those fields, and each
config gives the per-task numbers.

Known differences from the official S4 models, shared by every S4 config here:

* normalization: layer norm in a pre-norm residual block; the official configs use batch
  norm and, for ListOps and Image, post-norm (``prenorm: false``);
* block: our block adds a position-wise MLP (``mlp_ratio``) after the mixer, where the
  official block has only the S4 layer and its GLU output projection (``final_act: glu``,
  the default of ``configs/model/layer/s4.yaml``, which ``output="glu"`` matches);
* pooling: the mean runs over every position, padding included; the official decoder
  averages over the true lengths of the LRA text tasks;
* shared SSM kernels: the official configs set ``n_ssm`` (1 or 2); these configs leave the
  layer's ``n_ssm`` at its default, one ``(Λ, P, B)`` per channel.
"""

from __future__ import annotations

import math

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)


def s4_recipe(task: str, options: dict, *, l_max: int, d_model: int, n_layers: int, state_size: int,
              learning_rate: float, batch_size: int, steps: int, warmup_steps: int, epoch_steps: int,
              dropout: float = 0.0, seed: int = 0, dt_min: float = 1e-3, dt_max: float = 1e-1,
              weight_decay: float = 0.05, mlp_ratio: int = 1) -> Config:
    """An S4 classifier trained as state-spaces/s4's LRA configs; evaluated once per epoch."""
    return Config(
        model=ModelConfig(mixer="s4_bidirectional", d_model=d_model, n_layers=n_layers, dropout=dropout,
                          mlp_ratio=mlp_ratio, pooling="mean",
                          mixer_options={"state_size": state_size, "l_max": l_max, "init": "legs",
                                         "dt_min": dt_min, "dt_max": dt_max, "output": "glu"}),
        task=TaskConfig(name=task, options=options),
        optimizer=OptimizerConfig(learning_rate=learning_rate, ssm_learning_rate=1e-3, weight_decay=weight_decay,
                                  b1=0.9, b2=0.999, warmup_steps=warmup_steps, end_lr_ratio=0.0, clip_norm=0.0),
        train=TrainConfig(steps=steps, batch_size=batch_size, seed=seed, log_every=100, eval_every=epoch_steps,
                          checkpoint_every=epoch_steps, keep_checkpoints=2),
    )
