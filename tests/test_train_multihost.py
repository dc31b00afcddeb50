"""Multi-host training on one machine: 2 processes × 2 CPU devices, joined by
``jax.distributed`` over a localhost coordinator (CPU collectives over gloo), train
with the loss trajectory of 1 process × 4 devices -- on a ``(data=2, seq=2)`` mesh,
so both data and sequence parallelism cross the process boundary. Only process 0
writes logs; checkpoints are written by both (orbax's multi-process mode).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from seqmodels.train import Checkpointer
from seqmodels.train.writers import read_metrics

REPO = Path(__file__).resolve().parents[1]
STEPS = 4

SCRIPT = textwrap.dedent('''
    import json, sys
    from seqmodels.train import train_and_evaluate
    from seqmodels.train.config import Config, MeshConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig

    config = Config(
        model=ModelConfig(mixer="aaren", d_model=16, n_layers=2, mixer_options={"num_heads": 2}, mlp_ratio=2),
        task=TaskConfig("mqar", {"seq_len": 16, "num_pairs": 3, "vocab_size": 15}),
        optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=1),
        train=TrainConfig(steps=int(sys.argv[2]), batch_size=4, log_every=1, checkpoint_every=2, eval_batches=1,
                          plot=False),
        mesh=MeshConfig(data=2, seq=2))
    results = train_and_evaluate(config, sys.argv[1])
    import jax
    print("RESULT " + json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                                  "devices": jax.device_count(), "local": jax.local_device_count(),
                                  "test": results["test/loss"]}))
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(workdir: Path, devices: int, **env) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="1", **env)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(workdir), str(STEPS)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def finish(proc: subprocess.Popen) -> tuple[dict, str]:
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-4000:]
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), stdout


def train_losses(workdir: Path) -> list[float]:
    return [line["train/loss"] for line in read_metrics(workdir / "metrics.jsonl") if "train/loss" in line]


def test_two_processes_match_one(tmp_path):
    address = f"localhost:{free_port()}"
    hosts = [launch(tmp_path / "two_processes", 2, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2",
                    JAX_PROCESS_ID=str(rank)) for rank in range(2)]
    single = launch(tmp_path / "one_process", 4)
    (first, first_out), (second, second_out) = finish(hosts[0]), finish(hosts[1])
    alone, _ = finish(single)

    assert (first["process"], second["process"]) == (0, 1)
    assert first["processes"] == second["processes"] == 2 and alone["processes"] == 1
    assert first["devices"] == second["devices"] == alone["devices"] == 4 and first["local"] == 2
    # only process 0 logs: one line per step in metrics.jsonl, nothing printed by process 1
    assert "config (" in first_out and "config (" not in second_out
    losses = train_losses(tmp_path / "two_processes")
    assert len(losses) == STEPS
    np.testing.assert_allclose(losses, train_losses(tmp_path / "one_process"), rtol=2e-5)
    np.testing.assert_allclose([first["test"], second["test"]], alone["test"], rtol=2e-5)
    with Checkpointer(tmp_path / "two_processes" / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [2, 4]
