"""Training: a generic loop over any mixer and task, configs, checkpoints, logging, CLI.

    from seqmodels.train import load_config, apply_overrides, train_and_evaluate
    config = apply_overrides(load_config("configs/quickstart.py"), {"train.steps": 200})
    metrics = train_and_evaluate(config, "runs/quickstart")
    model, config = load_model("runs/quickstart")      # the trained model, dropout off

The same from a shell: ``seqmodels train configs/quickstart.py --train.steps 200``.
See ``loop.py`` for the state, the steps, the auxiliary-loss mechanism and resuming.

The names below are imported on first use, so that ``seqmodels --help`` and the config
module load without jax.
"""

import importlib
from typing import Any

_EXPORTS = {
    "checkpoint": ("CheckpointError", "CheckpointSaveError", "Checkpointer", "DamagedCheckpointError"),
    "config": ("Config", "ConfigError", "MeshConfig", "ModelConfig", "OptimizerConfig", "TaskConfig",
               "TrainConfig", "apply_overrides", "load_config"),
    "inference": ("load_model",),
    "loop": ("Experiment", "NonFiniteLossError", "evaluate_checkpoint", "load_state", "sum_aux_losses",
             "train_and_evaluate"),
    "optim": ("make_optimizer", "param_labels"),
    "seeds": ("format_summary", "train_seeds"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
