"""DeltaNet ("Parallelizing Linear Transformers with the Delta Rule over Sequence
Length", Yang et al., 2024) with eigenvalues in [−1, 1] ("Unlocking State-Tracking in
Linear RNNs Through Negative Eigenvalues", Grazzi et al., 2025) on the S3 word problem:
the one-Householder-step baseline of ``configs/deltaproduct.py``, same task, sizes and
schedule. One symmetric factor per token has a real spectrum, so a single layer cannot
represent a 3-cycle; DeltaProduct with two steps can (Siems et al., 2025).

    seqmodels train configs/deltanet.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="deltanet", d_model=32, n_layers=1,
                          mixer_options={"num_heads": 2, "allow_neg_eigval": True}),
        task=TaskConfig(name="group_word", options={"group": "s3", "length": 64, "test_lengths": (128, 256, 512)}),
        optimizer=OptimizerConfig(learning_rate=1e-3, weight_decay=0.0, warmup_steps=100),
        train=TrainConfig(steps=4000, batch_size=128, log_every=100, eval_every=1000, checkpoint_every=1000),
    )
