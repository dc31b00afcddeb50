"""A nonlinear recurrence ``(state_t, y_t) = cell(state_{t-1}, x_t)``, evaluated in order.

For recurrences with no associative form (e.g. the ConvLSTM baseline: gates depend on
the previous state through a nonlinearity), the only exact evaluation is sequential:
one ``lax.scan`` over time, here so that layers keep calling the scan core and the
batch-first convention (time on axis 1) stays in one place. There is no chunked or
log-depth method and no sequence-parallel form.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree, Shaped


def nonlinear_scan(cell: Callable[[Any, Any], tuple[Any, Any]], x: PyTree[Shaped[Array, "B L ..."]],
                   state0: PyTree) -> tuple[PyTree[Shaped[Array, "B L ..."]], PyTree]:
    """Run ``cell`` over axis 1 of ``x``.

    Args:
      cell: ``(state, x_t) -> (state, y_t)``; ``x_t`` is ``x`` without its time axis.
      x: an array or pytree of arrays ``(batch, length, ...)``.
      state0: the state before the first step (any pytree).

    Returns ``(y, final_state)``: ``y`` the stacked ``y_t``, ``(batch, length, ...)``.
    """
    leaves = jax.tree.leaves(x)
    if not leaves or any(jnp.ndim(leaf) < 2 for leaf in leaves):
        raise ValueError(f"x must be (batch, length, ...) arrays; got shapes {[jnp.shape(leaf) for leaf in leaves]}")
    if len({jnp.shape(leaf)[1] for leaf in leaves}) != 1:
        raise ValueError(f"every array of x needs the same length (axis 1); got {[jnp.shape(leaf) for leaf in leaves]}")
    time_major = jax.tree.map(lambda leaf: jnp.moveaxis(leaf, 1, 0), x)
    final, y = jax.lax.scan(cell, state0, time_major)
    return jax.tree.map(lambda leaf: jnp.moveaxis(leaf, 0, 1), y), final
