"""S5 on LRA ListOps ("Simplified State Space Layers for Sequence Modeling", Smith,
Warrington & Linderman, ICLR 2023).

Paper: 62.15 % test accuracy (Table 1). Official config: lindermanlab/S5
``bin/run_experiments/run_lra_listops.sh`` (commit 3c18fdb6b06414da35e77b94b9cd855f6a95ef17):
8 bidirectional S5 layers of width 128, state 16 in 8 blocks, ``half_glu2`` activation,
C initialized ``lecun_normal``, batch norm, no dropout, batch 50, 40 epochs (1,920 steps
each), lr 0.003 (``lr_factor`` 3 × ``ssm_lr_base`` 0.001), SSM lr 0.001, wd 0.04, 1 epoch of
warmup then cosine, seed 6554595. Known differences: layer norm in a pre-norm block with
an MLP instead of post-batch-norm without one; ``BfastandCdecay`` puts Λ, B, Δ in the fast
SSM group without decay and C with decay, our ``SSMParam`` group is whatever the S5 layer
declares; the mean pools over padding too.

Expected time on one GPU: not listed by the official code and not measured here (76,800
steps of batch 50 at length 2,048); this implementation has not been timed on a GPU yet.

    seqmodels train paper/s5_lra_listops --task.options.data_dir ~/data/lra_release/listops-1000
"""

from seqmodels.configs.paper._recipes import steps_per_epoch
from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig

EPOCH = steps_per_epoch(96_000, 50)


def get_config():
    return Config(
        model=ModelConfig(mixer="s5_bidirectional", d_model=128, n_layers=8, mlp_ratio=1, pooling="mean",
                          mixer_options={"state_size": 16, "blocks": 8, "activation": "half_glu2"}),
        task=TaskConfig(name="lra_listops", options={"max_length": 2048}),
        optimizer=OptimizerConfig(learning_rate=0.003, ssm_learning_rate=0.001, weight_decay=0.04, b1=0.9,
                                  b2=0.999, warmup_steps=EPOCH, clip_norm=0.0),
        train=TrainConfig(steps=40 * EPOCH, batch_size=50, seed=6554595, log_every=100, eval_every=EPOCH,
                          checkpoint_every=EPOCH, keep_checkpoints=2),
    )
