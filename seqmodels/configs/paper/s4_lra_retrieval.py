"""S4 on LRA Retrieval (AAN): do two papers cite each other? 2 × 4,000 bytes, 2 classes.

Paper: 91.0 % (state-spaces/s4 ``models/s4/experiments.md``; ICLR 2022 v1: 87.09). Official config:
state-spaces/s4 ``configs/experiment/lra/s4-aan.yaml`` (commit
e757cef57d89e448c413de7325ed5601aceaac13): 6 bidirectional S4 layers of width 256,
state 4, pre-norm, lr 0.01, wd 0.05, SSM lr 1e-3, batch 64, 50,000 steps (≈ 20 epochs of
147,086 pairs), 5,000 warmup steps, seed 3333. Known difference: the official model
encodes each document separately and classifies ``[u, v, u·v, u−v]``; ours reads the two
documents as one sequence of 8,000 tokens (see also ``_recipes.py``).

Expected time on one GPU: the official code's ``models/s4/experiments.md`` table (same
commit) gives 23 min (A100) per epoch, so about 8 h on an A100 (20 epochs) for the run; this
implementation has not been timed on a GPU yet.

    seqmodels train paper/s4_lra_retrieval --task.options.data_dir ~/data/lra_release/tsv_data
"""

from seqmodels.configs.paper._recipes import s4_recipe, steps_per_epoch


def get_config():
    return s4_recipe("lra_retrieval", {"max_length": 4000}, l_max=8000, d_model=256, n_layers=6, state_size=4,
                     learning_rate=0.01, batch_size=64, steps=50_000, warmup_steps=5_000,
                     epoch_steps=steps_per_epoch(147_086, 64), seed=3333)
