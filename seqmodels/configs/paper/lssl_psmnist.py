"""LSSL on permuted sequential MNIST (psMNIST: 784 pixels under one fixed permutation).

Paper: 98.76 % test accuracy ("Combining Recurrent, Convolutional, and Continuous-time
Models with Linear State-Space Layers", Gu et al., NeurIPS 2021, pMNIST). Official
config: the layer follows state-spaces/s4 ``configs/model/layer/lssl.yaml`` (commit
e757cef57d89e448c413de7325ed5601aceaac13): width 256, HiPPO-LegS ``A``, 1 channel, Δ in
[1e-3, 1e-1], ``A`` at lr 1e-4 and Δ at lr 1e-3 (both in our SSM group at 1e-4: one SSM
learning rate), and the data its ``pipeline/mnist.yaml`` (10 % validation, seed 42).
Known differences: the depth, batch, epochs and main learning rate are not in that config
(the paper trained for far longer); ours are 6 layers, batch 50, 100 epochs, lr 0.002
with 1 epoch of warmup and cosine decay; the permutation is ours (fixed seed 92916).

Expected time on one GPU: not measured (108,000 steps of batch 50 at length 784); this
implementation has not been timed on a GPU yet.

    seqmodels train paper/lssl_psmnist --task.options.data_dir ~/data/mnist
"""

from seqmodels.configs.paper._recipes import steps_per_epoch
from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig

EPOCH = steps_per_epoch(54_000, 50)


def get_config():
    return Config(
        model=ModelConfig(mixer="lssl", d_model=256, n_layers=6, mlp_ratio=1, dropout=0.1, pooling="mean",
                          mixer_options={"state_size": 256, "measure": "legs", "channels": 1,
                                         "dt_min": 1e-3, "dt_max": 1e-1}),
        task=TaskConfig(name="mnist", options={"permute": True}),
        optimizer=OptimizerConfig(learning_rate=0.002, ssm_learning_rate=1e-4, weight_decay=0.01, b1=0.9,
                                  b2=0.999, warmup_steps=EPOCH, clip_norm=0.0),
        train=TrainConfig(steps=100 * EPOCH, batch_size=50, seed=0, log_every=100, eval_every=EPOCH,
                          checkpoint_every=EPOCH, keep_checkpoints=2),
    )
