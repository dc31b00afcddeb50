"""Typed, frozen run configurations, config files, and dotted-key overrides.

A run is a ``Config`` of five sections::

    Config(model=ModelConfig(...), task=TaskConfig(...), optimizer=OptimizerConfig(...),
           train=TrainConfig(...), mesh=MeshConfig(...))

Config files are Python modules with ``get_config() -> Config`` (``configs/*.py``) or
the JSON a run saves beside its checkpoints (``config.json``). Overrides are dotted
keys typed by the dataclass fields: ``train.steps=200``, ``model.mixer=aaren``,
``task.options.num_pairs=4`` (typed by the task's own option fields),
``model.mixer_options.num_heads=2`` (checked against the mixer's constructor).
Overriding ``task.name`` or ``model.mixer`` with another name starts that one's
options from its defaults.
Every unknown key, in a file, a dict or an override, is rejected before any
compute with a message that lists the valid keys.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

PRECISIONS = ("float32", "bfloat16")
POOLINGS = ("auto", "none", "mean", "last", "corners")
IMAGE_POOLINGS = ("auto", "mean", "corners")
MODEL_KINDS = ("sequence", "image", "video")


class ConfigError(ValueError):
    """An invalid configuration: unknown key, bad value, or a file without ``get_config``."""


def _valid_keys(cls) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def config_class(cls):
    """``dataclass(frozen=True)`` whose constructor rejects unknown keywords by listing the valid ones."""
    cls = dataclass(frozen=True)(cls)
    init = cls.__init__

    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} for {cls.__name__}; valid keys: {_valid_keys(cls)}")
        init(self, *args, **kwargs)

    cls.__init__ = checked_init
    return cls


@config_class
class ModelConfig:
    """The backbone around the mixer; input, output sizes and default pooling come from the task.

    ``kind`` picks the backbone (``seqmodels.models``):

    * ``"sequence"``: ``SequenceModel`` (token ids or features, per-step or pooled outputs);
      image or video inputs are flattened to what the mixer mixes;
    * ``"image"``: ``ImageModel``, a ViT-style classifier on ``patch_size`` patches with a
      position embedding resized for test images of another size (image tasks);
    * ``"video"``: ``VideoModel``, a next-frame predictor (conv encoder with ``n_down``
      stride-2 stages, video-mixer blocks, conv decoder) for next-frame tasks; it also
      takes ``norm_position="post"`` (the official ConvS5 block order) and ``output``
      ``"sigmoid"`` / ``"tanh"`` (predictions bounded to [0, 1] / [−1, 1]).

    ``pooling="auto"`` takes the task's choice (per-step outputs for per-step targets;
    ``"sequence"``) or, for ``"image"``, ``"mean"``; ``"image"`` also takes ``"corners"``
    (the four corner patches concatenated, pLSTM's pooling). ``mixer_options`` are the mixer's keyword options
    (``seqmodels.layers.build``); ``layer_options`` are per-layer overrides of them,
    cycled over the layers (``({"mode": "P"}, {"mode": "D"})`` alternates pLSTM's two
    modes; on the command line a JSON list).
    """

    mixer: str = "aaren"
    d_model: int = 64
    n_layers: int = 2
    mixer_options: dict[str, Any] = field(default_factory=dict)
    mlp_ratio: int = 4
    norm: str = "layer"
    dropout: float = 0.0
    pooling: str = "auto"
    kind: str = "sequence"
    patch_size: int = 4
    n_down: int = 1
    norm_position: str = "pre"
    output: str = "linear"
    layer_options: tuple[dict[str, Any], ...] = ()


@config_class
class TaskConfig:
    """A task from ``seqmodels.tasks.task_names()`` and its options."""

    name: str = "mqar"
    options: dict[str, Any] = field(default_factory=dict)


@config_class
class OptimizerConfig:
    """AdamW with warmup + cosine decay, clipping, parameter groups (see ``optim.py``).

    ``clip_norm=0`` turns clipping off. ``accumulation_steps`` splits each step's
    batch into that many micro-batches whose gradients are summed before one update.
    """

    learning_rate: float = 1e-3
    ssm_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    warmup_steps: int = 100
    end_lr_ratio: float = 0.0
    clip_norm: float = 1.0
    accumulation_steps: int = 1


@config_class
class TrainConfig:
    """The loop. Steps count optimizer updates; ``*_every=0`` means only at the end.

    ``precision="bfloat16"`` runs activations in bfloat16 (parameters stay float32).
    ``eval_batches`` batches of ``batch_size`` evaluate synthetic tasks (finite data
    sets are evaluated whole). ``tensorboard`` needs the ``tensorboard`` extra.
    """

    steps: int = 1000
    batch_size: int = 32
    seed: int = 0
    precision: str = "float32"
    log_every: int = 50
    eval_every: int = 0
    eval_batches: int = 8
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    tensorboard: bool = False
    plot: bool = True


@config_class
class MeshConfig:
    """Device mesh ``(data, seq)``. ``data=-1`` uses every device not taken by ``seq``.

    The batch is sharded on ``data`` and parameters are replicated. ``seq > 1`` splits
    every sequence across the ``seq`` devices (sequence parallelism): inputs and
    per-step targets are sharded along time, and every core scan of the mixers runs
    sharded (``seqmodels.scans.sequence_parallel``: local scans, an exchange of
    per-shard summaries, a rerun from the true entering state), so activation memory
    per device falls as ``1/seq``. The sharded axis is the mixer's axis 1: the sequence,
    the image rows ``H`` of 2-D mixers, the frames ``T`` of video mixers. Operations
    along time outside the scans (short or FFT convolutions, flips) are left to GSPMD,
    which exchanges halos or gathers. Mixers that cannot (``supports_sequence_parallel
    = False``: routing) are rejected when the experiment is built. Across several
    processes (multi-host) the mesh spans every process's devices. On a CPU, start with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` to split the host into ``N`` devices.
    """

    data: int = -1
    seq: int = 1


@config_class
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)


# ---------------------------------------------------------------------------------
# typed values


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _literal(text: str) -> Any:
    """A Python/JSON literal (``2``, ``0.5``, ``true``, ``[1, 2]``), else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false", "none", "null"):
        return {"true": True, "false": False}.get(lowered)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (a string from the command line, or a JSON/Python value) as type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return _literal(value) if isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: cannot read {value!r} as {tp}")
    try:
        if tp is bool:
            return _parse_bool(value) if isinstance(value, str) else _check(value, bool)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            return int(value) if isinstance(value, str) else _check(value, int)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            return _check(value, str)
        if origin is tuple:
            if isinstance(value, str) and value.strip().startswith("["):  # a JSON list
                value = json.loads(value)
            items = ([s for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value))
            item_type = args[0] if args else Any
            return tuple(coerce(item, item_type, key) for item in items)
        if origin is dict or tp is dict:
            parsed = json.loads(value) if isinstance(value, str) else value
            return dict(_check(parsed, dict))
    except (ValueError, TypeError, json.JSONDecodeError):
        pass
    else:
        raise ConfigError(f"{key}: unsupported field type {tp}")  # pragma: no cover
    raise ConfigError(f"{key}: cannot read {value!r} as {getattr(tp, '__name__', tp)}")


def _check(value, tp):
    if not isinstance(value, tp):
        raise TypeError
    return value


# ---------------------------------------------------------------------------------
# dicts, JSON, files


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_json(config: Config) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=False)


def from_dict(data: Mapping[str, Any], cls=Config, prefix: str = "") -> Any:
    """Build ``cls`` from nested dicts; unknown keys raise ``ConfigError`` listing valid ones."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown key(s) {[prefix + k for k in unknown]}{where}; valid keys: {_valid_keys(cls)}")
    values = {}
    for name, value in data.items():
        tp = types_[name]
        if dataclasses.is_dataclass(tp):
            values[name] = from_dict(value, tp, f"{prefix}{name}.")
        else:
            values[name] = coerce(value, tp, prefix + name)
    return cls(**values)


def resolve_config_path(spec: str | Path, search: Sequence[Path] = ()) -> Path:
    """A config file path, or a bare name looked up as ``<dir>/<name>.py`` in ``search``."""
    path = Path(spec)
    if path.is_file():
        return path
    for directory in search:
        candidate = Path(directory) / f"{spec}.py"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config {str(spec)!r} not found (a .py file with get_config(), a config.json, "
                      f"or a name in {', '.join(str(d) for d in search) or 'configs/'})")


def load_config(spec: str | Path, search: Sequence[Path] = ()) -> Config:
    """Load a ``.py`` config file (``get_config()``) or a saved ``config.json``; validated."""
    path = resolve_config_path(spec, search)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON ({err})") from err
        config = from_dict(data)
    else:
        config = _run_config_module(path)
    return validate(config)


def _run_config_module(path: Path) -> Config:
    """``get_config()`` of the Python file ``path``; any error in the file becomes a ``ConfigError``."""
    module_spec = importlib.util.spec_from_file_location(f"seqmodels_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as err:
        raise ConfigError(f"{path}: syntax error at line {err.lineno}: {err.msg}") from err
    except Exception as err:
        raise ConfigError(f"{path} failed to load: {type(err).__name__}: {err}") from err
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"{path} defines no get_config()")
    try:
        config = module.get_config()
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{path}: get_config() failed: {type(err).__name__}: {err}") from err
    if not isinstance(config, Config):
        raise ConfigError(f"{path}: get_config() must return a seqmodels.train.Config; got {type(config).__name__}")
    return config


# ---------------------------------------------------------------------------------
# overrides


def parse_override_args(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """``["--train.steps", "200", "--model.mixer=aaren", "task.name=mqar"]`` ->
    ``[("train.steps", "200"), ...]``. A flag without a value (``--train.tensorboard``)
    gets ``None`` (true for booleans)."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key = arg[2:]
            if "=" in key:
                key, value = key.split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = None
        elif "=" in arg:
            key, value = arg.split("=", 1)
        else:
            raise ConfigError(f"cannot read override {arg!r}: use --section.key VALUE or section.key=VALUE")
        pairs.append((key, value))
        i += 1
    return pairs


def _nested_options(config: Config, section: str) -> tuple[str, dict[str, Any]] | None:
    """For ``task.options`` / ``model.mixer_options``: (owner name, {option: default})."""
    if section == "task.options":
        from ..tasks import task_options
        return config.task.name, task_options(config.task.name)
    if section == "model.mixer_options":
        from .. import layers
        return config.model.mixer, {n: p.default for n, p in layers.spec(config.model.mixer).options().items()}
    return None


def _option_type(config: Config, section: str, option: str) -> Any:
    if section == "task.options":
        from ..tasks import task_class
        return _field_types(task_class(config.task.name))[option]
    return Any


def apply_overrides(config: Config, overrides: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> Config:
    """``config`` with dotted-key overrides applied (values typed by the field types).

    Top-level fields are set first, so ``task.name=...`` together with
    ``task.options.x=...`` types ``x`` by the new task.
    """
    pairs = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides)
    pairs.sort(key=lambda kv: kv[0].count("."))
    for key, value in pairs:
        config = _apply_one(config, key, value)
    return validate(config)


def _apply_one(config: Config, key: str, value: Any) -> Config:
    parts = key.split(".")
    sections = _field_types(Config)
    if parts[0] not in sections:
        raise ConfigError(f"unknown key {key!r}: valid sections: {', '.join(sections)}")
    section_cls = sections[parts[0]]
    fields = _field_types(section_cls)
    if len(parts) < 2 or parts[1] not in fields:
        valid = ", ".join(f"{parts[0]}.{name}" for name in fields)
        raise ConfigError(f"unknown key {key!r}; valid keys: {valid}")
    section = getattr(config, parts[0])
    name, tp = parts[1], fields[parts[1]]
    if len(parts) == 2:
        if value is None:
            value = "true" if tp is bool else None
        if value is None:
            raise ConfigError(f"{key} needs a value")
        new = coerce(value, tp, key)
        reset = {("task", "name"): "options", ("model", "mixer"): "mixer_options"}.get((parts[0], name))
        if reset and new != getattr(section, name):
            # another task or mixer: the options written for the old one do not apply
            section = dataclasses.replace(section, **{reset: {}})
    else:
        dotted = f"{parts[0]}.{name}"
        nested = _nested_options(config, dotted)
        if nested is None or len(parts) != 3:
            raise ConfigError(f"unknown key {key!r}: {dotted} has no sub-keys")
        owner, options = nested
        option = parts[2]
        if option not in options:
            listed = ", ".join(f"{dotted}.{n}" for n in options) or "(none)"
            raise ConfigError(f"unknown key {key!r} for {owner!r}; valid keys: {listed}")
        if value is None:
            raise ConfigError(f"{key} needs a value")
        new = dict(getattr(section, name))
        new[option] = coerce(value, _option_type(config, dotted, option), key)
    return dataclasses.replace(config, **{parts[0]: dataclasses.replace(section, **{name: new})})


# ---------------------------------------------------------------------------------
# validation


def _one_of(key: str, value, valid: Sequence) -> None:
    if value not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, valid))}; got {value!r}")


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{key} must be ≥ {low}; got {value!r}")


def _finite_in(key: str, value, low: float, high: float = math.inf, *, open_low: bool = False,
               open_high: bool = False) -> None:
    """``value`` must be a finite real number in the given interval (a NaN fails every comparison)."""
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if isinstance(value, bool) or not math.isfinite(value) or not (above and below):
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ConfigError(f"{key} must be a finite number in {interval}; got {value!r}")


def _check_optimizer(opt: OptimizerConfig) -> None:
    _finite_in("optimizer.learning_rate", opt.learning_rate, 0, open_low=True)
    _finite_in("optimizer.eps", opt.eps, 0, open_low=True)
    for key in ("ssm_learning_rate", "weight_decay", "clip_norm", "end_lr_ratio"):
        _finite_in(f"optimizer.{key}", getattr(opt, key), 0)
    for key in ("b1", "b2"):
        _finite_in(f"optimizer.{key}", getattr(opt, key), 0, 1, open_high=True)
    _at_least("optimizer.accumulation_steps", opt.accumulation_steps, 1)
    _at_least("optimizer.warmup_steps", opt.warmup_steps, 0)


def validate(config: Config) -> Config:
    """Reject an invalid config before any compute (names, options, ranges); returns it
    with task options typed by the task's fields (e.g. JSON lists as tuples)."""
    from .. import layers
    from ..models.video import NORM_POSITIONS, OUTPUTS as VIDEO_OUTPUTS
    from ..tasks import build_task, task_class, task_names

    for section in ("model", "task", "optimizer", "train", "mesh"):
        expected = _field_types(Config)[section]
        if not isinstance(getattr(config, section), expected):
            raise ConfigError(f"config.{section} must be a {expected.__name__}")
    model, train, opt = config.model, config.train, config.optimizer
    _one_of("model.mixer", model.mixer, layers.names())
    valid_options = layers.spec(model.mixer).options()
    for i, options in [("mixer_options", model.mixer_options)] + [
            (f"layer_options[{i}]", o) for i, o in enumerate(model.layer_options)]:
        unknown = sorted(set(options) - set(valid_options))
        if unknown:
            listed = ", ".join(f"model.mixer_options.{n}" for n in valid_options)
            raise ConfigError(f"unknown key(s) {unknown} in model.{i} for mixer {model.mixer!r}; "
                              f"valid keys: {listed}")
    _one_of("model.pooling", model.pooling, POOLINGS)
    _one_of("model.norm", model.norm, ("layer", "rms"))
    _one_of("model.kind", model.kind, MODEL_KINDS)
    if model.kind == "image":
        _one_of("model.pooling (model.kind='image')", model.pooling, IMAGE_POOLINGS)
    elif model.pooling == "corners":
        raise ConfigError(f"model.pooling='corners' needs model.kind='image'; got model.kind={model.kind!r}")
    _one_of("model.norm_position", model.norm_position, NORM_POSITIONS)
    _one_of("model.output", model.output, tuple(VIDEO_OUTPUTS))
    for key, default in (("norm_position", "pre"), ("output", "linear")):
        if getattr(model, key) != default and model.kind != "video":
            raise ConfigError(f"model.{key}={getattr(model, key)!r} needs model.kind='video'; "
                              f"got model.kind={model.kind!r}")
    _at_least("model.patch_size", model.patch_size, 1)
    _at_least("model.n_down", model.n_down, 0)
    _one_of("task.name", config.task.name, task_names())
    option_types = _field_types(task_class(config.task.name))
    unknown = sorted(set(config.task.options) - set(option_types))
    if unknown:
        listed = ", ".join(f"task.options.{n}" for n in option_types) or "(none)"
        raise ConfigError(f"unknown key(s) {unknown} in task.options for task {config.task.name!r}; "
                          f"valid keys: {listed}")
    options = {k: coerce(v, option_types[k], f"task.options.{k}") for k, v in config.task.options.items()}
    config = dataclasses.replace(config, task=dataclasses.replace(config.task, options=options))
    try:
        build_task(config.task.name, **options)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    _one_of("train.precision", train.precision, PRECISIONS)
    for key in ("d_model", "n_layers", "mlp_ratio"):
        _at_least(f"model.{key}", getattr(model, key), 1)
    if not 0 <= model.dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1); got {model.dropout}")
    for key in ("steps", "batch_size", "eval_batches", "keep_checkpoints"):
        _at_least(f"train.{key}", getattr(train, key), 1)
    for key in ("seed", "log_every", "eval_every", "checkpoint_every"):
        _at_least(f"train.{key}", getattr(train, key), 0)
    _check_optimizer(opt)
    if train.batch_size % opt.accumulation_steps:
        raise ConfigError(f"train.batch_size={train.batch_size} must be divisible by "
                          f"optimizer.accumulation_steps={opt.accumulation_steps}")
    if config.mesh.seq < 1 or config.mesh.data == 0 or config.mesh.data < -1:
        raise ConfigError(f"mesh.seq must be ≥ 1 and mesh.data ≥ 1 or -1 (all devices); got {config.mesh}")
    return config


# ---------------------------------------------------------------------------------
# describing and comparing configs


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp).replace("typing.", "")


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def config_reference() -> str:
    """Every section and key of ``Config`` with its type and default, one section per line
    group (the ``seqmodels train --help`` listing)."""
    lines = []
    for section in dataclasses.fields(Config):
        cls = _field_types(Config)[section.name]
        lines.append(f"  {section.name}:")
        types_ = _field_types(cls)
        for f in dataclasses.fields(cls):
            lines.append(f"    --{section.name}.{f.name} {_type_name(types_[f.name])} (default {_default(f)!r})")
    return "\n".join(lines)


def flat_values(config: Config) -> dict[str, Any]:
    """``{"section.key": value}`` of ``config`` as JSON values; option dicts one key per option."""
    flat = {}
    for section, values in json.loads(to_json(config)).items():
        for key, value in values.items():
            if isinstance(value, dict):  # task.options, model.mixer_options
                flat.update({f"{section}.{key}.{option}": v for option, v in value.items()})
            else:
                flat[f"{section}.{key}"] = value
    return flat


def config_differences(a: Config, b: Config) -> list[str]:
    """The dotted keys whose values differ between ``a`` and ``b``, sorted."""
    flat_a, flat_b = flat_values(a), flat_values(b)
    missing = object()
    return sorted(k for k in set(flat_a) | set(flat_b) if flat_a.get(k, missing) != flat_b.get(k, missing))
