"""README.md runs as written.

* Python blocks: the blocks build on each other (the second uses the first's imports,
  the sequence-parallel one the model of the second), so they run **in order, in one
  namespace**, at the sizes the README gives, in a fresh interpreter started with four
  host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``, which the
  sequence-parallel block needs and documents). A failure names the README line.
* Shell blocks: every command line whose program is ``seqmodels`` (also
  ``.venv/bin/seqmodels``) is checked from the repository root without training: a
  ``train`` / ``eval`` line's config must resolve (``load_config`` with the CLI's
  ``config_dirs``) and its overrides must parse and apply; any other subcommand must be
  one the CLI accepts (its ``--help`` exits 0).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from seqmodels.train import cli
from seqmodels.train.config import apply_overrides, load_config, parse_override_args

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(language: str) -> list[tuple[int, str]]:
    """``(first line number, source)`` of every fenced block tagged ``language``."""
    text = README.read_text()
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2))
            for m in FENCE.finditer(text) if m.group(1) == language]


def seqmodels_commands() -> list[list[str]]:
    """The arguments of every ``seqmodels ...`` line of the README's bash blocks."""
    commands = []
    for _, block in code_blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and Path(words[0]).name == "seqmodels":
                commands.append(words[1:])
    return commands


# Runs in the child interpreter, in a scratch folder: first a short quickstart run at
# runs/qs (the run the README's training section makes, which its load_model block
# reads), then every block in order in one namespace, each compiled under its README
# line so that a traceback points at the README.
RUN_BLOCKS = """
from seqmodels.train import cli
assert cli.main(["train", "quickstart", "--workdir", "runs/qs", "--train.steps", "2",
                 "--train.eval_batches", "1"]) == 0
namespace = {"__name__": "__readme__"}
for line, source in BLOCKS:
    exec(compile("\\n" * (line - 1) + source, "README.md", "exec"), namespace)
"""


def test_readme_has_python_and_seqmodels_blocks():
    assert len(code_blocks("python")) >= 3
    assert any(words[:1] == ["train"] for words in seqmodels_commands())


def test_python_blocks_run_in_order(tmp_path):
    program = f"BLOCKS = {code_blocks('python')!r}\n{RUN_BLOCKS}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def _without_workdir(args: list[str]) -> list[str]:
    """``args`` less ``--workdir DIR`` (a CLI option, not a config override)."""
    if "--workdir" not in args:
        return args
    at = args.index("--workdir")
    return args[:at] + args[at + 2:]


@pytest.mark.parametrize("words", seqmodels_commands(), ids=" ".join)
def test_seqmodels_command_resolves(words, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    command, rest = words[0], words[1:]
    if command not in ("train", "eval") or not rest or rest[0].startswith("-"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0, capsys.readouterr().err
        return
    config_spec, overrides = rest[0], _without_workdir(rest[1:])
    apply_overrides(load_config(config_spec, cli.config_dirs()), parse_override_args(overrides))
