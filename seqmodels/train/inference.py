"""From a run directory back to a model: ``load_model(workdir) -> (model, config)``.

    from seqmodels.train import load_model
    from seqmodels.models import generate

    model, config = load_model("runs/quickstart")
    tokens = generate(model, prompt, num_tokens=32)

The path is the one the training loop takes when it resumes: the run's ``config.json``
(``run_config``), the latest checkpoint restored into the abstract state of that config
(``loop.load_state``), and ``nnx.merge`` of the model's structure with the restored
parameters and other state.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flax import nnx

from ..tasks import build_task
from .config import Config, ConfigError, MeshConfig, load_config
from .loop import CHECKPOINT_DIR, build_model, evaluation_view, load_state
from .resume import CONFIG_FILE


def run_config(workdir: str | Path) -> Config:
    """The config a run in ``workdir`` was trained with (its ``config.json``)."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"workdir {str(workdir)!r} holds no {CONFIG_FILE}: not a run directory")
    return load_config(path)


def load_model(workdir: str | Path) -> tuple[nnx.Module, Config]:
    """The model of the latest checkpoint in ``workdir`` and the run's config.

    The model is in evaluation mode (dropout off) and lives on the default device,
    whatever mesh the run trained on. Raises ``ConfigError`` when ``workdir`` is not a
    run directory and ``FileNotFoundError`` when it has no checkpoint yet.
    """
    config = run_config(workdir)
    single_device = dataclasses.replace(config, mesh=MeshConfig(data=1, seq=1))
    restored = load_state(single_device, workdir)
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {Path(workdir) / CHECKPOINT_DIR}")
    _, state = restored
    task = build_task(config.task.name, **config.task.options)
    graphdef = nnx.split(build_model(config, task), nnx.Param, ...)[0]
    return evaluation_view(nnx.merge(graphdef, state["params"], state["rest"])), config
