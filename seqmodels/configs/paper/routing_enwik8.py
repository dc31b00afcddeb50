"""Routing Transformer on enwik8 byte-level language modelling ("Efficient Content-Based
Sparse Attention with Routing Transformers", Roy, Saffar, Vaswani & Grangier, TACL 2021).

Paper: about 0.99 bits per byte on the enwik8 test set (not re-checked against the
paper's table). Official config: google-research/google-research ``routing_transformer``
uses 16 clusters × 512-token windows for enwik8 at 8,192 tokens (not re-checked against
a commit); its depth, width, heads, batch and schedule were not available to us, so those
below are our choice (12 layers of width 512, 8 heads of
which 4 local, batch 8, 200,000 steps, lr 5e-4), a known difference, as is the absence of
the relative position encodings. The evaluation reports ``test/bits_per_byte``.

Expected time on one GPU: not measured (200,000 steps of batch 8 × 8,192 bytes); this
implementation has not been timed on a GPU yet.

    seqmodels train paper/routing_enwik8 --task.options.data_dir ~/data/enwik8
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config():
    return Config(
        model=ModelConfig(mixer="routing", d_model=512, n_layers=12, mlp_ratio=4, dropout=0.1,
                          mixer_options={"num_heads": 8, "local_heads": 4, "window": 512, "num_clusters": 16}),
        task=TaskConfig(name="text_bytes", options={"file": "enwik8", "seq_len": 8192}),
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, b1=0.9, b2=0.98, warmup_steps=4_000,
                                  clip_norm=1.0),
        train=TrainConfig(steps=200_000, batch_size=8, seed=0, log_every=100, eval_every=10_000,
                          checkpoint_every=2_000, keep_checkpoints=2, eval_batches=8),
    )
