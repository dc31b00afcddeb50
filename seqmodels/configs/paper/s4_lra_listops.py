"""S4 on LRA ListOps: nested list operations of up to 2,000 tokens, 10 classes.

Paper: 59.5 % (state-spaces/s4 ``models/s4/experiments.md``; ICLR 2022 v1: 58.35). Official config:
state-spaces/s4 ``configs/experiment/lra/s4-listops.yaml`` (commit
e757cef57d89e448c413de7325ed5601aceaac13): 6 bidirectional S4 layers of width 256,
state 4, no dropout, lr 0.01, wd 0.05, SSM lr 1e-3, batch 32, 120,000 steps (40 epochs
of 96,000), 12,000 warmup steps, seed 3333, post-norm batch norm (see ``_recipes.py``).

Expected time on one GPU: the official code's ``models/s4/experiments.md`` table (same
commit) gives 15 min (T4) per epoch, so about 10 h on a T4 (40 epochs) for the run; this
implementation has not been timed on a GPU yet.

    seqmodels train paper/s4_lra_listops --task.options.data_dir ~/data/lra_release/listops-1000
"""

from seqmodels.configs.paper._recipes import s4_recipe, steps_per_epoch


def get_config():
    return s4_recipe("lra_listops", {"max_length": 2048}, l_max=2048, d_model=256, n_layers=6, state_size=4,
                     learning_rate=0.01, batch_size=32, steps=120_000, warmup_steps=12_000,
                     epoch_steps=steps_per_epoch(96_000, 32), seed=3333)
