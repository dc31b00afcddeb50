"""Training: a generic loop over any mixer and task, configs, checkpoints, logging, CLI.

    from seqmodels.train import load_config, apply_overrides, train_and_evaluate
    config = apply_overrides(load_config("configs/quickstart.py"), {"train.steps": 200})
    metrics = train_and_evaluate(config, "runs/quickstart")

The same from a shell: ``seqmodels train configs/quickstart.py --train.steps 200``.
See ``loop.py`` for the state, the steps, the auxiliary-loss mechanism and resuming.
"""

from .checkpoint import CheckpointError as CheckpointError
from .checkpoint import Checkpointer as Checkpointer
from .checkpoint import CheckpointSaveError as CheckpointSaveError
from .checkpoint import DamagedCheckpointError as DamagedCheckpointError
from .config import Config as Config
from .config import ConfigError as ConfigError
from .config import MeshConfig as MeshConfig
from .config import ModelConfig as ModelConfig
from .config import OptimizerConfig as OptimizerConfig
from .config import TaskConfig as TaskConfig
from .config import TrainConfig as TrainConfig
from .config import apply_overrides as apply_overrides
from .config import load_config as load_config
from .loop import Experiment as Experiment
from .loop import NonFiniteLossError as NonFiniteLossError
from .loop import evaluate_checkpoint as evaluate_checkpoint
from .loop import load_state as load_state
from .loop import sum_aux_losses as sum_aux_losses
from .loop import train_and_evaluate as train_and_evaluate
from .optim import make_optimizer as make_optimizer
from .optim import param_labels as param_labels
