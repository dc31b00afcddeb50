"""The Routing Transformer ("Efficient Content-Based Sparse Attention with Routing
Transformers", Roy, Saffar, Vaswani & Grangier, 2021) on multi-query associative
recall: content-based routing lets a query attend to the key it asks for. Its
k-means commitment loss reaches the training loss through the ``aux_loss`` mechanism.

    seqmodels train configs/routing.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="routing", d_model=64, n_layers=2,
                          mixer_options={"num_heads": 4, "window": 16, "num_clusters": 4}),
        task=TaskConfig(name="mqar", options={"seq_len": 64, "num_pairs": 8, "vocab_size": 64}),
        optimizer=OptimizerConfig(learning_rate=1e-3, weight_decay=0.01, warmup_steps=100),
        train=TrainConfig(steps=2000, batch_size=32, log_every=100, eval_every=500, checkpoint_every=500),
    )
