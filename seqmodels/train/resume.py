"""Resuming a run: the config that resumes it against the config it was trained with.

A run directory holds ``config.json``, the config the run trains with now. Resuming
(``train_and_evaluate`` on a directory with checkpoints) compares the new config with
it key by key (dotted keys, ``optimizer.learning_rate``, ``model.mixer_options.num_heads``;
mixer and task options completed with their defaults, so naming a default is no
change):

* keys that leave every update unchanged (``FREE_KEYS``: the number of steps, the
  log, eval and checkpoint periods, outputs) may change freely. ``train.steps`` also
  stretches the learning-rate schedule of the steps still to come: the steps already
  done are unchanged, the rest follow the new schedule;
* any other change (seed, optimizer, batch size, precision, task, model, mesh: the
  mesh changes the order of reductions, hence rounding) would make the resumed run
  differ from an uninterrupted one, so it is refused with one ``ConfigError`` naming
  every such key with its old and new value, before anything is built or compiled,
  unless ``allow_changes`` names it (a dotted key, a prefix of keys such as
  ``optimizer``, or ``"all"``; CLI ``--allow-change KEY``).

Every accepted change is appended to ``config_changes.jsonl`` in the run directory,
one JSON object per key: ``{"step", "key", "old", "new", "time", "trajectory"}``
(``step``: the checkpoint the run resumed from; ``trajectory``: whether the change
alters the updates, i.e. was allowed explicitly). ``config.json`` is then rewritten
with the new config, so ``seqmodels train DIR/config.json`` continues the run as it
is now configured and ``seqmodels eval DIR/config.json`` evaluates it; the original
config is ``config.json`` with the ``old`` values of ``config_changes.jsonl`` put
back, newest first. A directory without checkpoints has no run to continue: training
there starts over with the new config, and forgets the old one and its history.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from .config import Config, ConfigError, from_dict, to_dict, to_json

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
ALLOW_ALL = "all"
# settings that do not enter any update: periods, outputs, the length of the run
FREE_KEYS = frozenset({"train.steps", "train.log_every", "train.eval_every", "train.eval_batches",
                       "train.checkpoint_every", "train.keep_checkpoints", "train.tensorboard", "train.plot"})


class Absent:
    """The value of a key one of two configs does not have."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = Absent()


class Change(NamedTuple):
    key: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


def _show(value) -> str:
    return repr(value) if value is ABSENT else json.dumps(value)


def _as_json(value):
    """``value`` as JSON reads it back (tuples become lists); non-JSON values as strings."""
    return json.loads(json.dumps(value, default=str))


def _option_defaults(config: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The defaults of ``config``'s mixer options and task options (empty for unknown names)."""
    from .. import layers
    from ..tasks import task_names, task_options

    mixer = {}
    if config.model.mixer in layers.names():
        mixer = {name: parameter.default for name, parameter in layers.spec(config.model.mixer).options().items()
                 if parameter.default is not parameter.empty}
    task = {}
    if config.task.name in task_names():
        task = {name: default for name, default in task_options(config.task.name).items()
                if default is not dataclasses.MISSING}
    return mixer, task


def flat_config(config: Config) -> dict[str, Any]:
    """Every setting of ``config`` under its dotted key, as a JSON value; the mixer's and
    the task's options complete with their defaults."""
    data = _as_json(to_dict(config))
    mixer_defaults, task_defaults = _option_defaults(config)
    data["model"]["mixer_options"] = {**_as_json(mixer_defaults), **data["model"]["mixer_options"]}
    data["task"]["options"] = {**_as_json(task_defaults), **data["task"]["options"]}
    flat: dict[str, Any] = {}

    def visit(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for name, item in value.items():
                visit(f"{prefix}.{name}" if prefix else name, item)
        else:
            flat[prefix] = value
    visit("", data)
    return flat


def config_changes(old: Config, new: Config) -> list[Change]:
    """The keys whose values differ between ``old`` and ``new``, in the config's order."""
    old_flat, new_flat = flat_config(old), flat_config(new)
    keys = list(new_flat) + [key for key in old_flat if key not in new_flat]
    return [Change(key, old_flat.get(key, ABSENT), new_flat.get(key, ABSENT)) for key in keys
            if old_flat.get(key, ABSENT) != new_flat.get(key, ABSENT)]


def _covers(pattern: str, key: str) -> bool:
    return pattern == ALLOW_ALL or key == pattern or key.startswith(pattern + ".")


def _check_allow_changes(allow_changes: Sequence[str], keys: Sequence[str]) -> None:
    unknown = [pattern for pattern in allow_changes if not any(_covers(pattern, key) for key in keys)]
    if unknown:
        sections = sorted({key.split(".")[0] for key in keys})
        raise ConfigError(f"allow_changes (--allow-change) names no config key: {', '.join(map(repr, unknown))}; "
                          f"expected {ALLOW_ALL!r}, a dotted key such as 'optimizer.learning_rate', or a section "
                          f"({', '.join(sections)})")


def saved_config(workdir: Path) -> Config | None:
    """The config saved in ``workdir`` (``None`` when there is none)."""
    path = workdir / CONFIG_FILE
    if not path.exists():
        return None
    try:
        return from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ConfigError) as err:
        raise ConfigError(f"{path} cannot be read as a run config ({err}); fix it, or use another "
                          f"--workdir") from err


def check_config(config: Config, workdir: str | Path, allow_changes: Sequence[str] = (), *,
                 resuming: bool = True) -> list[Change]:
    """The accepted changes from ``workdir``'s saved config to ``config`` when ``resuming``
    from a checkpoint there (see the module docstring); raises ``ConfigError`` naming every
    refused change."""
    workdir = Path(workdir)
    allow_changes = [allow_changes] if isinstance(allow_changes, str) else list(allow_changes)
    old = saved_config(workdir) if resuming else None
    _check_allow_changes(allow_changes, list(flat_config(config)) + (list(flat_config(old)) if old else []))
    if old is None:
        return []
    changes = config_changes(old, config)
    refused = [change for change in changes if change.key not in FREE_KEYS
               and not any(_covers(pattern, change.key) for pattern in allow_changes)]
    if refused:
        listed = "; ".join(change.describe() for change in refused)
        raise ConfigError(
            f"{workdir} holds a run trained with another config, and resuming it with these changes would "
            f"not continue the same run: {listed}. Resume with the saved config ({workdir / CONFIG_FILE}), "
            f"use another --workdir, or accept the changes with --allow-change KEY (allow_changes=[...]; "
            f"'{ALLOW_ALL}' for every key)")
    return changes


def record_config(config: Config, workdir: str | Path, changes: Sequence[Change], step: int | None) -> None:
    """Append ``changes`` (accepted when resuming from checkpoint ``step``) to
    ``config_changes.jsonl`` and write ``config`` as the run's ``config.json``;
    ``step=None``: the run starts over, its history is removed."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if step is None:
        (workdir / CHANGES_FILE).unlink(missing_ok=True)
    elif changes:
        time = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with (workdir / CHANGES_FILE).open("a") as log:
            for change in changes:
                log.write(json.dumps({"step": int(step), "key": change.key,
                                      "old": None if change.old is ABSENT else change.old,
                                      "new": None if change.new is ABSENT else change.new,
                                      "time": time, "trajectory": change.key not in FREE_KEYS}) + "\n")
    (workdir / CONFIG_FILE).write_text(to_json(config) + "\n")
