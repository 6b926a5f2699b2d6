"""The tutorials run top to bottom in quick mode (MONAI_ADV_QUICK=1), as a user would run them.

Notebooks may be committed with the outputs of a full run (MONAI's tutorials are); the test clears them
in its in-memory copy before executing, so it checks the code, not the committed outputs.
"""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = sorted((Path(__file__).resolve().parents[2] / "tutorials").glob("*.ipynb"))


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_there_are_tutorials():
    assert TUTORIALS, "no notebooks under tutorials/"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_committed_outputs_have_no_errors(path):
    """A notebook committed with outputs shows a run that worked: no error output, cells run in order."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    errors = [o for c in _code_cells(nb) for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name} is committed with an error output: {errors[0].get('ename')}"
    counts = [c.execution_count for c in _code_cells(nb) if c.execution_count is not None]
    assert counts == sorted(counts), f"{path.name}: its committed outputs come from cells run out of order"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    for cell in _code_cells(nb):  # the committed outputs are a full run's; execute from a clean copy
        cell.outputs = []
        cell.execution_count = None
    monkeypatch.setenv("MONAI_ADV_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MONAI_DATA_DIRECTORY", raising=False)  # notebooks then use a temporary folder
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [o for c in _code_cells(nb) for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count is not None for c in _code_cells(nb)), "some cells did not run"
