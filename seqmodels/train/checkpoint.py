"""``Checkpointer``: orbax-checkpoint behind three methods.

    ckpt = Checkpointer(workdir / "checkpoints", keep=3)
    ckpt.save(step, state)                      # asynchronous; any pytree of arrays
    restored = ckpt.restore_latest(abstract)    # (step, state) or None
    ckpt.close()                                # waits for pending saves

The state is stored as a nested dict keyed by its pytree paths (``params/blocks/0/
mixer/...``), so any pytree (``nnx.State``, optax states, dicts) round-trips into
the structure of ``abstract``; typed PRNG keys are stored as their raw key data.
Built on orbax's ``CheckpointManager``: switching to another orbax API changes only
this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

PyTree = Any


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


class Checkpointer:
    """Keep the last ``keep`` checkpoints of a run under ``directory``."""

    def __init__(self, directory: str | Path, *, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be at least 1; got {keep}")
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def save(self, step: int, state: PyTree) -> None:
        """Start saving ``state`` as checkpoint ``step`` (returns once the arrays are copied)."""
        self._manager.save(int(step), args=ocp.args.StandardSave(_to_nested(state, _savable)))

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

    def restore_latest(self, abstract_state: PyTree) -> tuple[int, PyTree] | None:
        """``(step, state)`` of the newest checkpoint, or ``None`` when there is none."""
        step = self.latest_step()
        if step is None:
            return None
        return step, self.restore(step, abstract_state)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

