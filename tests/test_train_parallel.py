"""Data parallelism: 4 forced CPU devices train with the same loss trajectory as 1 device
(and as 4 devices with gradient accumulation). Runs in its own process, since the device
count is fixed when JAX starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    from seqmodels.train import Experiment, apply_overrides, train_and_evaluate
    from seqmodels.train.config import Config, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig
    from seqmodels.train.writers import read_metrics

    assert jax.device_count() == 4, jax.devices()
    base = Config(
        model=ModelConfig(mixer="aaren", d_model=16, n_layers=1, mixer_options={"num_heads": 2}, mlp_ratio=2),
        task=TaskConfig("mqar", {"seq_len": 16, "num_pairs": 3, "vocab_size": 15}),
        optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=2),
        train=TrainConfig(steps=6, batch_size=8, log_every=1, checkpoint_every=0, eval_batches=1, plot=False))
    runs = {"1 device": {"mesh.data": 1}, "4 devices": {"mesh.data": 4},
            "4 devices, 2 micro-batches": {"mesh.data": 4, "optimizer.accumulation_steps": 2}}
    out = {}
    for name, overrides in runs.items():
        config = apply_overrides(base, overrides)
        batch = Experiment(config).device_batch("train", 0)
        workdir = sys.argv[1] + "/" + name.replace(" ", "_").replace(",", "")
        results = train_and_evaluate(config, workdir)
        out[name] = {"devices": len(batch["inputs"].sharding.device_set),
                     "losses": [l["train/loss"] for l in read_metrics(workdir + "/metrics.jsonl") if "train/loss" in l],
                     "test": results["test/loss"]}
    print("RESULT " + json.dumps(out))
''')


def test_four_devices_match_one(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    runs = json.loads(line[len("RESULT "):])
    one, four, accumulated = runs["1 device"], runs["4 devices"], runs["4 devices, 2 micro-batches"]
    assert (one["devices"], four["devices"], accumulated["devices"]) == (1, 4, 4)
    assert len(one["losses"]) == 6 and one["losses"][-1] < one["losses"][0]
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(accumulated["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose([four["test"], accumulated["test"]], one["test"], rtol=1e-4)
