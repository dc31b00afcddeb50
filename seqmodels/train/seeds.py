"""One config over several seeds, with the metrics aggregated as mean ± std.

A single seed is an anecdote: ``train_seeds`` runs the same config once per seed (the
seed sets the initialization and the data order), each run in its own folder, and
reports every final metric as mean and sample standard deviation (``ddof = 1``; 0 for
one seed) over the seeds, beside the per-seed values.

    summary = train_seeds(config, "runs/s4", seeds=3)        # seeds 0, 1, 2
    print(format_summary(summary))                          # test/accuracy 0.912 ± 0.011 ...

From a shell: ``seqmodels train quickstart --seeds 3``. The runs go to
``<workdir>/seed_<s>``; running again resumes or reuses them, like any run. The summary
is also written to ``<workdir>/seeds.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import Config, ConfigError

SUMMARY_FILE = "seeds.json"


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``seeds`` as a list: a count ``n`` means ``0 … n - 1``; a list must be distinct integers ≥ 0."""
    if isinstance(seeds, bool) or not isinstance(seeds, (int, Sequence)):
        raise ConfigError(f"seeds: expected a count ≥ 1 or a list of distinct seeds ≥ 0; got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"seeds: expected a count ≥ 1; got {seeds}")
        return list(range(seeds))
    values = list(seeds)
    if not values or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in values) \
            or len(set(values)) != len(values):
        raise ConfigError(f"seeds: expected a non-empty list of distinct integers ≥ 0; got {values!r}")
    return values


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof = 1``; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def aggregate(runs: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """``{"seeds", "runs", "mean", "std"}`` over the numeric metrics every run reports."""
    keys = [k for k, v in runs[0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and all(k in r for r in runs)]
    stats = {k: mean_std([float(r[k]) for r in runs]) for k in keys}
    return {"seeds": list(seeds), "runs": [dict(r) for r in runs],
            "mean": {k: m for k, (m, _) in stats.items()}, "std": {k: s for k, (_, s) in stats.items()}}


def with_seed(config: Config, seed: int) -> Config:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))


def train_seeds(config: Config, workdir: str | Path, seeds: int | Sequence[int] = 3, *,
                train: Callable[[Config, Path], dict[str, Any]] | None = None, **train_kwargs) -> dict[str, Any]:
    """Train ``config`` once per seed in ``workdir/seed_<s>`` and aggregate the final metrics.

    ``seeds`` is a count (``3`` → seeds 0, 1, 2) or a list of seeds; ``config.train.seed``
    is replaced by each. ``train`` defaults to ``train_and_evaluate`` (extra keyword
    arguments go to it). Each run's result gains its wall time as ``"seconds"`` (small for a
    finished run that is only reused). Returns ``{"seeds", "runs", "mean", "std"}`` and
    writes it to ``workdir/seeds.json``.
    """
    seeds = seed_list(seeds)
    if train is None:
        from .loop import train_and_evaluate as train
    workdir = Path(workdir)
    runs = []
    for seed in seeds:
        start = time.perf_counter()
        result = train(with_seed(config, seed), workdir / f"seed_{seed}", **train_kwargs)
        runs.append(dict(result, seconds=time.perf_counter() - start))
    summary = aggregate(runs, seeds)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """One line per metric: ``name  mean ± std  (per seed: a, b, c)``."""
    keys = [k for k in (keys or summary["mean"]) if k in summary["mean"]]
    width = max((len(k) for k in keys), default=0)
    return "\n".join(
        f"{k:{width}s}  {summary['mean'][k]:.4f} ± {summary['std'][k]:.4f}  "
        f"(seeds {', '.join(map(str, summary['seeds']))}: {', '.join(f'{r[k]:.4f}' for r in summary['runs'])})"
        for k in keys)
