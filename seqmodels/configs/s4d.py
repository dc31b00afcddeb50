"""S4D ("On the Parameterization and Initialization of Diagonal State Space Models",
Gu, Gupta, Goel & Ré, 2022) on sequential image classification: scikit-learn's 8×8
digits read pixel by pixel (a small stand-in for the paper's sequential CIFAR).
Needs the ``data`` extra (scikit-learn).

    seqmodels train configs/s4d.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="s4d", d_model=64, n_layers=4, mixer_options={"state_size": 64, "init": "lin"}),
        task=TaskConfig(name="digits"),
        optimizer=OptimizerConfig(learning_rate=1e-2, ssm_learning_rate=1e-3, weight_decay=0.05, warmup_steps=100),
        train=TrainConfig(steps=2000, batch_size=32, log_every=100, eval_every=500, checkpoint_every=500),
    )
