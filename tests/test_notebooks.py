"""notebooks/: committed without outputs, free of library code, and executed end to end on the tiny run."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import nbformat
import pytest

from conftest import tiny_sets

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
SRC = Path(__file__).parent.parent / "src"


def test_the_two_notebooks_are_there():
    assert [path.name for path in NOTEBOOKS] == ["01_eda.ipynb", "02_oof_analysis.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_without_outputs_or_library_code(path: Path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {index}: strip its outputs"
        lines = cell.source.splitlines()
        assert not any(line.lstrip().startswith(("def ", "class ")) for line in lines), (
            f"{path.name} cell {index}: notebooks call kseg functions; a function belongs in src/kseg")


@pytest.mark.slow
def test_notebooks_run_on_the_tiny_run_without_an_error(finished_run, monkeypatch):
    """Both notebooks in their own kernels at once (their start-up and imports overlap); a cell that raises
    fails the test with nbclient's CellExecutionError, which names the cell and quotes the traceback."""
    from nbclient import NotebookClient

    monkeypatch.setenv("KSEG_CONFIG", "configs/demo.yaml")
    monkeypatch.setenv("KSEG_SET", json.dumps(tiny_sets(finished_run)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    notebooks = [nbformat.read(path, as_version=4) for path in NOTEBOOKS]
    clients = [NotebookClient(notebook, timeout=600, kernel_name="python3",
                              resources={"metadata": {"path": str(path.parent)}})
               for notebook, path in zip(notebooks, NOTEBOOKS)]

    async def run_all() -> None:
        await asyncio.gather(*(client.async_execute() for client in clients))

    asyncio.run(run_all())
    for notebook, path in zip(notebooks, NOTEBOOKS):
        figures = sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
        assert figures >= 8, f"{path.name}: only {figures} figures were shown"
