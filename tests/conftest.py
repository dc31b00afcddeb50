"""Shared fixtures: the reference-vector folder, scoped float64, strict rank promotion."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

# Silent broadcasting bugs fail loudly (equinox's habit); library code must pass under it.
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """``$SEQMODELS_REFERENCE_DIR`` or ``tests/reference/`` (shipped in the repository).

    ``tests/reference/README.md`` says how each file was produced with the official code.
    """
    path = Path(os.environ.get("SEQMODELS_REFERENCE_DIR", REPO / "tests" / "reference"))
    if not path.is_dir():
        raise FileNotFoundError(
            f"reference vectors not found at {path}; SEQMODELS_REFERENCE_DIR must name a folder "
            "holding the .npz files of tests/reference/"
        )
    return path


@pytest.fixture(scope="session")
def reference():
    return reference_dir()


@pytest.fixture
def x64():
    """Enable float64 for one test only."""
    with jax.enable_x64(True):
        yield


def full_size() -> bool:
    """Heavy tests run at full size when SEQMODELS_FULL=1, reduced otherwise (CI)."""
    return os.environ.get("SEQMODELS_FULL", "0") == "1"
