"""The training loop: a smoke run of every config, auxiliary losses, NaN stop, outputs on disk."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seqmodels import layers, tasks
from seqmodels.layers import base as layer_base
from seqmodels.tasks import base as task_base
from seqmodels.train import (Checkpointer, Config, ModelConfig, NonFiniteLossError, OptimizerConfig, TaskConfig,
                             TrainConfig, apply_overrides, load_config, load_state, sum_aux_losses, train_and_evaluate)
from seqmodels.train import cli
from seqmodels.train.writers import Progress, read_metrics

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py")
                 if not p.name.startswith("_"))
SHRINK = {"model.n_layers": 1, "train.steps": 2, "train.batch_size": 4, "train.log_every": 1,
          "train.checkpoint_every": 0, "train.eval_every": 0, "train.eval_batches": 1}


@pytest.fixture
def fast_compile():
    """Cheaper XLA compiles for loop tests (numerics are not what they check)."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_trains(path, tmp_path, fast_compile):
    config = load_config(path)
    if config.task.name in ("digits", "ucr"):
        pytest.importorskip({"digits": "sklearn", "ucr": "aeon"}[config.task.name])
    config = apply_overrides(config, SHRINK)
    results = train_and_evaluate(config, tmp_path)
    metric = tasks.task_class(config.task.name).metric
    assert np.isfinite(results[f"test/{metric}"])
    lines = read_metrics(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in lines if "train/loss" in line] == [1, 2]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 2
    assert (tmp_path / "metrics.png").stat().st_size > 0
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [2]


def _small(task: TaskConfig, mixer: str = "aaren", **train) -> Config:
    options = {"num_heads": 2} if mixer == "aaren" else {}
    return Config(model=ModelConfig(mixer=mixer, d_model=8, n_layers=1, mixer_options=options, mlp_ratio=1),
                  task=task, optimizer=OptimizerConfig(warmup_steps=0),
                  train=TrainConfig(**{"steps": 4, "batch_size": 4, "log_every": 1, "eval_batches": 1,
                                       "checkpoint_every": 2, "plot": False, **train}))


@pytest.fixture
def toy_registries():
    """Register a toy mixer and a toy task for one test, and remove them after."""
    added_layers, added_tasks = [], []

    def add_layer(name, cls):
        layers.register(name)(cls)
        added_layers.append(name)

    def add_task(name, cls):
        task_base.register_task(name)(cls)
        added_tasks.append(name)

    yield add_layer, add_task
    for name in added_layers:
        layer_base._REGISTRY.pop(name, None)
    for name in added_tasks:
        task_base._REGISTRY.pop(name, None)


class AuxMixer(layers.Mixer):
    """Identity plus a projection; sows the auxiliary loss ``weight · mean(x²)``."""

    def __init__(self, d_model, *, weight: float = 1.0, rngs):
        self.d_model, self.weight = d_model, weight
        self.proj = layers.Dense(d_model, d_model, rngs=rngs)

    def forward(self, x):
        self.sow(nnx.Intermediate, "aux_loss", self.weight * jnp.mean(jnp.square(x.astype(jnp.float32))))
        self.sow(nnx.Intermediate, "debug", jnp.ones(()))     # other intermediates are dropped, not added
        return self.proj(x)


def test_aux_losses_are_summed_into_the_loss(toy_registries, tmp_path, fast_compile):
    add_layer, _ = toy_registries
    add_layer("toy_aux", AuxMixer)
    from seqmodels.models import SequenceModel
    model = SequenceModel("toy_aux", d_model=8, n_layers=2, output_dim=3, vocab_size=5,
                          mixer_options={"weight": 2.0}, rngs=nnx.Rngs(0))
    before = jax.tree.structure(nnx.state(model))
    _, sown = nnx.capture(model, nnx.Intermediate)(jnp.array([[1, 2, 3, 4]]))
    per_layer = [float(sown["blocks"][i]["mixer"]["aux_loss"][0]) for i in range(2)]
    assert min(per_layer) > 0
    np.testing.assert_allclose(float(sum_aux_losses(sown)), sum(per_layer), rtol=1e-6)   # "debug" not added
    assert jax.tree.structure(nnx.state(model)) == before                                # nothing stored

    config = _small(TaskConfig("copy_memory", {"num_tokens": 2, "delay": 3}), "toy_aux", steps=2)
    for name, weight in (("with", 2.0), ("without", 0.0)):
        model_config = dataclasses.replace(config.model, mixer_options={"weight": weight})
        train_and_evaluate(dataclasses.replace(config, model=model_config), tmp_path / name)
    with_aux, without = (read_metrics(tmp_path / name / "metrics.jsonl")[0] for name in ("with", "without"))
    assert with_aux["train/aux_loss"] > 0 and "train/aux_loss" not in without
    np.testing.assert_allclose(with_aux["train/loss"] - with_aux["train/aux_loss"], without["train/loss"],
                               rtol=1e-5)


@dataclasses.dataclass(frozen=True)
class NaNAfter(task_base.Task):
    """Feature regression whose inputs turn NaN from batch ``start`` on."""

    loss = "mse"
    metric = "mse"
    start: int = 5

    def io(self):
        return task_base.TaskIO(input_dim=2, output_dim=1, pooling="mean")

    def chance(self):
        return 1.0

    def make_batch(self, rng, split, index, batch_size):
        x = rng.standard_normal((batch_size, 6, 2)).astype(np.float32)
        if split == "train" and index >= self.start:
            x[:, 3] = np.nan
        return {"inputs": x, "targets": x[:, :1, 0] * 0, "weights": np.ones(batch_size, np.float32)}


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(toy_registries, tmp_path, fast_compile, capsys):
    _, add_task = toy_registries
    add_task("toy_nan", NaNAfter)
    config = _small(TaskConfig("toy_nan", {"start": 5}), steps=20, checkpoint_every=2, log_every=3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 6 .*last good checkpoint \(step 4\)"):
        train_and_evaluate(config, tmp_path)
    step, state = load_state(config, tmp_path)
    assert step == 4 and int(state["step"]) == 4
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(state["params"]))
    # `seqmodels eval` on the run's own config.json evaluates that checkpoint
    assert cli.main(["eval", str(tmp_path / "config.json"), "--workdir", str(tmp_path)]) == 0
    assert "step 4: test/loss" in capsys.readouterr().out


def test_bfloat16_accumulation_dropout_and_tensorboard(tmp_path, fast_compile):
    pytest.importorskip("tensorboardX")
    config = _small(TaskConfig("mqar", {"seq_len": 12, "num_pairs": 2, "vocab_size": 9}), steps=2,
                    precision="bfloat16", checkpoint_every=0, tensorboard=True)
    config = dataclasses.replace(config, optimizer=dataclasses.replace(config.optimizer, accumulation_steps=2),
                                 model=dataclasses.replace(config.model, dropout=0.1))
    results = train_and_evaluate(config, tmp_path)
    assert np.isfinite(results["test/loss"])
    _, state = load_state(config, tmp_path)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state["params"]))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere():
    lines = io.StringIO()
    progress = Progress(100, 0, stream=lines)
    progress.update(50, {"loss": 0.5})
    assert lines.getvalue().startswith("step 50/100  loss 0.5  |") and "steps/s  ETA" in lines.getvalue()
    terminal = FakeTerminal()
    bar = Progress(100, 0, stream=terminal)
    bar.update(50, {"loss": 0.5})
    bar.close()
    assert "50/100" in terminal.getvalue() and "step 50/100" not in terminal.getvalue()


def test_image_backbone_trains_and_evaluates_on_larger_images(tmp_path, fast_compile):
    # model.kind="image": patches + position embedding; the arrows task's larger test
    # images get the embedding resized, so both evaluation splits run.
    config = Config(model=ModelConfig(mixer="plstm2d", d_model=8, n_layers=1, mixer_options={"num_heads": 2},
                                      mlp_ratio=1, kind="image", patch_size=4),
                    task=TaskConfig("arrows", {"size": 16, "test_size": 24}),
                    optimizer=OptimizerConfig(warmup_steps=0),
                    train=TrainConfig(steps=2, batch_size=4, log_every=1, eval_batches=1, checkpoint_every=0,
                                      plot=False))
    results = train_and_evaluate(config, tmp_path)
    assert np.isfinite(results["test/accuracy"]) and np.isfinite(results["test_24px/accuracy"])
    restored = load_state(config, tmp_path)
    assert restored is not None and restored[1]["params"]["pos_embed"][...].shape == (4, 4, 8)


def test_video_backbone_learns_next_frames(tmp_path):
    # model.kind="video": the next-frame model around ConvS5; the MSE falls below that of
    # the best constant prediction (the task's chance) within a few dozen steps.
    config = Config(model=ModelConfig(mixer="convs5", d_model=16, n_layers=1, mixer_options={"state_size": 8},
                                      mlp_ratio=1, kind="video", n_down=1),
                    task=TaskConfig("bouncing_shapes", {"frames": 6, "size": 8}),
                    optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=0),
                    train=TrainConfig(steps=40, batch_size=8, log_every=10, eval_batches=2, checkpoint_every=0,
                                      plot=False))
    results = train_and_evaluate(config, tmp_path)
    assert results["test/mse"] < results["chance"]


def test_model_kind_must_fit_the_task():
    from seqmodels.train import ConfigError, Experiment
    bad = Config(model=ModelConfig(mixer="aaren", kind="video"), task=TaskConfig("mqar"))
    with pytest.raises(ConfigError, match="model.kind='video' needs a video mixer"):
        Experiment(bad)
    with pytest.raises(ConfigError, match="model.kind must be one of sequence, image, video"):
        Experiment(dataclasses.replace(bad, model=ModelConfig(kind="graph")))


def test_layer_options_alternate_mixer_variants():
    from seqmodels.train import ConfigError, Experiment
    config = apply_overrides(
        Config(model=ModelConfig(mixer="plstm2d", d_model=8, n_layers=3, mixer_options={"num_heads": 2},
                                 mlp_ratio=1, kind="image"),
               task=TaskConfig("arrows", {"size": 16, "test_size": 16})),
        {"model.layer_options": '[{"mode": "P"}, {"mode": "D"}]'})
    assert config.model.layer_options == ({"mode": "P"}, {"mode": "D"})
    modes = [block.mixer.mode for block in Experiment(config)._model.blocks]
    assert modes == ["P", "D", "P"]
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['mdoe'\] in model.layer_options\[1\]"):
        Experiment(dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                          layer_options=({}, {"mdoe": "D"}))))
