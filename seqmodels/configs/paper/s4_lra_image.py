"""S4 on LRA Image: grayscale CIFAR-10 as 1024 pixels, 10 classes.

Paper: 88.5 % (state-spaces/s4 ``models/s4/experiments.md``, LRA "Image"; the ICLR 2022 paper's first version
reports 87.26). Official config: state-spaces/s4 ``configs/experiment/lra/s4-cifar.yaml``
(commit e757cef57d89e448c413de7325ed5601aceaac13): 6 bidirectional S4 layers of width 512,
state 64, dropout 0.1, lr 0.01, wd 0.05, SSM lr 1e-3, batch 50, 180,000 steps (200 epochs),
18,000 warmup steps, seed 2222, post-norm batch norm (see ``_recipes.py``).

Expected time on one GPU: the official code's ``models/s4/experiments.md`` table (same
commit) gives 2 min (A100) per epoch, so about 7 h on an A100 (200 epochs) for the run; this
implementation has not been timed on a GPU yet.

    seqmodels train paper/s4_lra_image --task.options.data_dir ~/data/cifar10
"""

from seqmodels.configs.paper._recipes import s4_recipe, steps_per_epoch

EPOCH = steps_per_epoch(45_000, 50)


def get_config():
    return s4_recipe("cifar10", {"grayscale": True}, l_max=1024, d_model=512, n_layers=6, state_size=64,
                     learning_rate=0.01, batch_size=50, steps=180_000, warmup_steps=18_000,
                     epoch_steps=EPOCH, dropout=0.1, seed=2222)
