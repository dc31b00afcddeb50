"""Quickstart: a 2-layer DeltaNet model learns selective copying on CPU.

    seqmodels train configs/quickstart.py

Selective copying ("Mamba", Gu & Dao, 2023): 4 symbols hide among 32 blanks; at
each of 4 markers that follow, the model must emit the next hidden symbol in order
(chance: 1 in 8). DeltaNet (the delta rule, ``n_h = 1`` of DeltaProduct) solves it in a
few hundred steps: test accuracy ≥ 0.95 in about a minute on a 2-core CPU; the last line
prints it against chance. Swap the mixer with ``--model.mixer NAME`` (``seqmodels list``;
``aaren`` needs ``--train.steps 2000 --model.n_layers 4``) or the task with
``--task.name mqar``.
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="deltanet", d_model=64, n_layers=2, mixer_options={"num_heads": 4}),
        task=TaskConfig(name="selective_copy", options={"seq_len": 32, "num_tokens": 4, "num_symbols": 8}),
        optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=50),
        train=TrainConfig(steps=300, batch_size=32, log_every=50, checkpoint_every=150, eval_batches=16),
    )
