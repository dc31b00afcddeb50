"""S4 on LRA Pathfinder (32×32 = 1,024 pixels): are the two dots connected? 2 classes.

Paper: 94.0 % (state-spaces/s4 ``models/s4/experiments.md``; ICLR 2022 v1: 86.05). Official config:
state-spaces/s4 ``configs/experiment/lra/s4-pathfinder.yaml`` (commit
e757cef57d89e448c413de7325ed5601aceaac13): 6 bidirectional S4 layers of width 256,
state 64, pre-norm, lr 0.004, wd 0.05, SSM lr 1e-3, batch 64, 500,000 steps (200 epochs
of 160,000), 50,000 warmup steps, seed 3333 (see ``_recipes.py`` for differences).
Path-X is ``paper/s4_lra_pathx``.

Expected time on one GPU: the official code's ``models/s4/experiments.md`` table (same
commit) gives 7 min (A100) per epoch, so about 23 h on an A100 (200 epochs) for the run;
this implementation has not been timed on a GPU yet.

    seqmodels train paper/s4_lra_pathfinder --task.options.data_dir ~/data/lra_release
"""

from seqmodels.configs.paper._recipes import s4_recipe, steps_per_epoch


def get_config():
    return s4_recipe("lra_pathfinder", {"resolution": 32}, l_max=1024, d_model=256, n_layers=6, state_size=64,
                     learning_rate=0.004, batch_size=64, steps=500_000, warmup_steps=50_000,
                     epoch_steps=steps_per_epoch(160_000, 64), seed=3333)
