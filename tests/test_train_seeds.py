"""``train_seeds`` and ``seqmodels train --seeds N``: one config over several seeds, mean ± std."""

from __future__ import annotations

import json
import math

import jax
import pytest

from seqmodels.train import ConfigError, cli, format_summary, load_config, train_seeds
from seqmodels.train.seeds import aggregate, mean_std, seed_list

from test_cli import QUICKSTART, TINY, one_error_line


def fake_train(config, workdir):
    """Accuracy 0.5 + seed / 10: the aggregation can be checked exactly."""
    workdir.mkdir(parents=True)
    return {"test/accuracy": 0.5 + config.train.seed / 10, "test/loss": 1.0, "chance": 0.25, "note": "text"}


def test_train_seeds_runs_each_seed_in_its_own_folder_and_aggregates(tmp_path):
    config = load_config(QUICKSTART)
    summary = train_seeds(config, tmp_path, [0, 1, 2], train=fake_train)
    assert summary["seeds"] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed_0", "seed_1", "seed_2", "seeds.json"]
    assert [r["test/accuracy"] for r in summary["runs"]] == pytest.approx([0.5, 0.6, 0.7])
    assert summary["mean"]["test/accuracy"] == pytest.approx(0.6)
    assert summary["std"]["test/accuracy"] == pytest.approx(0.1)          # sample std, ddof = 1
    assert summary["std"]["test/loss"] == 0 and "note" not in summary["mean"]
    assert all(r["seconds"] >= 0 for r in summary["runs"])
    assert json.loads((tmp_path / "seeds.json").read_text())["mean"]["test/accuracy"] == pytest.approx(0.6)
    line = format_summary(summary, ["test/accuracy"])
    assert line.startswith("test/accuracy  0.6000 ± 0.1000") and "0.5000, 0.6000, 0.7000" in line


def test_seed_counts_and_lists():
    assert seed_list(3) == [0, 1, 2] and seed_list([4, 7]) == [4, 7]
    for bad in (0, -1, [], [1, 1], [-2], [1.5], True):
        with pytest.raises(ConfigError, match="seeds"):
            seed_list(bad)
    assert mean_std([2.0]) == (2.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))
    assert aggregate([{"a": 1, "b": 2}, {"a": 3}], [0, 1])["mean"] == {"a": 2.0}   # only keys every run has


def test_cli_trains_each_seed_and_prints_mean_and_std(tmp_path, capsys):
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        args = ["train", str(QUICKSTART), "--workdir", str(tmp_path), "--seeds", "2"]
        args += [f"--{key}={value}" for key, value in TINY.items()]
        assert cli.main(args) == 0
    finally:
        jax.config.update("jax_disable_most_optimizations", False)
    out = capsys.readouterr().out
    assert "over seeds 0, 1 (mean ± sample std):" in out and "test/accuracy" in out and " ± " in out
    summary = json.loads((tmp_path / "seeds.json").read_text())
    for seed in (0, 1):
        saved = json.loads((tmp_path / f"seed_{seed}" / "config.json").read_text())
        assert saved["train"]["seed"] == seed and saved["model"]["d_model"] == TINY["model.d_model"]
    assert len(summary["runs"]) == 2 and summary["runs"][0]["test/loss"] != summary["runs"][1]["test/loss"]


def test_cli_rejects_a_bad_seed_count_before_training(tmp_path, capsys):
    assert cli.main(["train", str(QUICKSTART), "--workdir", str(tmp_path), "--seeds", "0"]) == 2
    one_error_line(capsys, "seeds", "expected a count ≥ 1", "got 0")
    assert not any(tmp_path.iterdir())
