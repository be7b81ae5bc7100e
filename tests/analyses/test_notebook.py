"""The walkthrough notebook runs top to bottom on a real (tiny) run, so it cannot rot."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOK = ROOT / "analyses" / "notebooks" / "fourier_walkthrough.ipynb"


def test_fourier_walkthrough_executes(grokked_run: Path, monkeypatch):
    monkeypatch.setenv("GROK_RUN", str(grokked_run))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # "python3" is ipykernel's own kernel; jupyter_client starts it with this interpreter (sys.executable). It
    # runs in the notebook's own folder, as Jupyter starts it.
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    check_outputs(nb)


def check_outputs(nb) -> None:
    outputs = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "key frequencies: [" in outputs and "neuron activations agree: True" in outputs
    assert "ActivationCache" in outputs and "memorisation ends" in outputs
    assert "variance explained by the 9-term trig fit" in outputs and "with blocks.0.mlp.hook_post from" in outputs
    images = sum("image/png" in o.get("data", {}) for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert images >= 4


def test_the_committed_notebook_shows_its_outputs():
    """Committed executed, so a code host shows the figures and numbers."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(cell.outputs for cell in nb.cells if cell.cell_type == "code")
    assert not any(o.get("output_type") == "error" for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    check_outputs(nb)
