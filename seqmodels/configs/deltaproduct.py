"""DeltaProduct ("DeltaProduct: Improving State-Tracking in Linear RNNs via Householder
Products", Siems et al., 2025) on state tracking in the symmetric group S3: one layer
with two Householder steps per token and eigenvalues in [−1, 1] (a product of two
reflections is a rotation, which a 3-cycle needs), trained at length 64 and tested at
128, 256 and 512 (length extrapolation). ``configs/deltanet.py`` is the one-step
baseline (one layer of it cannot track S3; the paper needs n_h = 2).

    seqmodels train configs/deltaproduct.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="deltaproduct", d_model=32, n_layers=1,
                          mixer_options={"num_heads": 2, "n_householder": 2, "allow_neg_eigval": True,
                                         "use_forget_gate": False}),
        task=TaskConfig(name="group_word", options={"group": "s3", "length": 64, "test_lengths": (128, 256, 512)}),
        optimizer=OptimizerConfig(learning_rate=1e-3, weight_decay=0.0, warmup_steps=100),
        train=TrainConfig(steps=4000, batch_size=128, log_every=100, eval_every=1000, checkpoint_every=1000),
    )
