"""pLSTM on images ("pLSTM: parallelizable Linear Source Transition Mark networks",
Pöppel et al., 2025): the paper's arrow-pointing extrapolation task, trained on 16×16
images and tested on 24×24 ones, in the paper's vision layout: a ViT-style patch
model whose blocks alternate a P-mode and a D-mode layer (upstream ``block_mode: PD``)
and whose head reads the four corner patches (upstream ``pooling="corners"``).

    seqmodels train configs/plstm2d.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="plstm2d", kind="image", patch_size=2, pooling="corners", d_model=32, n_layers=2,
                          mixer_options={"num_heads": 2}, layer_options=({"mode": "P"}, {"mode": "D"})),
        task=TaskConfig(name="arrows", options={"size": 16, "test_size": 24}),
        optimizer=OptimizerConfig(learning_rate=1e-3, weight_decay=0.05, warmup_steps=100),
        train=TrainConfig(steps=3000, batch_size=32, log_every=100, eval_every=1000, checkpoint_every=1000),
    )
