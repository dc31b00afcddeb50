"""S4 on LRA Path-X (Pathfinder at 128×128 = 16,384 pixels), 2 classes.

Paper: 96.0 % (state-spaces/s4 ``models/s4/experiments.md``; ICLR 2022 v1: 88.10). Official config:
state-spaces/s4 ``configs/experiment/lra/s4-pathx.yaml`` (commit
e757cef57d89e448c413de7325ed5601aceaac13): 6 bidirectional S4 layers of width 256,
state 64, dt_min 1e-4, pre-norm, lr 0.001, wd 0.05, SSM lr 1e-3, batch 16, 500,000 steps
(50 epochs), 50,000 warmup steps, seed 3333 (see ``_recipes.py`` for differences).

Expected time on one GPU: the official code's ``models/s4/experiments.md`` table (same
commit) gives 56 min (A100) per epoch, so about 47 h on an A100 (50 epochs) for the run;
this implementation has not been timed on a GPU yet.

    seqmodels train paper/s4_lra_pathx --task.options.data_dir ~/data/lra_release
"""

from seqmodels.configs.paper._recipes import s4_recipe, steps_per_epoch


def get_config():
    return s4_recipe("lra_pathfinder", {"resolution": 128}, l_max=16384, d_model=256, n_layers=6, state_size=64,
                     learning_rate=0.001, batch_size=16, steps=500_000, warmup_steps=50_000,
                     epoch_steps=steps_per_epoch(160_000, 16), seed=3333, dt_min=1e-4)
