"""S4 ("Efficiently Modeling Long Sequences with Structured State Spaces", Gu, Goel &
Ré, 2022) on ListOps, the first Long Range Arena task of the paper (Table 4), at a
CPU-friendly length of 128 tokens (LRA: 2,000). As in the paper's recipe, the SSM
parameters (Δ, A, B) get their own smaller learning rate and no weight decay.

    seqmodels train configs/s4.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="s4", d_model=64, n_layers=4, mixer_options={"state_size": 64, "l_max": 128},
                          dropout=0.0),
        task=TaskConfig(name="listops", options={"max_depth": 4, "max_args": 5, "max_length": 128}),
        optimizer=OptimizerConfig(learning_rate=4e-3, ssm_learning_rate=1e-3, weight_decay=0.05, warmup_steps=200),
        train=TrainConfig(steps=5000, batch_size=32, log_every=100, eval_every=1000, checkpoint_every=1000),
    )
