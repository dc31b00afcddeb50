"""Argument checks shared by the scan core and the layers above it.

Every public function validates its arrays at the boundary, so that a wrong shape
or dtype fails with a message that names the argument, the expected and the actual
value -- not with an XLA error from deep inside a trace.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

METHODS = ("auto", "sequential", "associative", "chunked")


def check_ndim(name: str, x, ndim: int | Sequence[int], layout: str = "") -> None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if jnp.ndim(x) not in allowed:
        want = " or ".join(str(n) for n in allowed)
        hint = f" {layout}" if layout else ""
        raise ValueError(
            f"{name} must have rank {want}{hint}; got rank {jnp.ndim(x)} with shape {jnp.shape(x)}"
        )


def check_shape(name: str, x, expected: Sequence[int | None]) -> None:
    """Check ``x.shape`` against ``expected``, where ``None`` matches any size."""
    shape = tuple(jnp.shape(x))
    ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name} must have shape {want}; got {shape}")


def check_broadcastable(name: str, x, target: Sequence[int], target_name: str) -> None:
    shape, target = tuple(jnp.shape(x)), tuple(target)
    try:
        ok = len(shape) <= len(target) and np.broadcast_shapes(shape, target) == target
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} with shape {shape} must broadcast to {target_name}'s shape {target}"
        )


def check_floating(name: str, x, *, allow_complex: bool = False) -> None:
    dtype = jnp.result_type(x)
    ok = jnp.issubdtype(dtype, jnp.floating) or (
        allow_complex and jnp.issubdtype(dtype, jnp.complexfloating)
    )
    if not ok:
        kinds = "a floating or complex" if allow_complex else "a floating"
        raise ValueError(f"{name} must have {kinds} dtype; got {dtype}")


def check_qkv(q, k, v) -> tuple[int, int, int, int, int]:
    """Floating ``q, k (B, L, H, Dk)`` and ``v (B, L, H, Dv)``; returns ``(B, L, H, Dk, Dv)``."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_floating(name, x)
    check_ndim("q", q, 4, "(batch, length, heads, key_dim)")
    B, L, H, Dk = q.shape
    check_shape("k", k, (B, L, H, Dk))
    check_ndim("v", v, 4, "(batch, length, heads, value_dim)")
    check_shape("v", v, (B, L, H, None))
    return B, L, H, Dk, v.shape[-1]


def check_bool(name: str, x) -> None:
    if jnp.result_type(x) != jnp.bool_:
        raise ValueError(f"{name} must have dtype bool; got {jnp.result_type(x)}")


def check_method(method: str, allowed: Sequence[str]) -> None:
    if method not in allowed:
        raise ValueError(f"method must be one of {tuple(allowed)}; got {method!r}")


def check_chunk_size(chunk_size) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")


def accumulation_dtype(*arrays):
    """The dtype scans accumulate in: at least float32 (complex64 for complex inputs)."""
    dtype = jnp.result_type(*arrays)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.promote_types(dtype, jnp.complex64)
    return jnp.promote_types(dtype, jnp.float32)


def output_dtype(*arrays, state=None):
    """The dtype of a scan's outputs: its inputs' dtype, made complex by a complex initial ``state``.

    A complex state with real coefficients evolves in the complex numbers (its real and
    imaginary parts follow the same real recurrence), so its imaginary part must not be
    dropped; a real state never widens the outputs (a float32 carry keeps a bfloat16
    stream bfloat16).
    """
    dtype = jnp.result_type(*arrays)
    if state is not None and jnp.issubdtype(jnp.result_type(state), jnp.complexfloating):
        return jnp.promote_types(dtype, jnp.complex64)
    return dtype


def check_min_ndim(name: str, x, ndim: int, layout: str = "") -> None:
    if jnp.ndim(x) < ndim:
        hint = f" {layout}" if layout else ""
        raise ValueError(
            f"{name} must have rank at least {ndim}{hint}; got rank {jnp.ndim(x)} with shape {jnp.shape(x)}"
        )


def check_square(name: str, x, size: int, size_name: str) -> None:
    """Check that the last two axes of ``x`` are ``(size, size)``."""
    shape = tuple(jnp.shape(x))
    if len(shape) < 2 or shape[-2:] != (size, size):
        raise ValueError(
            f"{name} must end in a square ({size}, {size}) matrix ({size_name} = {size}); got shape {shape}"
        )


def check_shape_one_of(name: str, x, options: Sequence[Sequence[int | None]]) -> None:
    """Check that ``x.shape`` matches one of ``options`` (``None`` matches any size)."""
    shape = tuple(jnp.shape(x))
    for expected in options:
        if len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape)):
            return
    want = " or ".join("(" + ", ".join("*" if e is None else str(e) for e in o) + ")" for o in options)
    raise ValueError(f"{name} must have shape {want}; got {shape}")
