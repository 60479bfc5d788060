"""notebooks/quickstart.ipynb runs top to bottom in a real kernel."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_quickstart_notebook_trains_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("QUICKSTART_EPOCHS", "2")
    monkeypatch.setenv("QUICKSTART_WORKDIR", str(tmp_path / "run"))
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 0
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "test accuracy" in printed
    assert os.path.exists(tmp_path / "run" / "model.keras")
