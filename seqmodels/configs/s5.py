"""S5 ("Simplified State Space Layers for Sequence Modeling", Smith, Warrington &
Linderman, 2023) on arrow pointing, a small spatial-reasoning image task in the
spirit of LRA's Pathfinder (Table 1 of the paper): 16×16 images read as pixel
sequences of length 256, tested also on 24×24 images.

    seqmodels train configs/s5.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="s5", d_model=64, n_layers=4, mixer_options={"state_size": 64, "blocks": 4}),
        task=TaskConfig(name="arrows", options={"size": 16, "test_size": 24}),
        optimizer=OptimizerConfig(learning_rate=4e-3, ssm_learning_rate=1e-3, weight_decay=0.05, warmup_steps=200),
        train=TrainConfig(steps=4000, batch_size=32, log_every=100, eval_every=1000, checkpoint_every=1000),
    )
