"""pLSTM ("pLSTM: parallelizable Linear Source Transition Mark networks", Pöppel et al.,
2025) on sequences: state tracking in the symmetric group S3 (group word problems),
trained at length 16 and tested at 64.

    seqmodels train configs/plstm.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="plstm", d_model=64, n_layers=2, mixer_options={"num_heads": 4, "transition_dim": 4}),
        task=TaskConfig(name="group_word", options={"group": "s3", "length": 16, "test_lengths": (64,)}),
        optimizer=OptimizerConfig(learning_rate=1e-3, weight_decay=0.01, warmup_steps=100),
        train=TrainConfig(steps=3000, batch_size=32, log_every=100, eval_every=1000, checkpoint_every=1000),
    )
