"""LightNet ("You Only Scan Once: Efficient Multi-dimension Sequential Modeling with
LightNet", Qin et al., 2025), linear attention with a data-dependent decay, on
multi-query associative recall, the standard probe of a linear-attention state.

    seqmodels train configs/lightnet.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="lightnet", d_model=64, n_layers=2,
                          mixer_options={"num_heads": 4, "gate_low_rank_dim": 16}),
        task=TaskConfig(name="mqar", options={"seq_len": 64, "num_pairs": 8, "vocab_size": 64}),
        optimizer=OptimizerConfig(learning_rate=1e-3, weight_decay=0.01, warmup_steps=100),
        train=TrainConfig(steps=2000, batch_size=32, log_every=100, eval_every=500, checkpoint_every=500),
    )
