"""S4 on sequential CIFAR-10 (sCIFAR): 1024 RGB pixels in raster order, 10 classes.

Paper: 91.1 % test accuracy ("Efficiently Modeling Long Sequences with Structured State
Spaces", Gu, Goel & Ré, ICLR 2022, sequential CIFAR-10).
Official config: state-spaces/s4 ``configs/experiment/cifar/s4-cifar.yaml`` (commit
e757cef57d89e448c413de7325ed5601aceaac13): 6 bidirectional S4 layers of width 512, dropout
0.1, AdamW lr 0.01, wd 0.05, SSM lr 1e-3, batch 50, 200 epochs = 180,000 steps of the
45,000 training images (5,000 held out), 1 epoch of warmup then cosine, seed 2222.
Known differences: see ``_recipes.py`` (post-norm, ``n_ssm: 2``).

Expected time on one GPU: not listed by the official code; the model and data match LRA
Image's (2 min per epoch on an A100 in the official table), so about 7 h on an A100 for 200
epochs; this implementation has not been timed on a GPU yet.
Data: the CIFAR-10 python version (README, "Reproduce a paper").

    seqmodels train paper/s4_scifar --task.options.data_dir ~/data/cifar10
"""

from seqmodels.configs.paper._recipes import s4_recipe, steps_per_epoch

EPOCH = steps_per_epoch(45_000, 50)


def get_config():
    return s4_recipe("cifar10", {"grayscale": False}, l_max=1024, d_model=512, n_layers=6, state_size=64,
                     learning_rate=0.01, batch_size=50, steps=200 * EPOCH, warmup_steps=EPOCH,
                     epoch_steps=EPOCH, dropout=0.1, seed=2222)
