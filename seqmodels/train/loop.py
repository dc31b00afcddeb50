"""The training loop: ``train_and_evaluate(config, workdir)`` trains any registered mixer
on any task, from Python or from the ``seqmodels`` command line.

State. A run's state is one pytree: the model's parameters (``params``) and its other
state (``rest``: RNG streams, ...) from ``nnx.split(model, nnx.Param, ...)``, the
optax state, the ``step`` (optimizer updates done), the run's ``rng`` key data, and
the ``data_position`` (training batches consumed). Checkpoints hold all of it.

Steps. The hot train step is ``jax.jit`` over that split state with the state's
buffers donated (``nnx.jit`` costs several times more per step on small models).
Gradient accumulation splits a step's batch into ``accumulation_steps`` strided
micro-batches inside the step and sums their gradients, so one step is one update
whatever the accumulation. Dropout is reseeded every step from ``(rng, step)``.
``train.precision="bfloat16"`` runs activations in bfloat16 against float32
parameters (``SequenceModel(..., dtype=)``).

Auxiliary losses. A layer adds a term to the training loss by sowing it::

    self.sow(nnx.Intermediate, "aux_loss", value)      # a scalar, already weighted

The train step runs the model under ``nnx.capture(model, nnx.Intermediate)``, so
sown values are returned to it instead of being stored in the model (no state to
clear); it sums every captured value named ``aux_loss`` (a layer called several
times contributes each call) and adds the sum to the task loss before
differentiating. The train metrics report it as ``train/aux_loss``; evaluation
reports the task loss alone. Other intermediates are ignored.

Data. Task batches are a pure function of ``(seed, split, index)``: batch ``i`` of
training is the ``i``-th update's, so a resumed run reads exactly the batches an
uninterrupted one would, and its parameters end bit-identical. Evaluation data
uses the fixed seed ``EVAL_SEED`` so runs with different seeds share a test set.

Parallelism. A ``(data, seq)`` device mesh over all devices (``config.mesh``): the
batch is sharded along ``data``, the state is replicated. With ``mesh.seq > 1`` the
sequences are split along ``seq`` too (sequence parallelism): batch arrays with the
inputs' time axis are sharded ``("data", "seq")``, and the train and eval steps are
traced inside ``scans.sequence_parallel(mesh, "seq")``, so every core scan of every
layer runs sharded along time (``seqmodels.scans.parallel``); other operations along
time (embeddings and MLPs are per step; short and FFT convolutions, flips) are left
to GSPMD, which exchanges halos or gathers. A mixer that declares
``supports_sequence_parallel = False`` (routing) is refused before anything compiles.

Multi-host. ``jax.distributed`` is initialized only when a multi-host environment is
detected (``maybe_initialize_distributed``: a coordinator address in the environment
or a cluster launcher); on CPU the processes exchange collectives over gloo. Every
process reads the rows of each global batch that its devices hold (``Task.batch_part``
of a pure function of the step: file-backed tasks read only those rows) and places
them; only process 0 prints and writes logs, and every process takes
part in checkpoints (orbax's multi-process mode).

Failure. A non-finite loss or gradient norm stops the run with
``NonFiniteLossError`` naming the step; state is checked before every checkpoint,
so the last checkpoint on disk is always a good one. A failed checkpoint save (a full
disk) stops the run at the next step with ``CheckpointSaveError``, its partial files
removed; a damaged checkpoint is skipped when resuming (``checkpoint.py``).

Resuming. A run resumes from the newest checkpoint in its workdir; the new config is
compared with the run's ``config.json`` key by key, and a change that would alter
the updates is refused unless ``allow_changes`` names it; accepted changes are
recorded in ``config_changes.jsonl`` (``resume.py``).
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from .. import layers, scans
from ..models import ImageModel, SequenceModel, VideoModel
from ..tasks import Task, build_task
from . import resume
from .checkpoint import Checkpointer, finished_steps
from .config import Config, ConfigError, ModelConfig, to_json, validate
from .optim import learning_rate_schedule, make_optimizer
from .writers import (METRICS_FILE, PLOT_FILE, JsonlWriter, MultiWriter, NullWriter, Progress,
                      TensorBoardWriter, config_summary, format_metrics, plot_metrics)

AUX_LOSS = "aux_loss"
EVAL_SEED = 0
CHECKPOINT_DIR = "checkpoints"
# flush device metrics (and check them for NaN) at least this often
MAX_PENDING_STEPS = 100


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient became NaN or infinite."""


# ---------------------------------------------------------------------------------
# multi-host and mesh


def multi_host_environment() -> bool:
    """Whether this process is one of several (a coordinator or a cluster launcher is set)."""
    env = os.environ
    def count(name: str) -> int:
        try:
            return int(env.get(name, "1"))
        except ValueError:
            return 1
    return ("JAX_COORDINATOR_ADDRESS" in env or count("JAX_NUM_PROCESSES") > 1
            or count("SLURM_NTASKS") > 1 or count("OMPI_COMM_WORLD_SIZE") > 1
            or "," in env.get("TPU_WORKER_HOSTNAMES", "") or "MEGASCALE_COORDINATOR_ADDRESS" in env)


def maybe_initialize_distributed() -> None:
    """``jax.distributed.initialize`` once, and only in a multi-host environment.

    Call it before any JAX computation. It reads the environment:

    * ``JAX_COORDINATOR_ADDRESS``: ``host:port`` of the coordinator service, which
      process 0 starts (e.g. ``localhost:12355`` for processes on one machine);
    * ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``: the number of processes and this
      one's rank (``0 … n-1``); without them jax asks a cluster launcher (SLURM,
      Open MPI, Kubernetes, Cloud TPU);
    * ``JAX_LOCAL_DEVICE_IDS`` (optional, read by jax): the devices this process uses.

    On CPU, devices of different processes exchange collectives over gloo
    (``jax_cpu_collectives_implementation``; ``JAX_CPU_COLLECTIVES_IMPLEMENTATION=mpi``
    chooses MPI instead).
    """
    if not multi_host_environment() or jax.distributed.is_initialized():
        return
    env = os.environ
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in env:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    ranks = {key: int(env[name]) for key, name in (("num_processes", "JAX_NUM_PROCESSES"),
                                                    ("process_id", "JAX_PROCESS_ID")) if name in env}
    jax.distributed.initialize(**ranks)


def _more_devices_hint(needed: int) -> str:
    """How to get ``needed`` devices: on CPU, XLA splits the host into that many."""
    if jax.default_backend() == "cpu":
        return (f"; on CPU, start with XLA_FLAGS=--xla_force_host_platform_device_count={needed} "
                f"to split the host into {needed} devices")
    return ""


def make_mesh(data: int = -1, seq: int = 1) -> jax.sharding.Mesh:
    """A ``(data, seq)`` mesh; ``data=-1`` takes every device not used by ``seq``."""
    devices = jax.devices()
    if data == -1:
        if len(devices) % seq:
            raise ConfigError(f"mesh.seq={seq} does not divide the {len(devices)} devices"
                              f"{_more_devices_hint(seq * math.ceil(len(devices) / seq))}")
        data = len(devices) // seq
    if data * seq > len(devices):
        raise ConfigError(f"mesh {data}×{seq} (mesh.data × mesh.seq) needs {data * seq} devices; "
                          f"{len(devices)} available{_more_devices_hint(data * seq)}")
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, seq), ("data", "seq"), auto, devices=devices[:data * seq])


# ---------------------------------------------------------------------------------
# model, losses, aux losses


def check_mixer_options(model: ModelConfig) -> None:
    """Build one mixer for each distinct set of layer options, so that an option the mixer
    rejects (``ValueError``/``TypeError``) becomes a ``ConfigError`` naming its key (those
    the mixer's message mentions, else all)."""
    cycle = model.layer_options or ({},)
    for index, layer in enumerate(cycle[:model.n_layers]):
        options = dict(model.mixer_options, **layer)
        try:
            layers.build(model.mixer, model.d_model, rngs=nnx.Rngs(0), **options)
        except (ValueError, TypeError) as err:
            given = {f"model.layer_options[{index}].{name}" if name in layer else f"model.mixer_options.{name}":
                     value for name, value in options.items()}
            given["model.d_model"] = model.d_model
            named = {key: value for key, value in given.items() if key.rsplit(".", 1)[1] in str(err)}
            listed = ", ".join(f"{key}={value!r}" for key, value in (named or given).items())
            raise ConfigError(f"mixer {model.mixer!r} rejects {listed}: {err}") from err


def build_model(config: Config, task: Task) -> nnx.Module:
    """The ``config.model.kind`` backbone around ``config.model.mixer``, sized for ``task``.

    Built before anything compiles; when a mixer rejects its options, the error is a
    ``ConfigError`` that names the config keys (``check_mixer_options``).
    """
    try:
        return _backbone(config, task)
    except (ValueError, TypeError):
        check_mixer_options(config.model)
        raise


def _backbone(config: Config, task: Task) -> nnx.Module:
    io, model = task.io(), config.model
    params_key, run_key = run_keys(config.train.seed)
    rngs = nnx.Rngs(params=params_key, dropout=run_key)
    mixer_cls = layers.spec(model.mixer).cls
    if model.kind == "image":
        if io.input_dim is None or io.pooling == "none":
            raise ConfigError(f"model.kind='image' needs a task of images with one label each; "
                              f"task {config.task.name!r} is not one")
        images = task.batch("train", 0, 1, config.train.seed)["inputs"]
        if images.ndim != 4:
            raise ConfigError(f"model.kind='image' needs (batch, H, W, C) inputs; task {config.task.name!r} "
                              f"gives shape {images.shape}")
        return ImageModel(model.mixer, in_channels=io.input_dim, num_classes=io.output_dim,
                          image_size=images.shape[1:3], patch_size=model.patch_size, d_model=model.d_model,
                          n_layers=model.n_layers, mlp_ratio=model.mlp_ratio, dropout=model.dropout,
                          norm=model.norm, mixer_options=dict(model.mixer_options),
                          layer_options=model.layer_options,
                          pooling="mean" if model.pooling == "auto" else model.pooling, rngs=rngs)
    if model.kind == "video":
        if not (mixer_cls.temporal and task.loss == "mse" and io.pooling == "none" and io.input_dim):
            raise ConfigError(f"model.kind='video' needs a video mixer and a next-frame task (per-frame "
                              f"regression targets); got mixer {model.mixer!r} and task {config.task.name!r}")
        return VideoModel(in_channels=io.input_dim, out_channels=io.output_dim, d_model=model.d_model,
                          n_layers=model.n_layers, n_down=model.n_down, mixer=model.mixer,
                          mixer_options=dict(model.mixer_options), layer_options=model.layer_options,
                          mlp_ratio=model.mlp_ratio, norm=model.norm, norm_position=model.norm_position,
                          output=model.output, rngs=rngs)
    pooling = io.pooling if model.pooling == "auto" else model.pooling
    if (io.pooling == "none") != (pooling == "none"):
        raise ConfigError(f"task {config.task.name!r} has {'per-step' if io.pooling == 'none' else 'pooled'} "
                          f"targets; model.pooling={model.pooling!r} does not fit (use 'auto')")
    return SequenceModel(model.mixer, d_model=model.d_model, n_layers=model.n_layers, output_dim=io.output_dim,
                         vocab_size=io.vocab_size, input_dim=io.input_dim, pooling=pooling,
                         dropout=model.dropout, mixer_options=dict(model.mixer_options),
                         layer_options=model.layer_options, mlp_ratio=model.mlp_ratio, norm=model.norm, rngs=rngs)


def evaluation_view(model: nnx.Module) -> nnx.Module:
    """``model`` with dropout (every module that has a ``deterministic`` flag) turned off."""
    if any(hasattr(module, "deterministic") for _, module in nnx.iter_modules(model)):
        return nnx.view(model, deterministic=True)
    return model


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(params_key, run_key)``: initialization, and the run's key (dropout of step ``s``
    is drawn from ``fold_in(run_key, s)``)."""
    params_key, run_key = jax.random.split(jax.random.key(seed))
    return params_key, run_key


def fit_layout(batch: dict[str, np.ndarray], mixer_cls, tokens: bool) -> dict[str, np.ndarray]:
    """Merge leading data axes so the inputs have as many as the mixer mixes.

    Images ``(B, H, W, C)`` become pixel sequences ``(B, H·W, C)`` for 1-D mixers, videos
    ``(B, T, H, W, C)`` become ``(B, T·H, W, C)`` for 2-D ones; a task with fewer axes
    than the mixer needs is an error.
    """
    inputs = batch["inputs"]
    have = inputs.ndim - (1 if tokens else 2)
    want = mixer_cls.input_ndim() - 2
    if have == want:
        return batch
    if have < want or batch["weights"].ndim > 1:
        raise ConfigError(f"the task's inputs {inputs.shape} have {have} data axes; mixer "
                          f"{mixer_cls.__name__} mixes {mixer_cls.layout()}")
    merged = int(np.prod(inputs.shape[1:2 + have - want]))
    return dict(batch, inputs=inputs.reshape((inputs.shape[0], merged) + inputs.shape[2 + have - want:]))


def weighted_loss(kind: str, outputs, targets, weights):
    """Sums over the batch: ``(Σ w·loss, Σ w·metric, Σ w)``; metric is accuracy or MSE."""
    if kind == "cross_entropy":
        losses = optax.softmax_cross_entropy_with_integer_labels(outputs, targets)
        metric = (jnp.argmax(outputs, axis=-1) == targets).astype(jnp.float32)
    else:  # mean over every target axis beyond the weights' (features, or pixels of a frame)
        losses = jnp.square(outputs - targets.astype(outputs.dtype))
        losses = jnp.mean(losses, axis=tuple(range(weights.ndim, losses.ndim)))
        metric = losses
    return jnp.sum(losses * weights), jnp.sum(metric * weights), jnp.sum(weights)


def sum_aux_losses(intermediates: nnx.State) -> jax.Array:
    """The sum of every value sown as ``"aux_loss"`` in captured ``intermediates`` (0 if none)."""
    total = jnp.zeros((), jnp.float32)
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        if any(getattr(entry, "key", None) == AUX_LOSS for entry in path):
            total = total + jnp.sum(jnp.asarray(leaf, jnp.float32))
    return total


def _forward(graphdef, params, rest, batch, *, loss_kind, dtype, dropout_key=None):
    # copy: fresh Variables at this trace level (``rest`` enters ``jax.grad`` undifferentiated)
    model = nnx.merge(graphdef, params, rest, copy=True)
    if dropout_key is not None:
        nnx.reseed(model, dropout=dropout_key)
    outputs, intermediates = nnx.capture(model, nnx.Intermediate)(batch["inputs"], dtype=dtype)
    sums = weighted_loss(loss_kind, outputs, batch["targets"], batch["weights"])
    return sums, sum_aux_losses(intermediates), nnx.split(model, nnx.Param, ...)[2]


def _micro_batches(x, k: int):
    """``(B, ...)`` -> ``(k, B/k, ...)``, micro-batch ``j`` = rows ``j, j+k, ...`` (spread over devices)."""
    return x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)


def _train_step(state, batch, *, graphdef, tx, loss_kind, dtype, accumulation):
    params = state["params"]
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    total_weight = jnp.maximum(jnp.sum(batch["weights"]), 1.0)

    def loss_fn(params, rest, micro, index):
        (loss_sum, metric_sum, weight), aux, rest = _forward(
            graphdef, params, rest, micro, loss_kind=loss_kind, dtype=dtype,
            dropout_key=jax.random.fold_in(step_key, index))
        return loss_sum / total_weight + aux / accumulation, (rest, loss_sum, metric_sum, aux)

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if accumulation == 1:
        grads, (rest, loss_sum, metric_sum, aux) = grad_fn(params, state["rest"], batch, 0)
    else:
        def body(carry, xs):
            grads, rest, loss_sum, metric_sum, aux = carry
            micro, index = xs
            g, (rest, l, m, a) = grad_fn(params, rest, micro, index)
            return (jax.tree.map(jnp.add, grads, g), rest, loss_sum + l, metric_sum + m, aux + a), None

        zero = jnp.zeros((), jnp.float32)
        carry = (jax.tree.map(jnp.zeros_like, params), state["rest"], zero, zero, zero)
        micro = jax.tree.map(partial(_micro_batches, k=accumulation), batch)
        (grads, rest, loss_sum, metric_sum, aux), _ = jax.lax.scan(
            body, carry, (micro, jnp.arange(accumulation)))
        aux = aux / accumulation
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_state = dict(state, params=optax.apply_updates(params, updates), rest=rest, opt_state=opt_state,
                     step=state["step"] + 1, data_position=state["data_position"] + 1)
    metrics = {"loss": loss_sum / total_weight + aux, "metric": metric_sum / total_weight,
               "aux_loss": aux, "grad_norm": _global_norm(grads)}
    return new_state, metrics


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(tree)))


def _eval_step(params, rest, batch, *, graphdef, loss_kind, dtype):
    (loss_sum, metric_sum, weight), _, _ = _forward(graphdef, params, rest, batch, loss_kind=loss_kind, dtype=dtype)
    return jnp.stack([loss_sum, metric_sum, weight])


def _place(sharding: NamedSharding, x) -> jax.Array:
    """``x`` (the same on every process) as a global array of ``sharding``: each process
    fills the parts its devices hold (``jax.device_put`` only reaches local devices)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_place(sharding, jax.random.key_data(x)), impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _in_sequence_parallel(mesh: jax.sharding.Mesh, step):
    """``step`` traced inside ``scans.sequence_parallel(mesh, "seq")`` (the context is read
    at trace time, so it must be entered inside the jitted function)."""
    def traced(*args, **kwargs):
        with scans.sequence_parallel(mesh, axis="seq"):
            return step(*args, **kwargs)
    return traced


# ---------------------------------------------------------------------------------
# an experiment: everything built from a config, before any step


class Experiment:
    """The task, model, optimizer, mesh and compiled steps of a config."""

    def __init__(self, config: Config):
        self.config = config = validate(config)
        self.task = build_task(config.task.name, **config.task.options)
        self.mixer_cls = layers.spec(config.model.mixer).cls
        if self.task.requires_causal and not self.mixer_cls.causal:
            raise ConfigError(f"task {config.task.name!r} predicts future inputs and needs a causal mixer; "
                              f"{config.model.mixer!r} is not causal")
        if config.mesh.seq > 1 and not self.mixer_cls.supports_sequence_parallel:
            raise ConfigError(f"mixer {config.model.mixer!r} cannot split its sequences across devices "
                              f"(mesh.seq={config.mesh.seq}): its mixing along the sequence does not run "
                              f"through the core scans; use mesh.seq=1")
        self.mesh = make_mesh(config.mesh.data, config.mesh.seq)
        self.sequence_parallel = self.mesh.shape["seq"] > 1
        data_size = self.mesh.shape["data"]
        if config.train.batch_size % data_size:
            raise ConfigError(f"train.batch_size={config.train.batch_size} must be divisible by the "
                              f"{data_size} devices of the mesh's data axis")
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self.dtype = jnp.dtype(config.train.precision)

        model = build_model(config, self.task)
        self.graphdef, params, _ = nnx.split(model, nnx.Param, ...)
        self.eval_graphdef = nnx.split(evaluation_view(model), nnx.Param, ...)[0]
        self.tx = make_optimizer(config.optimizer, params, config.train.steps)
        self.schedule = learning_rate_schedule(config.optimizer.learning_rate, config.optimizer, config.train.steps)
        self._model = model
        state_sharding = jax.tree.map(lambda _: self.replicated, self._state_of(model))
        traced = partial(_in_sequence_parallel, self.mesh) if self.sequence_parallel else (lambda step: step)
        self.train_step = jax.jit(
            traced(partial(_train_step, graphdef=self.graphdef, tx=self.tx, loss_kind=self.task.loss,
                           dtype=self.dtype, accumulation=config.optimizer.accumulation_steps)),
            donate_argnums=0, out_shardings=(state_sharding, self.replicated))
        self.eval_step = jax.jit(traced(partial(_eval_step, graphdef=self.eval_graphdef, loss_kind=self.task.loss,
                                                dtype=self.dtype)), out_shardings=self.replicated)

    def _state_of(self, model: nnx.Module) -> dict[str, Any]:
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return {"params": params, "rest": rest, "opt_state": self.tx.init(params),
                "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(run_keys(self.config.train.seed)[1]),
                "data_position": jnp.zeros((), jnp.int32)}

    def init_state(self) -> dict[str, Any]:
        """The state before the first step, replicated over the mesh (every process
        builds the same host values and places them on its own devices)."""
        return jax.tree.map(partial(_place, self.replicated), self._state_of(self._model))

    def abstract_state(self) -> dict[str, Any]:
        """Shapes, dtypes and shardings of the state (the target of a checkpoint restore)."""
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated),
                            self._state_of(self._model))

    def host_batch(self, split: str, index: int, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        """Rows ``rows`` of batch ``index`` of ``split`` (``Task.batch_part``), laid out for the model."""
        seed = self.config.train.seed if split == "train" else EVAL_SEED
        batch = self.task.batch_part(split, index, self.config.train.batch_size, seed, rows)
        if self.config.model.kind != "sequence":  # the image and video backbones take the task's layout
            return batch
        return fit_layout(batch, self.mixer_cls, tokens=self.task.io().vocab_size is not None)

    def batch_sharding_of(self, x: np.ndarray, length: int) -> NamedSharding:
        """``("data", "seq")`` for an array with the inputs' time axis (of ``length``
        steps, divisible by ``mesh.seq``) under sequence parallelism, else ``("data",)``."""
        seq = self.mesh.shape["seq"]
        if self.sequence_parallel and x.ndim >= 2 and x.shape[1] == length and length % seq == 0:
            return NamedSharding(self.mesh, PartitionSpec("data", "seq"))
        return self.batch_sharding

    def local_rows(self) -> slice:
        """The rows of a global batch that this process's devices hold (all rows on one process)."""
        size = self.config.train.batch_size
        held = [index[0].indices(size)[:2] for index in
                self.batch_sharding.addressable_devices_indices_map((size,)).values()]
        return slice(min(start for start, _ in held), max(stop for _, stop in held))

    def device_batch(self, split: str, index: int) -> dict[str, jax.Array]:
        """Batch ``index`` of ``split`` sharded over the mesh (``batch_sharding_of``).
        Each process reads only the rows its devices hold (``local_rows``) and places them."""
        rows = self.local_rows()
        batch = self.host_batch(split, index, rows)
        length = batch["inputs"].shape[1]

        def put(x):
            def local(i):
                start, stop, _ = i[0].indices(self.config.train.batch_size)
                return x[(slice(start - rows.start, stop - rows.start),) + i[1:]]
            shape = (self.config.train.batch_size,) + x.shape[1:]
            return jax.make_array_from_callback(shape, self.batch_sharding_of(x, length), local)
        return jax.tree.map(put, batch)

    def num_eval_batches(self, split: str) -> int:
        size = self.task.eval_size(split)
        return self.config.train.eval_batches if size is None else math.ceil(size / self.config.train.batch_size)

    def evaluate(self, state) -> dict[str, float]:
        """``{"<split>/loss": ..., "<split>/<metric>": ...}`` for every evaluation split."""
        results = {}
        for split in self.task.eval_splits():
            sums = sum(self.eval_step(state["params"], state["rest"], self.device_batch(split, i))
                       for i in range(self.num_eval_batches(split)))
            loss_sum, metric_sum, weight = (float(v) for v in jax.device_get(sums))
            results[f"{split}/loss"] = loss_sum / max(weight, 1.0)
            results[f"{split}/{self.task.metric}"] = metric_sum / max(weight, 1.0)
        return dict(results, **self.task.derived_metrics(results))

    def learning_rate(self, step: int) -> float:
        return float(self.schedule(step))


# ---------------------------------------------------------------------------------
# the loop


def _check_finite(pending: list[tuple[int, dict]], ckpt: Checkpointer) -> list[tuple[int, dict]]:
    """Fetch pending step metrics; raise ``NonFiniteLossError`` at the first bad step."""
    fetched = jax.device_get([metrics for _, metrics in pending])
    for (step, _), metrics in zip(pending, fetched):
        if not (np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])):
            ckpt.wait()
            last = ckpt.latest_step()
            kept = f"the last good checkpoint (step {last}) is kept in {ckpt.directory}" if last is not None \
                else "no checkpoint had been written yet"
            raise NonFiniteLossError(
                f"non-finite loss at step {step} (loss={float(metrics['loss'])}, "
                f"grad_norm={float(metrics['grad_norm'])}); stopping the run: {kept}")
    return [(step, metrics) for (step, _), metrics in zip(pending, fetched)]


def _add_step_metrics(sums: dict[str, float], fetched: list[tuple[int, dict]]) -> dict[str, float]:
    """``sums`` of step metrics (and their number of ``steps``) with ``fetched`` added."""
    sums = dict(sums)
    for _, metrics in fetched:
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        sums["steps"] = sums.get("steps", 0) + 1
    return sums


def _train_summary(exp: Experiment, sums: dict[str, float], step: int, rate: float) -> dict[str, float]:
    """The means of the step metrics over the logging interval (``sums``), and ``rate``."""
    mean = {key: value / sums["steps"] for key, value in sums.items() if key != "steps"}
    summary = {"train/loss": mean["loss"], f"train/{exp.task.metric}": mean["metric"]}
    if mean["aux_loss"] != 0:
        summary["train/aux_loss"] = mean["aux_loss"]
    summary.update({"train/grad_norm": mean["grad_norm"], "train/learning_rate": exp.learning_rate(step - 1),
                    "train/steps_per_second": rate})
    return summary


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


def train_and_evaluate(config: Config, workdir: str | Path, *, print_config: bool = False,
                       allow_changes: Sequence[str] = ()) -> dict[str, float]:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint if any), then
    evaluate; returns the final evaluation metrics (and ``"chance"``).

    ``allow_changes``: config keys (or sections, or ``"all"``) that may differ from the
    run's saved config when resuming although they alter the updates (``resume.py``).

    Prints a few-line summary of the config first (``config_summary``), or the whole
    config as JSON with ``print_config=True``; ``workdir/config.json`` always holds all of it.
    """
    maybe_initialize_distributed()
    config = validate(config)
    workdir = Path(workdir).absolute()
    primary = jax.process_index() == 0
    say = print if primary else (lambda *a, **k: None)
    changes = resume.check_config(config, workdir, allow_changes,
                                  resuming=bool(finished_steps(workdir / CHECKPOINT_DIR)))
    say(f"config:\n{to_json(config)}" if print_config else config_summary(config), flush=True)
    exp = Experiment(config)
    train = config.train
    say(f"devices: {jax.device_count()} ({jax.devices()[0].platform}), mesh {dict(exp.mesh.shape)}, "
        f"processes: {jax.process_count()}; workdir: {workdir}", flush=True)

    ckpt = Checkpointer(workdir / CHECKPOINT_DIR, keep=train.keep_checkpoints)
    writer, progress = NullWriter(), None
    try:
        restored = ckpt.restore_latest(exp.abstract_state(), set_aside_damaged=True)
        if restored is None:
            state, start = exp.init_state(), 0
        else:
            start, state = restored
            say(f"resuming from the checkpoint of step {start}", flush=True)
        if changes:
            say("config changes from the saved config: " + "; ".join(c.describe() for c in changes), flush=True)
        if primary:
            resume.record_config(config, workdir, changes, start if restored else None)
            writers = [JsonlWriter(workdir / METRICS_FILE, resume_step=start if restored else None)]
            if train.tensorboard:
                writers.append(TensorBoardWriter(workdir / "tensorboard"))
            writer = MultiWriter(writers)
        progress = Progress(train.steps, start, enabled=primary)

        pending: list[tuple[int, dict]] = []    # step metrics still on the device
        interval: dict[str, float] = {}         # sums of the step metrics since the last log
        last_time, last_step = time.perf_counter(), start
        for step in range(start + 1, train.steps + 1):
            state, metrics = exp.train_step(state, exp.device_batch("train", step - 1))
            if step == start + 1:  # compiled and run once: the rate and ETA count from here
                jax.block_until_ready(metrics)
                progress.start(step)
            pending.append((step, metrics))
            ckpt.check()
            final = step == train.steps
            log, save = _every(step, train.log_every) or final, _every(step, train.checkpoint_every) or final
            evaluate = _every(step, train.eval_every) and not final
            if log or save or evaluate or len(pending) >= MAX_PENDING_STEPS:
                interval = _add_step_metrics(interval, _check_finite(pending, ckpt))
                pending = []
                if log:
                    now = time.perf_counter()
                    summary = _train_summary(exp, interval, step, (step - last_step) / max(now - last_time, 1e-9))
                    last_time, last_step, interval = now, step, {}
                    writer.write(step, summary)
                    progress.update(step, {k.split("/", 1)[1]: v for k, v in summary.items()
                                           if k.split("/", 1)[1] in ("loss", exp.task.metric)})
                if save:
                    ckpt.save(step, state)
                if evaluate:
                    results = exp.evaluate(state)
                    writer.write(step, results)
                    progress.message(f"eval at step {step}: {format_metrics(results)}")
        results = exp.evaluate(state)
        writer.write(train.steps, results)
    finally:
        ckpt.close()
        writer.close()
        if progress is not None:
            progress.close()

    chance = exp.task.chance()
    if primary and train.plot:
        plot_metrics(workdir / METRICS_FILE, workdir / PLOT_FILE)
    for split in exp.task.eval_splits():
        key = f"{split}/{exp.task.metric}"
        say(f"final {key} = {results[key]:.4f}  (chance {chance:.4f}; loss {results[f'{split}/loss']:.4f})")
    return dict(results, chance=chance)


def evaluate_checkpoint(config: Config, workdir: str | Path) -> dict[str, float]:
    """Evaluate the latest checkpoint in ``workdir`` (the ``seqmodels eval`` command)."""
    maybe_initialize_distributed()
    restored = load_state(config, workdir)
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {Path(workdir) / CHECKPOINT_DIR}")
    step, state = restored
    exp = Experiment(config)
    results = exp.evaluate(state)
    if jax.process_index() == 0:
        print(f"step {step}: {format_metrics(results)}  (chance {exp.task.chance():.4f})")
    return dict(results, step=step)


def load_state(config: Config, workdir: str | Path) -> tuple[int, dict[str, Any]] | None:
    """``(step, state)`` of the latest checkpoint of ``config``'s run in ``workdir``, or ``None``."""
    if not (Path(workdir) / CHECKPOINT_DIR).is_dir():
        return None
    exp = Experiment(config)
    with Checkpointer(Path(workdir).absolute() / CHECKPOINT_DIR, keep=config.train.keep_checkpoints) as ckpt:
        return ckpt.restore_latest(exp.abstract_state())
