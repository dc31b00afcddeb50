"""The ``seqmodels`` command (also ``python -m seqmodels``).

    seqmodels train CONFIG [--workdir DIR] [--section.key VALUE ...]   train (resumes in an existing DIR)
    seqmodels eval CONFIG --workdir DIR [--section.key VALUE ...]      evaluate DIR's latest checkpoint
    seqmodels list                                                     mixers, tasks and configs

CONFIG is a ``.py`` file with ``get_config()``, a saved ``config.json``, or the name of
a file in ``configs/``. Overrides are dotted keys typed by the config's fields
(``--train.steps 200``, ``--model.mixer aaren``, ``--task.options.num_pairs 4``,
``train.steps=200``); an unknown key is rejected, listing the valid ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, apply_overrides, load_config, parse_override_args


def config_dirs() -> list[Path]:
    """Where bare config names are looked up: ``./configs``, then the configs shipped in the package."""
    dirs = [Path.cwd() / "configs", Path(__file__).resolve().parents[1] / "configs"]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in [e.resolve() for e in dirs[:i]]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqmodels", description="Train and evaluate sequence models.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("train", "train a config (resumes if DIR has checkpoints)"),
                            ("eval", "evaluate the latest checkpoint in DIR")):
        sub = commands.add_parser(name, help=help_text,
                                  epilog="further arguments are overrides: --section.key VALUE")
        sub.add_argument("config", help="a configs/*.py file, its name, or a saved config.json")
        sub.add_argument("--workdir", default=None, required=name == "eval",
                         help="run directory (default: runs/<config name>)")
        if name == "train":
            sub.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                             help="when resuming, accept a changed KEY (or section, or 'all') that alters "
                                  "the run's updates; repeatable")
    commands.add_parser("list", help="list mixers, tasks and configs")
    return parser


def _list() -> None:
    from .. import layers, tasks
    print("mixers: " + ", ".join(layers.names()))
    print("tasks:  " + ", ".join(tasks.task_names()))
    for directory in config_dirs():
        print(f"configs ({directory}): " + ", ".join(sorted(p.stem for p in directory.glob("*.py")
                                                             if not p.name.startswith("_"))))


def main(argv: list[str] | None = None) -> int:
    args, rest = _parser().parse_known_args(argv)
    if args.command == "list":
        if rest:
            _parser().error(f"list takes no arguments; got {rest}")
        _list()
        return 0
    try:
        config = apply_overrides(load_config(args.config, config_dirs()), parse_override_args(rest))
    except ConfigError as err:
        print(f"seqmodels: error: {err}", file=sys.stderr)
        return 2
    from .loop import NonFiniteLossError, evaluate_checkpoint, train_and_evaluate
    workdir = Path(args.workdir) if args.workdir else Path("runs") / Path(args.config).stem
    try:
        if args.command == "train":
            train_and_evaluate(config, workdir, allow_changes=args.allow_change)
        else:
            evaluate_checkpoint(config, workdir)
    except (ConfigError, NonFiniteLossError, FileNotFoundError) as err:
        print(f"seqmodels: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
