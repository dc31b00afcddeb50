"""Resume: a CLI run killed with SIGKILL and restarted with the same command ends with
parameters (and optimizer state) bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from seqmodels.train import load_config, load_state
from seqmodels.train.writers import read_metrics

REPO = Path(__file__).resolve().parents[1]
STEPS = 150
CONFIG = '''
from seqmodels.train.config import *

def get_config():
    return Config(
        model=ModelConfig(mixer="aaren", d_model=16, n_layers=1, mixer_options={"num_heads": 2},
                          mlp_ratio=2, dropout=0.1),
        task=TaskConfig("selective_copy", {"seq_len": 12, "num_tokens": 3, "num_symbols": 4}),
        optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=5),
        train=TrainConfig(steps=%d, batch_size=8, log_every=10, checkpoint_every=10, keep_checkpoints=2,
                          eval_batches=1, plot=False),
    )
''' % STEPS


def _command(config: Path, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "seqmodels", "train", str(config), "--workdir", str(workdir)]


def _env() -> dict[str, str]:
    return dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", JAX_PLATFORMS="cpu")


def _finished_checkpoints(workdir: Path) -> list[int]:
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit()) if root.is_dir() else []


def test_sigkill_then_rerun_is_bit_identical(tmp_path):
    config_path = tmp_path / "resume_config.py"
    config_path.write_text(CONFIG)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"

    # the interrupted run: SIGKILL as soon as a checkpoint is on disk
    proc = subprocess.Popen(_command(config_path, interrupted), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not _finished_checkpoints(interrupted) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {proc.stderr.read()}"
    killed_at = _finished_checkpoints(interrupted)
    assert killed_at and max(killed_at) < STEPS, f"killed too late to test resuming: {killed_at}"

    # the same command again resumes and finishes; meanwhile an uninterrupted run
    resumed = subprocess.Popen(_command(config_path, interrupted), cwd=REPO, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    full = subprocess.run(_command(config_path, reference), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    resumed_out = resumed.communicate(timeout=300)[0]
    assert full.returncode == 0, full.stderr[-3000:]
    assert resumed.returncode == 0, resumed_out[-3000:]
    assert "resuming from the checkpoint of step" in resumed_out

    config = load_config(config_path)
    (step_a, state_a), (step_b, state_b) = load_state(config, reference), load_state(config, interrupted)
    assert step_a == step_b == STEPS
    leaves_a, leaves_b = (jax.tree_util.tree_flatten_with_path(s)[0] for s in (state_a, state_b))
    for (path, a), (_, b) in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"{jax.tree_util.keystr(path)} differs"

    # the metrics log has each step once, with the uninterrupted run's values
    losses = [[(line["step"], line["train/loss"]) for line in read_metrics(d / "metrics.jsonl") if "train/loss" in line]
              for d in (reference, interrupted)]
    assert losses[0] == losses[1] and [s for s, _ in losses[0]] == list(range(10, STEPS + 1, 10))
