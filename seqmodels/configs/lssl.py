"""LSSL ("Combining Recurrent, Convolutional, and Continuous-time Models with Linear
State-Space Layers", Gu et al., 2021) on time-series regression, as in the paper's
BIDMC vital-signs experiments: one-step forecasting of random AR(4) processes.

    seqmodels train configs/lssl.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="lssl", d_model=64, n_layers=2, mixer_options={"state_size": 64}),
        task=TaskConfig(name="forecast", options={"process": "ar", "order": 4, "seq_len": 128}),
        optimizer=OptimizerConfig(learning_rate=4e-3, ssm_learning_rate=1e-3, weight_decay=0.01, warmup_steps=100),
        train=TrainConfig(steps=2000, batch_size=32, log_every=100, eval_every=500, checkpoint_every=500),
    )
