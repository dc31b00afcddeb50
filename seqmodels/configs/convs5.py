"""ConvS5 ("Convolutional State Space Models for Long-Range Spatiotemporal Modeling",
Smith, De Mello, Kautz, Linderman & Byeon, 2023) on moving shapes, a small stand-in
for the paper's Moving-MNIST: classify the motion of a shape across 8 frames of
12×12 pixels; the mixer scans time with convolutional state transitions over space.
ConvS5's Δ range is scaled to the 8-frame clips (``timescale = 300 / 8``: the paper's
[1e-3, 0.1] is for 300-frame clips). A classifier has no frame head to bound; the video
configs (``paper/convs5_moving_mnist.py``, notebook 03) use ``model.output="sigmoid"``.

    seqmodels train configs/convs5.py
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


FRAMES = 8


def get_config() -> Config:
    return Config(
        model=ModelConfig(mixer="convs5", d_model=32, n_layers=2,
                          mixer_options={"state_size": 32, "timescale": 300 / FRAMES}),
        task=TaskConfig(name="moving_shapes", options={"frames": FRAMES, "size": 12, "label": "both"}),
        optimizer=OptimizerConfig(learning_rate=3e-3, ssm_learning_rate=1e-3, weight_decay=0.05, warmup_steps=100),
        train=TrainConfig(steps=2000, batch_size=16, log_every=100, eval_every=500, checkpoint_every=500),
    )
