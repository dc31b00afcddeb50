"""Sequence parallelism in the training loop: 2-layer models trained on ``mesh.seq=4``
(4 forced CPU devices, every sequence split in 4) have the losses of one device.

Two subprocesses run at once (the device count is fixed when JAX starts, and compiling
dominates): one trains every chosen mixer on one device, the other on ``seq = 4``.
By default a representative subset covers every core scan (softmax: aaren; diagonal,
complex, with an uneven length: s5; dense: plstm; linear attention with a centred
short convolution and flips: hydra; the delta rule with a causal short convolution:
deltanet; a video mixer whose frames are split: convs5); ``SEQMODELS_FULL=1`` runs
every registered mixer that supports sequence parallelism (the heavy test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import full_size
from seqmodels import layers
from seqmodels.train import Config, ConfigError, Experiment, ModelConfig, TaskConfig
from seqmodels.train.config import MeshConfig

REPO = Path(__file__).resolve().parents[1]
STEPS = 3
DEFAULT = ("aaren", "s5", "plstm", "hydra", "deltanet", "convs5")

SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    from seqmodels import layers
    from seqmodels.train import Experiment
    from seqmodels.train.config import Config, MeshConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig

    assert jax.device_count() == 4, jax.devices()
    seq, names, steps = int(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3])

    def task_of(name):
        cls = layers.spec(name).cls
        if cls.spatial_ndim == 2:  # videos (B, 4, 8, 8, 1); 2-D mixers see frames stacked as rows (B, 32, 8, 1)
            return TaskConfig("moving_shapes", {"frames": 4, "size": 8})
        length = 18 if name == "s5" else 16  # 18: the inputs stay whole, the scans pad
        return TaskConfig("mqar", {"seq_len": length, "num_pairs": 3, "vocab_size": 15})

    out = {}
    for name in names:
        config = Config(
            model=ModelConfig(mixer=name, d_model=16, n_layers=2, mlp_ratio=2,
                              mixer_options=layers.spec(name).example_options),
            task=task_of(name), optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=1),
            train=TrainConfig(steps=steps, batch_size=4, eval_batches=1, plot=False),
            mesh=MeshConfig(data=1, seq=seq))
        exp = Experiment(config)
        state, losses = exp.init_state(), []
        for step in range(steps):
            batch = exp.device_batch("train", step)
            state, metrics = exp.train_step(state, batch)
            losses.append(float(metrics["loss"]))
        out[name] = {"losses": losses, "inputs": list(batch["inputs"].sharding.spec),
                     "devices": len(batch["inputs"].sharding.device_set)}
        if name == names[0]:  # the eval step is traced in the context too
            out[name]["test"] = exp.evaluate(state)["test/loss"]
    print("RESULT " + json.dumps(out))
''')


def sequence_parallel_mixers() -> list[str]:
    return [n for n in layers.names() if layers.spec(n).cls.supports_sequence_parallel]


def train_both(names) -> tuple[dict, dict]:
    """Losses of every mixer on one device and on ``seq = 4``, the two runs concurrently."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(seq), ",".join(names), str(STEPS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for seq in (1, 4)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=1200)
        assert proc.returncode == 0, stderr[-4000:]
        line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT "):]))
    return results[0], results[1]


def check_same_losses(names) -> None:
    one, split = train_both(names)
    for name in names:
        assert split[name]["devices"] == 4 and one[name]["devices"] == 1, (name, split[name])
        losses = one[name]["losses"]
        assert len(losses) == STEPS and np.all(np.isfinite(losses)), (name, losses)
        np.testing.assert_allclose(split[name]["losses"], losses, rtol=2e-5, err_msg=name)
    # inputs are split along time where the length divides (16 steps), kept whole where not (18)
    assert split["aaren"]["inputs"] == ["data", "seq"]
    assert split["s5"]["inputs"] == ["data"]
    np.testing.assert_allclose(split[names[0]]["test"], one[names[0]]["test"], rtol=2e-5)


def test_representative_mixers_train_alike_on_split_sequences():
    names = [n for n in DEFAULT if n in sequence_parallel_mixers()]
    assert {"aaren", "s5", "plstm", "hydra", "convs5"} <= set(names)
    check_same_losses(names)


@pytest.mark.heavy
def test_every_mixer_trains_alike_on_split_sequences():
    if not full_size():
        pytest.skip("by default a representative subset trains (above); SEQMODELS_FULL=1 trains every mixer")
    names = sequence_parallel_mixers()
    check_same_losses(["aaren", "s5"] + [n for n in names if n not in ("aaren", "s5")])


def test_mixers_that_cannot_shard_say_so_before_compiling():
    refused = [n for n in layers.names() if not layers.spec(n).cls.supports_sequence_parallel]
    assert {"routing", "routing_bidirectional"} <= set(refused)
    for name in refused:
        config = Config(model=ModelConfig(mixer=name, d_model=8, n_layers=1,
                                          mixer_options=layers.spec(name).example_options),
                        task=TaskConfig("mqar", {"seq_len": 16, "num_pairs": 3, "vocab_size": 15}),
                        mesh=MeshConfig(seq=4))
        with pytest.raises(ConfigError, match=rf"mixer {name!r} cannot split its sequences across devices "
                                              r"\(mesh.seq=4\).*use mesh.seq=1"):
            Experiment(config)
