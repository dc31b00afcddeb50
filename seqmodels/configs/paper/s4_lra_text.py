"""S4 on LRA Text: IMDB reviews as byte sequences of 4,096, 2 classes.

Paper: 86.5 % (state-spaces/s4 ``models/s4/experiments.md``; ICLR 2022 v1: 76.02). Official config:
state-spaces/s4 ``configs/experiment/lra/s4-imdb.yaml`` (commit
e757cef57d89e448c413de7325ed5601aceaac13): 6 bidirectional S4 layers of width 256,
state 4, pre-norm, lr 0.01, wd 0.05, SSM lr 1e-3, batch 16, 50,000 steps (32 epochs of
25,000), 5,000 warmup steps, seed 3333. Known difference: the official vocabulary is the
characters seen ≥ 15 times in training (``min_freq``), ours every byte (see also ``_recipes.py``).

Expected time on one GPU: the official code's ``models/s4/experiments.md`` table (same
commit) gives 17 min (T4) per epoch, so about 9 h on a T4 (32 epochs) for the run; this
implementation has not been timed on a GPU yet.

    seqmodels train paper/s4_lra_text --task.options.data_dir ~/data/imdb
"""

from seqmodels.configs.paper._recipes import s4_recipe, steps_per_epoch


def get_config():
    return s4_recipe("lra_text", {"max_length": 4096}, l_max=4096, d_model=256, n_layers=6, state_size=4,
                     learning_rate=0.01, batch_size=16, steps=50_000, warmup_steps=5_000,
                     epoch_steps=steps_per_epoch(25_000, 16), seed=3333)
