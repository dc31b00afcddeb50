"""Parameter groups: ``SSMParam`` leaves get their own learning rate and no weight decay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seqmodels.layers.common import Dense, SSMParam
from seqmodels.train.config import OptimizerConfig
from seqmodels.train.optim import learning_rate_schedule, make_optimizer, param_labels


class TinySSM(nnx.Module):
    def __init__(self, rngs):
        self.log_decay = SSMParam(jnp.full((4,), -1.0))
        self.proj = Dense(4, 4, rngs=rngs)


def _labels_by_path(params):
    return {"/".join(map(str, path)): label for path, label in nnx.to_flat_state(param_labels(params))}


def test_labels_are_read_off_the_parameter_types():
    _, params, _ = nnx.split(TinySSM(nnx.Rngs(0)), nnx.Param, ...)
    assert _labels_by_path(params) == {"log_decay": "ssm", "proj/bias": "default", "proj/kernel": "default"}


def test_ssm_group_has_its_own_rate_and_no_weight_decay():
    _, params, _ = nnx.split(TinySSM(nnx.Rngs(0)), nnx.Param, ...)
    config = OptimizerConfig(learning_rate=0.0, ssm_learning_rate=0.1, weight_decay=0.5, warmup_steps=0,
                             clip_norm=0.0)
    tx = make_optimizer(config, params, total_steps=10)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    updates = dict(nnx.to_flat_state(updates))
    # Adam's first step moves by lr·sign(g): -0.1 for the SSM parameter, 0 for lr=0 ones
    np.testing.assert_allclose(updates[("log_decay",)][...], -0.1, rtol=1e-5)
    np.testing.assert_array_equal(updates[("proj", "kernel")][...], 0.0)

    # weight decay reaches matrices of the default group only: with g = 0, lr = 1
    config = OptimizerConfig(learning_rate=1.0, ssm_learning_rate=1.0, weight_decay=0.5, warmup_steps=0,
                             clip_norm=0.0)
    tx = make_optimizer(config, params, total_steps=10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates = dict(nnx.to_flat_state(tx.update(zeros, tx.init(params), params)[0]))
    np.testing.assert_allclose(updates[("proj", "kernel")][...], -0.5 * params["proj"]["kernel"][...], rtol=1e-6)
    np.testing.assert_array_equal(updates[("log_decay",)][...], 0.0)
    np.testing.assert_array_equal(updates[("proj", "bias")][...], 0.0)


def test_schedule_warms_up_then_decays():
    config = OptimizerConfig(learning_rate=1.0, warmup_steps=10, end_lr_ratio=0.1)
    schedule = learning_rate_schedule(1.0, config, total_steps=100)
    assert float(schedule(0)) == 0.0 and abs(float(schedule(10)) - 1.0) < 1e-6
    assert abs(float(schedule(100)) - 0.1) < 1e-6
    short = learning_rate_schedule(1.0, config, total_steps=4)       # warmup capped at half the run
    assert abs(float(short(2)) - 1.0) < 1e-6
