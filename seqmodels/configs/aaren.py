"""Aaren ("Attention as an RNN", Feng et al., 2024) on time-series forecasting, one of
the paper's settings: predict the next value of a sum of sinusoids from its past.

    seqmodels train configs/aaren.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="aaren", d_model=64, n_layers=4, mixer_options={"num_heads": 4}),
        task=TaskConfig(name="forecast", options={"process": "sines", "seq_len": 128, "num_components": 3}),
        optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=100, weight_decay=0.01),
        train=TrainConfig(steps=2000, batch_size=32, log_every=100, eval_every=500, checkpoint_every=500),
    )
