"""Configs: typed overrides, unknown keys rejected with the valid ones listed, JSON round trip, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seqmodels.train import cli
from seqmodels.train.config import (Config, ConfigError, ModelConfig, TaskConfig, apply_overrides, from_dict,
                                    load_config, parse_override_args, to_json)

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.py"


def test_overrides_are_typed_by_the_fields():
    config = apply_overrides(Config(), parse_override_args(
        ["--train.steps", "7", "--optimizer.learning_rate=0.5", "train.tensorboard=true", "--train.plot", "no",
         "--mesh.data", "-1", "--task.name", "group_word", "--task.options.test_lengths", "32,64",
         "--model.mixer_options.num_heads", "2"]))
    assert config.train.steps == 7 and config.optimizer.learning_rate == 0.5
    assert config.train.tensorboard is True and config.train.plot is False and config.mesh.data == -1
    assert config.task.options == {"test_lengths": (32, 64)}
    assert config.model.mixer_options == {"num_heads": 2}


def test_flag_without_value_sets_a_boolean():
    assert apply_overrides(Config(), parse_override_args(["--train.tensorboard"])).train.tensorboard is True


def test_changing_the_task_starts_from_its_default_options():
    config = Config(task=TaskConfig("mqar", {"num_pairs": 4}))
    assert apply_overrides(config, {"task.name": "listops"}).task.options == {}
    assert apply_overrides(config, {"task.name": "mqar"}).task.options == {"num_pairs": 4}


@pytest.mark.parametrize("key,listed", [
    ("train.stepz", "train.steps, train.batch_size"),
    ("trian.steps", "model, task, optimizer, train, mesh"),
    ("model.mixer_options.num_headz", "model.mixer_options.num_heads"),
    ("task.options.num_pairz", "task.options.seq_len, task.options.num_pairs, task.options.vocab_size"),
])
def test_unknown_override_lists_the_valid_keys(key, listed):
    with pytest.raises(ConfigError, match="unknown key") as err:
        apply_overrides(Config(), {key: "1"})
    assert listed in str(err.value)


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="cannot read 'many' as int"):
        apply_overrides(Config(), {"train.steps": "many"})
    with pytest.raises(ConfigError, match="model.mixer must be one of"):
        apply_overrides(Config(), {"model.mixer": "aaron"})
    with pytest.raises(ConfigError, match="train.precision must be one of float32, bfloat16"):
        apply_overrides(Config(), {"train.precision": "fp8"})
    with pytest.raises(ConfigError, match="divisible by optimizer.accumulation_steps"):
        apply_overrides(Config(), {"optimizer.accumulation_steps": "5"})
    with pytest.raises(ConfigError, match="model.output must be one of linear, sigmoid, tanh"):
        apply_overrides(Config(), {"model.output": "relu"})
    with pytest.raises(ConfigError, match="model.output='tanh' needs model.kind='video'"):
        apply_overrides(Config(), {"model.output": "tanh"})
    with pytest.raises(ConfigError, match="model.norm_position='post' needs model.kind='video'"):
        apply_overrides(Config(), {"model.norm_position": "post"})


def test_unknown_key_in_a_config_file_is_rejected(tmp_path):
    typo = tmp_path / "typo.py"
    typo.write_text("from seqmodels.train.config import *\n"
                    "def get_config():\n    return Config(train=TrainConfig(stepz=3))\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\] for TrainConfig; valid keys: steps, "):
        load_config(typo)
    bad_option = tmp_path / "bad_option.py"
    bad_option.write_text("from seqmodels.train.config import *\n"
                          "def get_config():\n    return Config(task=TaskConfig('mqar', {'pairs': 3}))\n")
    with pytest.raises(ConfigError, match="valid keys: task.options.seq_len"):
        load_config(bad_option)
    with pytest.raises(ConfigError, match="valid keys: mixer, d_model"):
        from_dict({"model": {"mixxer": "aaren"}})


def test_json_round_trip(tmp_path):
    config = Config(model=ModelConfig(mixer_options={"num_heads": 2}),
                    task=TaskConfig("group_word", {"test_lengths": (20, 40), "group": "a5"}))
    path = tmp_path / "config.json"
    path.write_text(to_json(config))
    assert load_config(path) == config
    assert json.loads(path.read_text())["task"]["options"]["test_lengths"] == [20, 40]


def test_cli_rejects_an_unknown_key_before_any_compute(tmp_path, capsys):
    workdir = tmp_path / "run"
    code = cli.main(["train", str(QUICKSTART), "--workdir", str(workdir), "--train.stepz", "3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.stepz'" in err and "train.steps" in err
    assert not workdir.exists()


def test_cli_list_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "seqmodels", "list"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "aaren" in out.stdout and "mqar" in out.stdout and "quickstart" in out.stdout
