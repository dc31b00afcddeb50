"""What every notebook shares: smoke vs full size, where runs go, and figure saving.

A notebook is a jupytext percent-format ``.py`` file (the reviewed source); open it in
Jupyter with jupytext, or convert it with ``jupytext --to ipynb notebooks/NN_name.py``.

* ``SEQMODELS_SMOKE=1`` (what CI sets) runs tiny sizes and few steps, to check that the
  notebook works; unset, a notebook runs at the full size its markdown reports.
* Training runs go to ``$SEQMODELS_RUNS/<name>`` (default ``runs/notebooks/<name>`` under
  the repository); running a notebook again resumes or reuses finished runs.
* Figures are shown inline. Only at full size and when asked (``SEQMODELS_SAVE_FIGURES=1``)
  are they also written to ``notebooks/figures/<name>.png``, the tracked pictures the
  markdown of each notebook refers to; so running a notebook never overwrites them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

if not os.environ.get("DISPLAY") and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")

from flax import nnx  # noqa: E402

from seqmodels.train import Config, train_and_evaluate, train_seeds  # noqa: E402
from seqmodels.train.writers import read_metrics  # noqa: E402

HERE = Path(__file__).resolve().parent
SMOKE = os.environ.get("SEQMODELS_SMOKE", "0") == "1"
RUNS = Path(os.environ.get("SEQMODELS_RUNS", HERE.parent / "runs" / "notebooks"))
FIGURES = HERE / "figures"
SAVE_FIGURES = os.environ.get("SEQMODELS_SAVE_FIGURES", "0") == "1"


def pick(full, smoke):
    """``full`` normally, ``smoke`` under ``SEQMODELS_SMOKE=1``."""
    return smoke if SMOKE else full


def run(config: Config, name: str) -> dict:
    """``train_and_evaluate(config, RUNS / name)``, with its wall time added as ``"seconds"``."""
    start = time.perf_counter()
    results = train_and_evaluate(config, RUNS / name)
    return dict(results, seconds=time.perf_counter() - start)


SEEDS = [0] if SMOKE else [0, 1, 2]  # claims are reported over 3 seeds; smoke runs check one


def run_seeds(config: Config, name: str, seeds=None) -> dict:
    """``train_seeds(config, RUNS / name, SEEDS)``: per-seed results (with ``"seconds"``) and
    ``"mean"`` / ``"std"`` over the seeds. Seed ``s``'s run is ``f"{name}/seed_{s}"``."""
    return train_seeds(config, RUNS / name, SEEDS if seeds is None else seeds)


def pm(summary: dict, key: str, digits: int = 3) -> str:
    """``"mean ± std"`` of metric ``key`` in a ``run_seeds`` summary."""
    return f"{summary['mean'][key]:.{digits}f} ± {summary['std'][key]:.{digits}f}"


def curve(name: str, key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of metric ``key`` (e.g. ``"train/loss"``) logged by run ``name``."""
    lines = [line for line in read_metrics(RUNS / name / "metrics.jsonl") if key in line]
    return [line["step"] for line in lines], [line[key] for line in lines]


def seed_curves(name: str, key: str, seeds=None):
    """``(steps, values)`` of metric ``key`` over the seed runs of ``name``: ``values`` has one
    row per seed, at the steps every seed logged (plot the mean, shade ± the std)."""
    import numpy as np
    per_seed = [dict(zip(*curve(f"{name}/seed_{s}", key))) for s in (SEEDS if seeds is None else seeds)]
    steps = sorted(set.intersection(*(set(c) for c in per_seed)))
    return np.asarray(steps), np.asarray([[c[t] for t in steps] for c in per_seed])


def seed_bars(ax, summaries: dict, key: str = "test/accuracy") -> None:
    """Horizontal bars of metric ``key`` for ``{label: run_seeds summary}``: the mean with a
    ± std error bar, one dot per seed, the first label on top."""
    import numpy as np
    labels = list(summaries)
    y = np.arange(len(labels))
    ax.barh(y, [summaries[label]["mean"][key] for label in labels],
            xerr=[summaries[label]["std"][key] for label in labels], capsize=3, color="lightsteelblue")
    for i, label in enumerate(labels):
        runs = summaries[label]["runs"]
        ax.scatter([r[key] for r in runs], [i] * len(runs), s=10, color="k", zorder=3)
    ax.set(yticks=y, yticklabels=labels, xlabel=f"{key.split('/')[-1]} (bar: mean ± std, dots: seeds)")
    ax.invert_yaxis()


def savefig(fig, name: str) -> None:
    """Save ``fig`` as ``notebooks/figures/<name>.png`` at full size under ``SEQMODELS_SAVE_FIGURES=1``."""
    if SAVE_FIGURES and not SMOKE:
        FIGURES.mkdir(exist_ok=True)
        fig.savefig(FIGURES / f"{name}.png", dpi=110, bbox_inches="tight")


def step_outputs(module, inputs):
    """``module.step`` over axis 1 of ``inputs`` inside one jit (``init_state`` first)."""
    graphdef, params = nnx.split(module)

    @jax.jit
    def go(params, inputs):
        m = nnx.merge(graphdef, params)

        def body(state, x_t):
            y_t, state = m.step(x_t, state)
            return state, y_t

        _, ys = jax.lax.scan(body, m.init_state(inputs.shape[0]), jnp.moveaxis(inputs, 1, 0))
        return jnp.moveaxis(ys, 0, 1)

    return go(params, inputs)


def relative(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
