"""Hydra ("Hydra: Bidirectional State Space Models Through Generalized Matrix Mixers",
Hwang, Lahoti, Dao & Gu, 2024), a bidirectional (quasiseparable) mixer, on ListOps: a
pooled classification of a whole sequence, where both directions help.

    seqmodels train configs/hydra.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="hydra", d_model=64, n_layers=4,
                          mixer_options={"d_state": 16, "headdim": 16, "expand": 2, "d_conv": 7}),
        task=TaskConfig(name="listops", options={"max_depth": 4, "max_args": 5, "max_length": 128}),
        optimizer=OptimizerConfig(learning_rate=2e-3, ssm_learning_rate=1e-3, weight_decay=0.05, warmup_steps=200),
        train=TrainConfig(steps=5000, batch_size=32, log_every=100, eval_every=1000, checkpoint_every=1000),
    )
