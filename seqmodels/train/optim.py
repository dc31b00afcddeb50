"""The optimizer: AdamW with linear warmup and cosine decay, gradient clipping, and
two parameter groups.

Parameters that layers declare as ``seqmodels.layers.common.SSMParam`` form the group
``"ssm"``: their own learning rate (``ssm_learning_rate``, same schedule) and no
weight decay. All other parameters form ``"default"``: ``learning_rate`` and weight
decay on matrices only (rank ≥ 2: kernels and embeddings; not biases or norm scales).

Labels are computed once from the model's parameter state by type, not by a label
function at update time: optax calls such a function on plain arrays, where the
``SSMParam`` type is gone, and it would silently put every parameter in "default".
Gradient accumulation happens inside the train step (``loop.py``), not here.
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

from ..layers.common import SSMParam
from .config import OptimizerConfig

GROUPS = ("default", "ssm")


def _map_variables(fn, params: nnx.State):
    return jax.tree.map(fn, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def param_labels(params: nnx.State) -> nnx.State:
    """``"ssm"`` for every ``SSMParam`` leaf of ``params``, ``"default"`` for the rest."""
    return _map_variables(lambda v: "ssm" if isinstance(v, SSMParam) else "default", params)


def decay_mask(params: nnx.State) -> nnx.State:
    """True for parameters that get weight decay: rank ≥ 2 (kernels, embeddings)."""
    return _map_variables(lambda v: v[...].ndim >= 2, params)


def learning_rate_schedule(peak: float, config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps`` (at most half the run), then
    cosine decay to ``peak · end_lr_ratio`` at ``total_steps``."""
    warmup = min(config.warmup_steps, total_steps // 2)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, 1),
                                              end_value=peak * config.end_lr_ratio)


def make_optimizer(config: OptimizerConfig, params: nnx.State, total_steps: int) -> optax.GradientTransformation:
    """The optimizer for ``params`` (the model's ``nnx.Param`` state) over ``total_steps``."""
    def adamw(peak: float, weight_decay: float, mask):
        return optax.adamw(learning_rate_schedule(peak, config, total_steps), b1=config.b1, b2=config.b2,
                           eps=config.eps, weight_decay=weight_decay, mask=mask)

    groups = optax.multi_transform(
        {"default": adamw(config.learning_rate, config.weight_decay, decay_mask(params)),
         "ssm": adamw(config.ssm_learning_rate, 0.0, None)},
        param_labels(params))
    clip = optax.clip_by_global_norm(config.clip_norm) if config.clip_norm > 0 else optax.identity()
    return optax.chain(clip, groups)
