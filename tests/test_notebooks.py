"""Every notebook in ``notebooks/`` converts from its jupytext source and runs.

CI runs them in smoke mode (``SEQMODELS_SMOKE=1``: tiny sizes, a few steps);
``SEQMODELS_FULL=1`` runs them at the full size their markdown reports (hours on a
2-core CPU).
"""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from conftest import full_size

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.py"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.heavy
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SEQMODELS_SMOKE", "0" if full_size() else "1")
    monkeypatch.setenv("SEQMODELS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    notebook = jupytext.read(path)
    NotebookClient(notebook, timeout=None if full_size() else 600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    if full_size():  # keep the executed notebook beside the run for a person to look at
        nbformat.write(notebook, tmp_path / f"{path.stem}.ipynb")
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
