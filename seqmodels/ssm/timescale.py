"""Initialization of SSM step sizes Δ: log-uniform in ``[dt_min, dt_max]``.

S4 (Gu, Goel, Ré, ICLR 2022, §4 and App. C), S4D (2022) and S5 (Smith et al., 2023)
draw ``log Δ ~ U(log dt_min, log dt_max)`` per channel (S4/S4D) or per state (S5) with
defaults ``[1e-3, 1e-1]``, so the layer covers timescales across two decades.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def log_uniform_log_dt(key, shape, dt_min: float = 1e-3, dt_max: float = 1e-1, dtype=jnp.float32):
    """``log Δ`` with ``Δ`` log-uniform in ``[dt_min, dt_max]``; learn ``log Δ``, use ``exp``."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min ≤ dt_max; got dt_min={dt_min}, dt_max={dt_max}")
    return jax.random.uniform(key, shape, dtype, minval=math.log(dt_min), maxval=math.log(dt_max))
