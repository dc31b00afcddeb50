"""Faults around resuming: changed configs, damaged checkpoints, a full disk, and the
logged means of the training metrics. Every run is tiny (4 to 8 steps of a 1-layer
model); the runs that resume copy one base run."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.path import atomicity

from seqmodels import layers
from seqmodels.train import (Checkpointer, Config, ConfigError, ModelConfig, OptimizerConfig, TaskConfig,
                             TrainConfig, apply_overrides, cli, load_state, loop, resume, train_and_evaluate)
from seqmodels.train.checkpoint import CheckpointSaveError, DamagedCheckpointError, DamagedCheckpointWarning
from seqmodels.train.writers import read_metrics

BASE_STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
    """Cheaper XLA compiles (numerics are not what these tests check)."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def small_config(**train) -> Config:
    return Config(model=ModelConfig(mixer="aaren", d_model=8, n_layers=1, mixer_options={"num_heads": 2}, mlp_ratio=1),
                  task=TaskConfig("copy_memory", {"num_tokens": 2, "delay": 3}),
                  optimizer=OptimizerConfig(warmup_steps=0),
                  train=TrainConfig(**{"steps": BASE_STEPS, "batch_size": 4, "log_every": 1, "eval_batches": 1,
                                       "checkpoint_every": 2, "plot": False, **train}))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished run of ``small_config()`` with checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("base") / "run"
    train_and_evaluate(small_config(), workdir)
    return workdir


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    """A copy of the base run to resume or damage."""
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def checkpoint_steps(workdir: Path) -> list[int]:
    with Checkpointer(workdir / "checkpoints") as ckpt:
        return ckpt.all_steps()


# ---------------------------------------------------------------------------------
# 1. resuming with another config


def test_config_changes_complete_options_with_their_defaults():
    config = small_config()
    default_heads = layers.spec("aaren").options()["num_heads"].default
    explicit = apply_overrides(config, {"model.mixer_options.num_heads": default_heads})
    implicit = dataclasses.replace(config, model=dataclasses.replace(config.model, mixer_options={}))
    assert resume.config_changes(explicit, implicit) == []     # naming a default is no change
    other = apply_overrides(config, {"task.options.delay": 5, "train.seed": 3, "train.log_every": 7})
    assert [(c.key, c.old, c.new) for c in resume.config_changes(config, other)] == [
        ("task.options.delay", 3, 5), ("train.seed", 0, 3), ("train.log_every", 1, 7)]
    assert [(c.key, c.old, c.new) for c in resume.config_changes(implicit, config)] == [
        ("model.mixer_options.num_heads", default_heads, 2)]


def test_resume_refuses_changes_of_the_trajectory_naming_each_key(run_copy, monkeypatch):
    saved = (run_copy / "config.json").read_text()
    monkeypatch.setattr(loop, "Experiment", lambda config: pytest.fail("built an experiment before refusing"))
    changed = apply_overrides(small_config(), {"train.seed": 1, "optimizer.learning_rate": 2e-3,
                                               "train.batch_size": 8, "train.steps": 6})
    with pytest.raises(ConfigError) as refused:
        train_and_evaluate(changed, run_copy, allow_changes=["train.batch_size"])
    message = str(refused.value)
    assert "train.seed: 0 -> 1" in message and "optimizer.learning_rate: 0.001 -> 0.002" in message
    assert "train.steps" not in message and "train.batch_size" not in message   # free, and allowed
    assert "--allow-change" in message
    assert (run_copy / "config.json").read_text() == saved
    assert not (run_copy / "config_changes.jsonl").exists()

    with pytest.raises(ConfigError, match="names no config key: 'train.lerning_rate'"):
        train_and_evaluate(small_config(), run_copy, allow_changes=["train.lerning_rate"])


def test_a_workdir_without_checkpoints_starts_over_with_any_config(tmp_path, monkeypatch):
    resume.record_config(small_config(), tmp_path, [], None)   # a run that stopped before its first save

    class Built(Exception):
        pass

    def experiment(config):
        raise Built
    monkeypatch.setattr(loop, "Experiment", experiment)
    with pytest.raises(Built):                                  # no refusal: nothing to continue
        train_and_evaluate(small_config(seed=3, batch_size=8), tmp_path)


def test_allowed_and_free_changes_resume_and_are_recorded(run_copy, capsys):
    changed = apply_overrides(small_config(), {"optimizer.learning_rate": 2e-3, "train.steps": 6})
    train_and_evaluate(changed, run_copy, allow_changes=["optimizer"])
    assert "resuming from the checkpoint of step 4" in capsys.readouterr().out
    records = [json.loads(line) for line in (run_copy / "config_changes.jsonl").read_text().splitlines()]
    assert [(r["step"], r["key"], r["old"], r["new"], r["trajectory"]) for r in records] == [
        (4, "optimizer.learning_rate", 0.001, 0.002, True), (4, "train.steps", 4, 6, False)]
    saved = json.loads((run_copy / "config.json").read_text())
    assert saved["optimizer"]["learning_rate"] == 0.002 and saved["train"]["steps"] == 6
    assert checkpoint_steps(run_copy)[-1] == 6
    # resuming again with the now saved config changes nothing
    train_and_evaluate(changed, run_copy)
    assert len((run_copy / "config_changes.jsonl").read_text().splitlines()) == 2


def test_cli_refuses_a_changed_seed_in_one_line_and_passes_allow_change(run_copy, monkeypatch, capsys):
    config_json = str(run_copy / "config.json")
    assert cli.main(["train", config_json, "--workdir", str(run_copy), "--train.seed", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("seqmodels: error:") and "train.seed: 0 -> 5" in err

    seen = {}
    monkeypatch.setattr(loop, "train_and_evaluate", lambda config, workdir, **kwargs: seen.update(kwargs))
    argv = ["train", config_json, "--workdir", str(run_copy), "--allow-change", "train.seed",
            "--train.seed", "5", "--allow-change=optimizer"]
    assert cli.main(argv) == 0
    assert seen["allow_changes"] == ["train.seed", "optimizer"]


# ---------------------------------------------------------------------------------
# 2. damaged checkpoints


def damage(workdir: Path, step: int, how: str = "truncate") -> None:
    """Truncate every data file of checkpoint ``step`` to half its size, or overwrite its
    second half with other bytes."""
    files = [p for p in (workdir / "checkpoints" / str(step)).rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, "no data files found in the checkpoint"
    for path in files:
        data = path.read_bytes()
        half = data[:len(data) // 2]
        path.write_bytes(half if how == "truncate" else half + bytes(255 - b for b in data[len(half):]))


def test_a_damaged_latest_checkpoint_is_skipped_with_a_warning(run_copy, capsys):
    damage(run_copy, 4)
    expected = r"checkpoint of step 4 cannot be restored .*restored step 2 instead; the damaged folder is .*_damaged/4"
    with pytest.warns(DamagedCheckpointWarning, match=expected):
        train_and_evaluate(small_config(steps=6), run_copy)
    assert "resuming from the checkpoint of step 2" in capsys.readouterr().out
    assert (run_copy / "checkpoints_damaged" / "4").is_dir()
    assert checkpoint_steps(run_copy) == [2, 4, 6]             # step 4 saved again
    logged = [line["step"] for line in read_metrics(run_copy / "metrics.jsonl") if "train/loss" in line]
    assert logged == list(range(1, 7))


def test_no_usable_checkpoint_is_one_error_naming_each(run_copy, monkeypatch):
    unraisable = []   # tensorstore's "Event loop is closed" errors after a failed read stay quiet
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    damage(run_copy, 4)
    with pytest.warns(DamagedCheckpointWarning, match="step 4"):
        step, _ = load_state(small_config(), run_copy)          # evaluation falls back too, moving nothing
    assert step == 2 and (run_copy / "checkpoints" / "4").is_dir()
    damage(run_copy, 2, how="overwrite")
    with pytest.raises(DamagedCheckpointError) as error:
        load_state(small_config(), run_copy)
    message = str(error.value)
    assert "no checkpoint in" in message and "step 4 (ValueError" in message and "step 2 (ValueError" in message
    assert len(message) < 1500                                  # no tensorstore spec dumps
    assert unraisable == []


# ---------------------------------------------------------------------------------
# 3. a full disk while saving


@pytest.fixture
def disk_full_at_step_4(monkeypatch):
    """orbax's background save of step 4 fails as on a full disk (when it renames the
    finished temporary folder into place)."""
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def failing_finalize(self, *args, **kwargs):
        if self.get_final().name == "4":
            raise OSError(errno.ENOSPC, "No space left on device")
        return await finalize(self, *args, **kwargs)
    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", failing_finalize)
    return monkeypatch


def test_a_failed_save_stops_the_run_removes_its_partial_files_and_resumes(
        tmp_path, disk_full_at_step_4, caplog, capsys):
    config = small_config(steps=8)
    with pytest.raises(CheckpointSaveError, match=r"step 4 .*No space left on device.*steps \[2\] are intact"):
        train_and_evaluate(config, tmp_path)
    assert isinstance(CheckpointSaveError("x"), OSError)
    assert not list((tmp_path / "checkpoints").glob("*orbax-checkpoint-tmp*"))
    assert checkpoint_steps(tmp_path) == [2]
    logged = [line["step"] for line in read_metrics(tmp_path / "metrics.jsonl")]
    assert max(logged) <= 6                                     # stopped by the next save at the latest
    assert not [r for r in caplog.records if r.exc_info and "orbax" in r.pathname]  # no orbax tracebacks

    disk_full_at_step_4.undo()
    capsys.readouterr()
    train_and_evaluate(config, tmp_path)
    assert "resuming from the checkpoint of step 2" in capsys.readouterr().out
    assert checkpoint_steps(tmp_path)[-1] == 8


def test_check_reports_a_failed_background_save_before_the_next_save(tmp_path, disk_full_at_step_4):
    ckpt = Checkpointer(tmp_path / "checkpoints")
    state = {"w": jnp.arange(3.0)}
    ckpt.save(2, state)
    ckpt.save(4, state)
    deadline = time.monotonic() + 60
    with pytest.raises(CheckpointSaveError, match=r"step 4 .*\[Errno 28\]"):
        while time.monotonic() < deadline:
            ckpt.check()
            time.sleep(0.01)
    ckpt.close()                                                # reported once, not again
    assert checkpoint_steps(tmp_path) == [2]
    assert not list((tmp_path / "checkpoints").glob("*orbax-checkpoint-tmp*"))


def test_a_failing_synchronous_save_names_its_step(tmp_path, monkeypatch):
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        def full_disk(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(ckpt._manager, "save", full_disk)
        with pytest.raises(CheckpointSaveError, match=r"step 3 .*No space left.*no earlier checkpoint"):
            ckpt.save(3, {"w": jnp.ones(2)})


# ---------------------------------------------------------------------------------
# 4. logged means


def test_logged_train_metrics_are_means_over_the_logging_interval(base_run, tmp_path):
    every_step = [line for line in read_metrics(base_run / "metrics.jsonl") if "train/loss" in line]
    assert [line["step"] for line in every_step] == list(range(1, BASE_STEPS + 1))
    train_and_evaluate(small_config(log_every=BASE_STEPS, checkpoint_every=1), tmp_path)
    (logged,) = [line for line in read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in line]
    assert logged["step"] == BASE_STEPS
    for key in ("train/loss", "train/accuracy", "train/grad_norm"):
        np.testing.assert_allclose(logged[key], np.mean([line[key] for line in every_step]), rtol=1e-6)
    assert not np.isclose(logged["train/loss"], every_step[-1]["train/loss"])
