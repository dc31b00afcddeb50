"""The ``seqmodels`` command (also ``python -m seqmodels``).

    seqmodels train CONFIG [--workdir DIR] [--seeds N] [--print-config] [--section.key VALUE ...]
    seqmodels eval [CONFIG] --workdir DIR [--section.key VALUE ...]
    seqmodels generate --workdir DIR (--prompt TEXT | --prompt-file F) --num-tokens N
                       [--temperature T] [--top-k K] [--seed S]
    seqmodels list

CONFIG is a ``.py`` file with ``get_config()``, a saved ``config.json``, or the name of
a file in ``configs/`` (``quickstart``, ``paper/s4_scifar``). Overrides are dotted keys
typed by the config's fields (``--train.steps 200``, ``--model.mixer aaren``,
``--task.options.num_pairs 4``, ``train.steps=200``); an unknown key is rejected,
listing the valid ones. ``eval`` and ``generate`` read the run's own ``config.json``.

A user error (a bad config, key, value or option, an unusable workdir, a missing file)
prints one ``seqmodels: error: ...`` line and exits with status 2; ``--debug`` shows the
traceback instead. A run stopped by a non-finite loss exits with status 1.
``--help`` and ``--version`` answer without importing jax.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from .. import __version__
from .config import (ConfigError, apply_overrides, config_differences, config_reference, flat_values, load_config,
                     parse_override_args)

OVERRIDES_HELP = ("overrides: --section.key VALUE (or section.key=VALUE), anywhere on the line; "
                  "task.options.* and model.mixer_options.* take the task's and mixer's options")


def config_dirs() -> list[Path]:
    """Where bare config names are looked up: ``./configs``, then the configs shipped in the package."""
    dirs = [Path.cwd() / "configs", Path(__file__).resolve().parents[1] / "configs"]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in [e.resolve() for e in dirs[:i]]]


def config_names(directory: Path) -> list[str]:
    """The configs in ``directory`` and its subfolders, as names for ``seqmodels train``
    (``quickstart``, ``paper/s4_scifar``); files starting with ``_`` are not configs."""
    paths = (p.relative_to(directory) for p in directory.rglob("*.py"))
    return sorted(p.with_suffix("").as_posix() for p in paths if not any(part.startswith("_") for part in p.parts))


# ---------------------------------------------------------------------------------
# the parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqmodels", description="Train, evaluate and sample sequence models.")
    parser.add_argument("--version", action="version", version=f"seqmodels {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", parents=[common], help="train a config (resumes if DIR has checkpoints)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{OVERRIDES_HELP}.\n\nconfig keys (type, default):\n{config_reference()}")
    train.add_argument("config", help="a configs/*.py file, its name (e.g. quickstart, paper/s4_scifar), "
                                      "or a saved config.json")
    train.add_argument("--workdir", metavar="DIR", help="run directory (default: runs/<config name>)")
    train.add_argument("--seeds", type=int, default=None, metavar="N",
                       help="train N times with seeds 0 … N-1 (runs in DIR/seed_<s>) and print each final "
                            "metric as mean ± std over the seeds (also written to DIR/seeds.json)")
    train.add_argument("--print-config", action="store_true",
                       help="print the whole config as JSON before training (default: a short summary)")
    train.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                       help="when resuming, accept a changed KEY (or section, or 'all') that alters "
                            "the run's updates; repeatable (recorded in DIR/config_changes.jsonl)")

    evaluate = commands.add_parser(
        "eval", parents=[common], help="evaluate the latest checkpoint of a run", epilog=OVERRIDES_HELP,
        description="Evaluate DIR's latest checkpoint with the run's own config.json. A CONFIG given too "
                    "must match it (the differing keys are named); overrides may change how it is "
                    "evaluated (train.batch_size, train.eval_batches, mesh.*), not the model or task.")
    evaluate.add_argument("config", nargs="?", help="optional: a config that must match the run's config.json")
    evaluate.add_argument("--workdir", metavar="DIR", required=True, help="the run directory")

    generate = commands.add_parser(
        "generate", parents=[common], help="continue a prompt with a trained token model",
        description="Feed a prompt to the latest checkpoint of DIR and print the tokens that follow. "
                    "If the run's task encodes text (it defines encode and decode), the prompt is text; "
                    "otherwise it is token ids separated by commas or spaces (e.g. \"3, 1, 4\"), and "
                    "the continuation is printed as ids.")
    generate.add_argument("--workdir", metavar="DIR", required=True, help="the run directory")
    prompt = generate.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the prompt: text, or token ids")
    prompt.add_argument("--prompt-file", type=Path, help="a file holding the prompt")
    generate.add_argument("--num-tokens", type=int, required=True, help="how many tokens to generate")
    generate.add_argument("--temperature", type=float, default=0.0,
                          help="0 (default) picks the most likely token; > 0 samples from softmax(logits / T)")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the K most likely tokens only")
    generate.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")

    commands.add_parser("list", parents=[common], help="list mixers, tasks and configs")
    return parser


# ---------------------------------------------------------------------------------
# commands


def _overrides_text(overrides) -> list[str]:
    return [f"--{key}" + ("" if value is None else f" {value}") for key, value in overrides]


def _check_workdir(workdir: Path) -> None:
    """``workdir`` must be a directory, or a path where one can be made, that this user can write."""
    existing = next(p for p in [workdir.absolute(), *workdir.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--workdir {workdir}: {existing} is a file; expected a directory (existing or new)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir {workdir}: {existing} is not writable")


def _train(args, overrides) -> None:
    config = apply_overrides(load_config(args.config, config_dirs()), overrides)
    workdir = Path(args.workdir) if args.workdir else Path("runs") / Path(args.config).stem
    _check_workdir(workdir)
    from .loop import train_and_evaluate
    if args.seeds is None:
        train_and_evaluate(config, workdir, print_config=args.print_config, allow_changes=args.allow_change)
        return
    from .seeds import format_summary, seed_list, train_seeds
    seeds = seed_list(args.seeds)  # a bad count fails here, before anything compiles
    summary = train_seeds(config, workdir, seeds, print_config=args.print_config, allow_changes=args.allow_change)
    print(f"over seeds {', '.join(map(str, seeds))} (mean ± sample std):")
    print(format_summary(summary, [k for k in summary["mean"] if k != "chance"]))


def _describe_differences(keys: list[str], given, run) -> str:
    mine, theirs = flat_values(given), flat_values(run)
    return ", ".join(f"{key}={mine.get(key)!r} (the run's: {theirs.get(key)!r})" for key in keys)


def _eval(args, overrides) -> None:
    from .inference import run_config
    from .loop import evaluate_checkpoint
    run = run_config(args.workdir)
    if args.config is None:
        config = apply_overrides(run, overrides)
        changed = [key for key in config_differences(config, run) if key.startswith(("model.", "task."))]
        if changed:
            raise ConfigError(f"eval cannot change the model or task a run trained: "
                              f"{_describe_differences(changed, config, run)}")
    else:
        config = apply_overrides(load_config(args.config, config_dirs()), overrides)
        changed = config_differences(config, run)
        if changed:
            raise ConfigError(f"{args.config} differs from {Path(args.workdir) / 'config.json'} in "
                              f"{_describe_differences(changed, config, run)}; leave CONFIG out to use the run's")
    evaluate_checkpoint(config, args.workdir)


def _prompt_ids(task, text: str, vocab_size: int):
    """The prompt as token ids: the task's own text encoding, or ids written as numbers."""
    import numpy as np
    if hasattr(task, "encode"):
        return np.asarray(task.encode(text), np.int32)
    fields = [f for f in re.split(r"[,\s]+", text.strip()) if f]
    if not fields or not all(re.fullmatch(r"-?\d+", f) for f in fields):
        raise ConfigError(f"--prompt: task {task.name!r} has no text encoding, so the prompt must be token ids "
                          f"(0 … {vocab_size - 1}) separated by commas or spaces; got {text[:80]!r}")
    return np.asarray([int(f) for f in fields], np.int32)


def _generate(args, overrides) -> None:
    if overrides:
        raise ConfigError(f"generate takes no config overrides; got {' '.join(_overrides_text(overrides))}")
    text = args.prompt if args.prompt is not None else args.prompt_file.read_text()
    import jax
    import numpy as np
    from ..models import generate
    from ..tasks import build_task
    from .inference import load_model
    model, config = load_model(args.workdir)
    task = build_task(config.task.name, **config.task.options)
    if model.vocab_size is None:
        raise ConfigError(f"generate needs a model of token ids; the run in {args.workdir} reads features "
                          f"(task {task.name!r})")
    prompt = _prompt_ids(task, text, model.vocab_size)
    try:
        tokens = generate(model, prompt[None], args.num_tokens, temperature=args.temperature, top_k=args.top_k,
                          key=jax.random.key(args.seed))
    except ValueError as err:  # the prompt or a sampling argument
        raise ConfigError(str(err)) from err
    continuation = np.asarray(tokens[0, len(prompt):])
    print(task.decode(continuation) if hasattr(task, "decode") else " ".join(map(str, continuation)))


def _list(args, overrides) -> None:
    if overrides:
        raise ConfigError(f"list takes no arguments; got {' '.join(_overrides_text(overrides))}")
    from .. import layers, tasks
    print("mixers: " + ", ".join(layers.names()))
    print("tasks:  " + ", ".join(tasks.task_names()))
    for directory in config_dirs():
        print(f"configs ({directory}): " + ", ".join(config_names(directory)))


COMMANDS = {"train": _train, "eval": _eval, "generate": _generate, "list": _list}


def _exit_status(err: BaseException) -> int | None:
    """2 for a user error, 1 for a run stopped by a non-finite loss, ``None`` otherwise (a bug)."""
    if isinstance(err, (ConfigError, OSError)):
        return 2
    loop = sys.modules.get(f"{__package__}.loop")  # only a loaded loop can have raised its error
    if loop is not None and isinstance(err, loop.NonFiniteLossError):
        return 1
    return None


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(the command's own arguments, the overrides)``: an override is a dotted key,
    ``--section.key [VALUE]`` or ``section.key=VALUE``, so that its value is never taken
    for an optional positional argument."""
    own, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        flag = arg.startswith("--")
        key = arg[2:].split("=", 1)[0] if flag else arg.split("=", 1)[0] if "=" in arg else ""
        if "." not in key:
            own.append(arg)
            i += 1
            continue
        with_value = flag and "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("--")
        overrides += argv[i:i + 1 + with_value]
        i += 1 + with_value
    return own, overrides


def main(argv: list[str] | None = None) -> int:
    own, overrides = split_overrides(sys.argv[1:] if argv is None else list(argv))
    args = _parser().parse_args(own)
    try:
        COMMANDS[args.command](args, parse_override_args(overrides))
    except Exception as err:
        status = _exit_status(err)
        if status is None or args.debug:
            raise
        print(f"seqmodels: error: {' '.join(str(err).split())}", file=sys.stderr)
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
