# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A tour of seqmodels: every mixer, one API
#
# Every mixer in the library is an `nnx.Module` built by name with `layers.build`, maps
# `(batch, length, d_model)` to the same shape (images `(batch, H, W, d)`, video
# `(batch, T, H, W, d)`), and — if it is causal — runs token by token with
# `init_state` / `step`, giving the same numbers as the parallel forward.
#
# This notebook builds each registered mixer with its default options at one width,
# counts its parameters, times its compiled forward pass at one number of positions,
# and, for the causal ones, checks the recurrent form against the parallel one and
# times one `step`.
#
# **Full-size run** (2-core CPU, jax 0.10.2): d_model = 64, batch 4, 1024 positions
# (32×32 for image mixers, 4 frames of 16×16 for video). The table printed below is
# the one that run produced; the numbers are this machine's, medians of 5 calls.
#
# Run on 2026-12-01, wall time 2 min 38 s (82 s user CPU), while a benchmark job ran on the
# other core (load average ≈ 4), so absolute times are inflated; jax 0.10.2.
#
# | mixer | causal | layout | parameters | forward ms | step ms | max \|step − parallel\| |
# |---|---|---|---|---|---|---|
# | aaren | True | (batch, length, d_model) | 12544 | 3.54 | 0.062 | 5.96e-07 |
# | attention | True | (batch, length, d_model) | 16640 | 199 | 1.9 | 4.77e-07 |
# | attention_bidirectional | False | (batch, length, d_model) | 16640 | 152 |  |  |
# | convlstm | True | (batch, T, H, W, d_model) | 295360 | 46 | 7.9 | 0 |
# | convs5 | True | (batch, T, H, W, d_model) | 332160 | 50.8 | 8.94 | 7.15e-07 |
# | deltanet | True | (batch, length, d_model) | 17472 | 12.4 | 0.0763 | 1.19e-07 |
# | deltaproduct | True | (batch, length, d_model) | 30792 | 15.5 | 0.0822 | 1.4e-08 |
# | hydra | False | (batch, length, d_model) | 44678 | 232 |  |  |
# | hydra_causal | True | (batch, length, d_model) | 35334 | 28.4 | 7.92 | 1.07e-06 |
# | lightnet | True | (batch, length, d_model) | 28816 | 220 | 0.0836 | 1.55e-06 |
# | lightnet2d | False | (batch, H, W, d_model) | 28832 | 27.6 |  |  |
# | lightnet_bidirectional | False | (batch, length, d_model) | 28816 | 19.9 |  |  |
# | lssl | True | (batch, length, d_model) | 12544 | 58.6 | 0.232 | 9.54e-07 |
# | plstm | True | (batch, length, d_model) | 28340 | 864 | 0.486 | 4.77e-07 |
# | plstm2d | False | (batch, H, W, d_model) | 17745 | 1.71e+03 |  |  |
# | routing | True | (batch, length, d_model) | 12480 | 8.7 | 0.106 | 7.15e-07 |
# | routing_bidirectional | False | (batch, length, d_model) | 16640 | 12.9 |  |  |
# | s4 | True | (batch, length, d_model) | 20672 | 18.9 | 0.459 | 1.54e-06 |
# | s4_bidirectional | False | (batch, length, d_model) | 24768 | 54.1 |  |  |
# | s4d | True | (batch, length, d_model) | 16576 | 15.8 | 0.0834 | 1.07e-06 |
# | s4d_bidirectional | False | (batch, length, d_model) | 20672 | 68.1 |  |  |
# | s5 | True | (batch, length, d_model) | 33216 | 2.99 | 0.0615 | 4.77e-07 |
# | s5_bidirectional | False | (batch, length, d_model) | 49600 | 6.53 |  |  |
#
# Every causal mixer's `step` reproduces its parallel output to float32 rounding.
# Forward times are for 1,024 positions; they are not a benchmark (one length,
# default options, a loaded machine): `python -m benchmarks.run` measures growth
# with length, memory and compile time properly.

# %%
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import seqmodels.layers as layers
from _common import SMOKE, pick

D_MODEL, BATCH = 64, 4
POSITIONS = pick(1024, 64)
REPEATS = pick(5, 1)
print("mixers:", ", ".join(layers.names()))


# %% [markdown]
# ## One API
# `layers.build(name, d_model, rngs=..., **options)`; unknown names or options are
# errors that list the valid ones.

# %%
mixer = layers.build("s4d", D_MODEL, rngs=nnx.Rngs(0))
x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, D_MODEL))
y = mixer(x)
state = mixer.init_state(batch_size=2)
y0, state = mixer.step(x[:, 0], state)
print(y.shape, float(jnp.max(jnp.abs(y0 - y[:, 0]))))
try:
    layers.build("s4d", D_MODEL, rngs=nnx.Rngs(0), stat_size=8)
except ValueError as err:
    print("ValueError:", str(err)[:160], "...")


# %% [markdown]
# ## Every mixer: parameters, forward time, recurrent form

# %%
def example_input(cls, key):
    if cls.temporal:
        side = int(round((POSITIONS // 4) ** 0.5))
        shape = (BATCH, 4, side, side, D_MODEL)
    elif cls.spatial_ndim == 2:
        side = int(round(POSITIONS ** 0.5))
        shape = (BATCH, side, side, D_MODEL)
    else:
        shape = (BATCH, POSITIONS, D_MODEL)
    return jax.random.normal(key, shape)


def median_ms(fn, *args):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


# The causal routing mixer picks its number of clusters from the length by default
# (k ≈ √L), so a step-by-step run reproduces a parallel call of one fixed length only;
# for generation it is built with a fixed count (see its docstring).
OPTIONS = {"routing": {"num_clusters": 8}}

rows = []
for name in layers.names():
    cls = layers.spec(name).cls
    mixer = layers.build(name, D_MODEL, rngs=nnx.Rngs(0), **OPTIONS.get(name, {}))
    graphdef, state = nnx.split(mixer)
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(mixer, nnx.Param)))
    x = example_input(cls, jax.random.PRNGKey(1))
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    row = {"mixer": name, "causal": cls.causal, "layout": cls.layout(), "parameters": params,
           "forward ms": median_ms(forward, state, x)}
    if cls.causal:
        step = jax.jit(lambda s, x_t, c: nnx.merge(graphdef, s).step(x_t, c))
        short = x[:, :16]
        carry, outs = mixer.init_state(BATCH), []
        for t in range(short.shape[1]):
            y_t, carry = step(state, short[:, t], carry)
            outs.append(y_t)
        gap = float(jnp.max(jnp.abs(jnp.stack(outs, 1) - forward(state, short))))
        row.update({"step ms": median_ms(step, state, x[:, 0], mixer.init_state(BATCH)),
                    "max |step - parallel|": gap})
    rows.append(row)

columns = ["mixer", "causal", "layout", "parameters", "forward ms", "step ms", "max |step - parallel|"]


def cell(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


table = "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                  + ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows])
print(table)

# %% [markdown]
# Every causal mixer's recurrent `step` reproduces its parallel output (the last
# column, float32). The test suite checks the same property for every mixer at
# lengths 37 and 300 (`tests/test_mixer_conformance.py`), and the benchmarks
# (`python -m benchmarks.run`) measure speed and memory across lengths.

# %%
assert all(r.get("max |step - parallel|", 0.0) < 1e-3 for r in rows)
