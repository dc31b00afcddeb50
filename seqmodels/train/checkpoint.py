"""``Checkpointer``: orbax-checkpoint behind a few methods.

    ckpt = Checkpointer(workdir / "checkpoints", keep=3)
    ckpt.save(step, state)                      # asynchronous; any pytree of arrays
    ckpt.check()                                # raises at once if a background save failed
    restored = ckpt.restore_latest(abstract)    # (step, state) or None
    ckpt.close()                                # waits for pending saves

The state is stored as a nested dict keyed by its pytree paths (``params/blocks/0/
mixer/...``), so any pytree (``nnx.State``, optax states, dicts) round-trips into
the structure of ``abstract``; typed PRNG keys are stored as their raw key data.
Built on orbax's ``CheckpointManager``: switching to another orbax API changes only
this file.

Faults. A save runs in orbax's background thread; when it fails (a full disk: an
``OSError`` with ``ENOSPC``) the next ``check``, ``save``, ``wait`` or ``close``
removes the half-written ``*.orbax-checkpoint-tmp*`` folder and raises one
``CheckpointSaveError`` naming the step, the cause and the checkpoints still intact.
``restore_latest`` skips a damaged checkpoint (a truncated or overwritten file: orbax
and tensorstore raise while reading it) with a ``DamagedCheckpointWarning`` naming it
and restores the one before; with ``set_aside_damaged=True`` the skipped folders move
to ``<directory>_damaged/`` so the run can save those steps again. When none
restores, ``DamagedCheckpointError`` names every checkpoint and why it failed. While
a ``Checkpointer`` is open, orbax's own logged tracebacks of such failures are
dropped (the errors above chain the original exception), and so are the unraisable
"Event loop is closed" errors that tensorstore's callbacks raise, one per pending
read or write, once orbax has abandoned a failed restore or save.
"""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

PyTree = Any
TMP_MARK = ".orbax-checkpoint-tmp"
# how much of a (tensorstore) error message a one-line report keeps
REASON_CHARS = 300


class CheckpointError(OSError):
    """A checkpoint could not be saved or restored."""


class CheckpointSaveError(CheckpointError):
    """Saving a checkpoint failed (e.g. the disk is full)."""


class DamagedCheckpointError(CheckpointError):
    """No checkpoint of a run can be restored."""


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint could not be restored and was skipped."""


def _reason(err: BaseException) -> str:
    """The first line of ``err``, without tensorstore's spec dump, at most ``REASON_CHARS`` long."""
    text = (str(err).splitlines() or [""])[0].split(" [tensorstore_spec=")[0]
    text = text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "..."
    return f"{type(err).__name__}: {text}"


class _QuietOrbaxFailures(logging.Filter):
    """While installed, drop orbax's logged exceptions (the ``Checkpointer`` raises them
    itself, once) and the unraisable "Event loop is closed" errors of the tensorstore
    callbacks left behind by a failed restore or save (others go to the previous hook)."""

    def install(self) -> None:
        logging.getLogger("absl").addFilter(self)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def remove(self) -> None:
        logging.getLogger("absl").removeFilter(self)
        if sys.unraisablehook == self._unraisable:
            sys.unraisablehook = self._previous_hook

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and "orbax" in record.pathname)

    def _unraisable(self, unraisable) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            self._previous_hook(unraisable)


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)  # pragma: no cover - every jax key type has one of the above


def _is_prng_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _to_nested(tree: PyTree, leaf_fn) -> dict:
    """``{path: leaf_fn(leaf)}`` as nested dicts (one level per path entry)."""
    nested: dict = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [_key_name(entry) for entry in path] or ["value"]
        node = nested
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = leaf_fn(leaf)
    return nested


def _savable(leaf):
    return jax.random.key_data(leaf) if _is_prng_key(leaf) else leaf


def _abstract_savable(leaf):
    if _is_prng_key(leaf):
        data = jax.eval_shape(jax.random.key_data, leaf)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=getattr(leaf, "sharding", None))
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=getattr(leaf, "sharding", None))


def finished_steps(directory: str | Path) -> list[int]:
    """The steps of the complete checkpoints in ``directory`` (read from the folder names,
    without opening anything; orbax names a finished checkpoint by its step)."""
    directory = Path(directory)
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


class Checkpointer:
    """Keep the last ``keep`` checkpoints of a run under ``directory``."""

    def __init__(self, directory: str | Path, *, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be at least 1; got {keep}")
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self._saving: int | None = None     # the step of the save in flight
        self._failed = False                # a failed save was reported
        self._quiet = _QuietOrbaxFailures()
        self._quiet.install()

    def save(self, step: int, state: PyTree) -> None:
        """Start saving ``state`` as checkpoint ``step`` (returns once the arrays are copied);
        raises ``CheckpointSaveError`` if this or the previous save failed."""
        self.wait()
        try:
            self._manager.save(int(step), args=ocp.args.StandardSave(_to_nested(state, _savable)))
        except OSError as err:
            raise self._save_failed(int(step), err) from err
        self._saving = int(step)

    def check(self) -> None:
        """Raise ``CheckpointSaveError`` if the save in flight has failed; returns at once
        while it is still running (call it every step to stop as soon as a save fails)."""
        if self._saving is not None and not self._manager.is_saving_in_progress():
            self.wait()

    def _save_failed(self, step: int, err: BaseException) -> CheckpointSaveError:
        """Remove the half-written folders; the error to raise for the failed save of ``step``."""
        self._failed = True
        if jax.process_index() == 0:
            for partial_save in self.directory.glob(f"*{TMP_MARK}*"):
                shutil.rmtree(partial_save, ignore_errors=True)
        self._manager.reload()
        intact = self.all_steps()
        kept = f"the checkpoints of steps {intact} are intact" if intact else "no earlier checkpoint exists"
        return CheckpointSaveError(f"saving the checkpoint of step {step} in {self.directory} failed "
                                   f"({_reason(err)}); removed its partial files; {kept}")

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, step: int, abstract_state: PyTree) -> PyTree:
        """Checkpoint ``step`` in the structure, dtypes and shardings of ``abstract_state``."""
        target = _to_nested(abstract_state, _abstract_savable)
        restored = self._manager.restore(int(step), args=ocp.args.StandardRestore(target))
        flat_abstract, treedef = jax.tree.flatten(abstract_state)
        # the restored nested dict lists its leaves in its own (sorted-key) order:
        # map each back to its position in ``abstract_state``
        positions = jax.tree.leaves(_to_nested(jax.tree.unflatten(treedef, range(len(flat_abstract))), int))
        leaves = [None] * len(flat_abstract)
        for position, value in zip(positions, jax.tree.leaves(restored)):
            like = flat_abstract[position]
            if _is_prng_key(like):
                impl = jax.random.key_impl(like) if isinstance(like, jax.Array) else None
                value = jax.random.wrap_key_data(value, impl=impl)
            leaves[position] = value
        return jax.tree.unflatten(treedef, leaves)

    def restore_latest(self, abstract_state: PyTree, *, set_aside_damaged: bool = False
                       ) -> tuple[int, PyTree] | None:
        """``(step, state)`` of the newest checkpoint that restores, or ``None`` when there is
        none. Damaged newer ones are skipped with a ``DamagedCheckpointWarning`` (and moved to
        ``<directory>_damaged/`` if ``set_aside_damaged``); ``DamagedCheckpointError`` if
        every checkpoint is damaged."""
        damaged: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            try:
                state = self.restore(step, abstract_state)
            except Exception as err:  # orbax and tensorstore raise ValueError, OSError, JSONDecodeError...
                damaged.append((step, _reason(err)))
                continue
            for bad_step, reason in damaged:
                where = self._set_aside(bad_step) if set_aside_damaged else self.directory / str(bad_step)
                warnings.warn(f"the checkpoint of step {bad_step} cannot be restored ({reason}); restored step "
                              f"{step} instead; the damaged folder is {where}", DamagedCheckpointWarning,
                              stacklevel=2)
            return step, state
        if damaged:
            listed = "; ".join(f"step {step} ({reason})" for step, reason in damaged)
            raise DamagedCheckpointError(f"no checkpoint in {self.directory} can be restored (damaged, or saved "
                                         f"from another model): {listed}")
        return None

    def _set_aside(self, step: int) -> Path:
        """Move checkpoint ``step`` to ``<directory>_damaged/<step>[-n]``; its new path."""
        aside = self.directory.with_name(self.directory.name + "_damaged")
        target, n = aside / str(step), 1
        while target.exists():
            target, n = aside / f"{step}-{n}", n + 1
        if jax.process_index() == 0:
            aside.mkdir(exist_ok=True)
            shutil.move(self.directory / str(step), target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self._manager.reload()
        return target

    def wait(self) -> None:
        """Wait for the save in flight; ``CheckpointSaveError`` if it failed."""
        step, self._saving = self._saving, None
        try:
            self._manager.wait_until_finished()
        except Exception as err:
            if step is not None:
                raise self._save_failed(step, err) from err
            if not self._failed:
                raise
            # else orbax raises a failure that was already reported: nothing new

    def close(self) -> None:
        """Wait for pending saves and release the manager (``CheckpointSaveError`` if the
        last save failed)."""
        try:
            self.wait()
            try:
                self._manager.close()
            except Exception:
                if not self._failed:  # else orbax raises the reported failure again
                    raise
        finally:
            self._quiet.remove()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

