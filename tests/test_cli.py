"""The ``seqmodels`` command: one-line user errors, eval from a run's config.json,
generate from a checkpoint, help without jax, configs in subfolders, progress and summary."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from seqmodels.train import ConfigError, apply_overrides, load_config, load_model, load_state, train_and_evaluate
from seqmodels.train import cli, writers
from seqmodels.train.config import config_differences, to_json

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.py"
TINY = {"model.d_model": 8, "model.n_layers": 1, "model.mlp_ratio": 1, "model.mixer_options.num_heads": 2,
        "task.options.seq_len": 8, "task.options.num_tokens": 2, "train.steps": 2, "train.batch_size": 4,
        "train.log_every": 1, "train.checkpoint_every": 0, "train.eval_batches": 1, "train.plot": False}


def tiny_config():
    return apply_overrides(load_config(QUICKSTART), TINY)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A two-step run of the quickstart's token task (selective copying, 10 token ids)."""
    jax.config.update("jax_disable_most_optimizations", True)
    workdir = tmp_path_factory.mktemp("run")
    train_and_evaluate(tiny_config(), workdir)
    yield workdir
    jax.config.update("jax_disable_most_optimizations", False)


def one_error_line(capsys, *fragments: str) -> str:
    """The single ``seqmodels: error:`` line on stderr, which contains every fragment."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqmodels: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------
# user errors: one line, exit status 2


def test_workdir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert cli.main(["train", str(QUICKSTART), "--workdir", str(tmp_path / "file")]) == 2
    one_error_line(capsys, "--workdir", "is a file")
    assert cli.main(["train", str(QUICKSTART), "--workdir", str(tmp_path / "file" / "run")]) == 2
    one_error_line(capsys, "is a file")


def test_read_only_workdir(tmp_path, capsys, monkeypatch):
    # the check asks os.access, which is always true for root: make it answer as for a read-only folder
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)
    assert cli.main(["train", str(QUICKSTART), "--workdir", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "is not writable")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("source, message", [
    ("def get_config(:\n", "syntax error at line 1"),
    ("x = 1\n", "defines no get_config()"),
    ("import no_such_module_here\n", "failed to load: ModuleNotFoundError"),
    ("def get_config():\n    return 1 / 0\n", "get_config() failed: ZeroDivisionError"),
])
def test_broken_config_file(tmp_path, capsys, source, message):
    path = tmp_path / "broken.py"
    path.write_text(source)
    assert cli.main(["train", str(path), "--workdir", str(tmp_path / "run")]) == 2
    one_error_line(capsys, str(path), message)


def test_broken_config_json(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model": {"mixer": ')
    assert cli.main(["train", str(tmp_path / "config.json"), "--workdir", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "config.json is not valid JSON")
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 2
    one_error_line(capsys, "config.json is not valid JSON")


@pytest.mark.parametrize("value, named", [("3", "model.mixer_options.num_heads=3"),
                                          ("abc", "model.mixer_options.num_heads='abc'")])
def test_mixer_option_rejected_by_the_mixer_names_the_key(tmp_path, capsys, value, named):
    argv = ["train", str(QUICKSTART), "--workdir", str(tmp_path / "run"), "--model.mixer_options.num_heads", value]
    assert cli.main(argv) == 2
    one_error_line(capsys, named, "mixer 'deltanet' rejects")
    assert not (tmp_path / "run").exists()  # refused before the workdir or any step


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        cli.main(["train", str(path), "--debug"])


def test_mesh_error_says_how_to_get_cpu_devices(tmp_path, capsys):
    seq = jax.device_count() + 1
    argv = ["train", str(QUICKSTART), "--workdir", str(tmp_path / "run"), "--mesh.seq", str(seq)]
    assert cli.main(argv) == 2
    one_error_line(capsys, f"mesh.seq={seq} does not divide", f"--xla_force_host_platform_device_count={seq}")


def test_missing_files_are_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(to_json(tiny_config()))
    assert cli.main(["eval", "--workdir", str(run)]) == 2
    one_error_line(capsys, "no checkpoint in")
    assert cli.main(["eval", "--workdir", str(tmp_path / "elsewhere")]) == 2
    one_error_line(capsys, "holds no config.json")
    argv = ["generate", "--workdir", str(run), "--prompt-file", str(tmp_path / "nope.txt"), "--num-tokens", "2"]
    assert cli.main(argv) == 2
    one_error_line(capsys, "No such file", "nope.txt")


# ---------------------------------------------------------------------------------
# eval reads the run's config.json


def test_eval_reads_the_runs_config_and_names_differing_keys(run_dir, capsys):
    assert cli.main(["eval", "--workdir", str(run_dir)]) == 0
    assert "step 2: test/loss" in capsys.readouterr().out
    assert cli.main(["eval", "--workdir", str(run_dir), "--train.eval_batches", "2"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(QUICKSTART), "--workdir", str(run_dir)]) == 2
    one_error_line(capsys, "differs from", "model.d_model=64 (the run's: 8)", "train.steps=300 (the run's: 2)")
    assert cli.main(["eval", "--workdir", str(run_dir), "--model.n_layers", "3"]) == 2
    one_error_line(capsys, "cannot change the model or task", "model.n_layers=3 (the run's: 1)")


def test_config_differences_name_dotted_keys():
    config = tiny_config()
    other = apply_overrides(config, {"train.seed": 3, "model.mixer_options.num_heads": 4})
    assert config_differences(config, config) == []
    assert config_differences(config, other) == ["model.mixer_options.num_heads", "train.seed"]


# ---------------------------------------------------------------------------------
# load_model and generate


def test_load_model_restores_the_trained_parameters(run_dir):
    model, config = load_model(run_dir)
    assert config == tiny_config()
    _, state = load_state(config, run_dir)
    loaded = jax.tree.leaves(nnx.state(model, nnx.Param))
    saved = jax.tree.leaves(state["params"])
    assert len(loaded) == len(saved) > 0
    for a, b in zip(loaded, saved):
        np.testing.assert_array_equal(a, b)


def generate_cli(capsys, run_dir, *args: str) -> list[int]:
    assert cli.main(["generate", "--workdir", str(run_dir), *args]) == 0
    return [int(token) for token in capsys.readouterr().out.split()]


def test_generate_prints_a_continuation(run_dir, capsys):
    greedy = generate_cli(capsys, run_dir, "--prompt", "1, 2 3", "--num-tokens", "5")
    assert len(greedy) == 5 and all(0 <= t < 10 for t in greedy)
    sampled = [generate_cli(capsys, run_dir, "--prompt", "1 2 3", "--num-tokens", "8", "--temperature", "2",
                            "--top-k", "4", "--seed", str(seed)) for seed in (7, 7, 8)]
    assert sampled[0] == sampled[1] != sampled[2]


@pytest.mark.parametrize("args, fragments", [
    (["--prompt", "1 2 99"], ["prompt token ids must be in [0, vocab_size=10)", "to 99"]),
    (["--prompt", "-1"], ["prompt token ids must be in [0, vocab_size=10)", "from -1"]),
    (["--prompt", "hello"], ["--prompt", "no text encoding", "separated by commas or spaces"]),
    (["--prompt", "1", "--top-k", "0"], ["top_k must be None or an integer in [1, output_dim=10]"]),
    (["--prompt", "1", "--temperature", "-1"], ["temperature must be a finite number ≥ 0"]),
])
def test_generate_rejects_bad_arguments_in_one_line(run_dir, capsys, args, fragments):
    assert cli.main(["generate", "--workdir", str(run_dir), "--num-tokens", "2", *args]) == 2
    one_error_line(capsys, *fragments)


class TextTask:
    """A task with a text encoding (one id per byte)."""
    name = "bytes"

    def encode(self, text):
        return list(text.encode())

    def decode(self, ids):
        return bytes(int(i) for i in ids).decode()


def test_prompt_is_text_when_the_task_encodes_text():
    np.testing.assert_array_equal(cli._prompt_ids(TextTask(), "hi", 256), [104, 105])
    np.testing.assert_array_equal(cli._prompt_ids(object(), " 3,1 ,4 ", 10), [3, 1, 4])


# ---------------------------------------------------------------------------------
# help, version, list


def test_help_and_version_answer_without_jax():
    code = textwrap.dedent("""
        import contextlib, io, sys
        from seqmodels.train.cli import main
        for argv in (["--version"], ["--help"], ["train", "--help"], ["eval", "--help"], ["generate", "--help"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    main(argv)
                except SystemExit as exit:
                    assert exit.code == 0, argv
            print(out.getvalue())
        print("jax imported:", "jax" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "jax imported: False" in out
    assert "seqmodels 0.1.0" in out
    assert "--train.steps int (default 1000)" in out and "--model.mixer str (default 'aaren')" in out
    assert "--mesh.seq int (default 1)" in out
    assert "usage: seqmodels eval [-h] [--debug] --workdir DIR [config]" in " ".join(out.split())
    assert "--prompt-file" in out and "separated by commas or spaces" in " ".join(out.split())


def test_list_and_train_find_configs_in_subfolders(tmp_path, monkeypatch, capsys):
    paper = tmp_path / "configs" / "paper"
    paper.mkdir(parents=True)
    (paper / "tiny_paper.py").write_text("from seqmodels.train import Config\n\ndef get_config():\n"
                                         "    return Config()\n")
    (paper / "_helpers.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "paper/tiny_paper" in out and "quickstart" in out and "_helpers" not in out
    assert load_config("paper/tiny_paper", cli.config_dirs()) == load_config(paper / "tiny_paper.py")


# ---------------------------------------------------------------------------------
# progress and the config summary


def test_eta_counts_from_the_end_of_compilation(monkeypatch):
    clock = iter([0.0, 30.0, 31.0, 32.0])  # created, first step done (30 s compiling), two log points
    monkeypatch.setattr(writers.time, "perf_counter", lambda: next(clock))
    lines = io.StringIO()
    progress = writers.Progress(101, 0, stream=lines)
    progress.start(1)
    progress.update(11, {"loss": 1.0})
    progress.update(21, {"loss": 0.5})
    first, second = lines.getvalue().splitlines()
    assert "10.0 steps/s  ETA 0:00:09" in first   # 90 steps left at 10 steps/s, not 30 s of compile in it
    assert "10.0 steps/s  ETA 0:00:08" in second


def test_config_summary_is_short_and_names_the_non_default_keys():
    summary = writers.config_summary(load_config(QUICKSTART))
    lines = summary.splitlines()
    assert len(lines) <= 6
    assert "mixer=deltanet" in summary and "mixer_options.num_heads=4" in summary
    assert "name=selective_copy" in summary and "learning_rate=0.003" in summary and "steps=300" in summary
    assert "weight_decay" not in summary  # at its default


def test_train_prints_the_summary_or_the_whole_config(run_dir, capsys):
    # the run is complete: training again only restores and evaluates
    train_and_evaluate(tiny_config(), run_dir)
    out = capsys.readouterr().out
    assert out.startswith("config (") and '"mlp_ratio": 1' not in out
    train_and_evaluate(tiny_config(), run_dir, print_config=True)
    config = json.loads(capsys.readouterr().out.split("config:\n", 1)[1].split("\ndevices:", 1)[0])
    assert config["model"]["mlp_ratio"] == 1
