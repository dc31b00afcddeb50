"""ConvS5 on Moving MNIST, trained on 300-frame videos ("Convolutional State Space Models
for Long-Range Spatiotemporal Modeling", Smith, De Mello, Kautz, Linderman & Byeon,
NeurIPS 2023).

Paper: Table 1 reports frame quality (PSNR / SSIM / LPIPS) of 100 → 400 and 100 → 800
frame rollouts of a model trained on 300 frames; no number there is an MSE, so the
teacher-forced test MSE this loop reports is not comparable to it (roll out with
``seqmodels.models.video.rollout`` to compare). Official config: NVlabs/ConvSSM
``configs/Moving-MNIST/300_train_len/mnist_convS5_novq.yaml`` (commit
cb08bb3d5eef4f7438a4d76f4c24007beecd66db): 8 ConvS5 layers of width 256 on a 16×16 latent
(encoder 64 → 16), state 256 in 1 block, eigenvalues clipped, 3×3 B/C/D kernels,
Δ in [1e-3, 1e-1], batch 8, lr 1e-3 with 5,000 warmup steps and cosine over 300,000
steps, wd 1e-5, seed 1. As there: post-LayerNorm blocks with per-layer skips
(``norm_position="post"``), the GroupNorm "resnet" output path with 32 groups
(``output_path="resnet"``), the Δ range for 300-frame training (``timescale=1``).
Known differences: their loss is 0.5·MSE + 0.5·L1 on the decoder's logits, with tanh applied
when sampling, on frames mapped to [−1, 1]; ours is MSE after a sigmoid on frames in
[0, 1] (the same bounded head up to an affine map of the range); their encoder/decoder
are ResNets with group norm, ours our conv encoder/decoder; their blocks have no MLP,
ours keep one; their training videos are a fixed generated set, ours are generated per
batch from the same MNIST digits.

Expected time on one GPU: not measured (300,000 steps of batch 8 × 300 frames; the official
runs used several V100s); this implementation has not been timed on a GPU yet.

    seqmodels train paper/convs5_moving_mnist --task.options.data_dir ~/data/moving_mnist
"""

from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config():
    return Config(
        model=ModelConfig(mixer="convs5", kind="video", d_model=256, n_layers=8, n_down=2, mlp_ratio=2,
                          norm_position="post", output="sigmoid",
                          mixer_options={"state_size": 256, "blocks": 1, "clip_eigs": True, "kernel_b": 3,
                                         "kernel_c": 3, "kernel_d": 3, "dt_min": 1e-3, "dt_max": 1e-1,
                                         "timescale": 1.0, "output_path": "resnet", "groups": 32}),
        task=TaskConfig(name="moving_mnist", options={"frames": 300, "num_digits": 2}),
        optimizer=OptimizerConfig(learning_rate=1e-3, ssm_learning_rate=1e-3, weight_decay=1e-5, b1=0.9,
                                  b2=0.999, warmup_steps=5_000, clip_norm=0.0),
        train=TrainConfig(steps=300_000, batch_size=8, seed=1, log_every=100, eval_every=10_000,
                          checkpoint_every=2_000, keep_checkpoints=2),
    )
