"""The example notebooks run headless (nbclient) and check their own findings; the GPU
one (real_checkpoint) is only checked to be a valid notebook."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["quickstart.ipynb", "own_images.ipynb"])
def test_notebook_runs_and_its_checks_pass(name, tmp_path) -> None:
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # a failing cell (its assert included) raises CellExecutionError
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    kinds = {key for o in outputs for key in o.get("data", {})}
    assert "text/html" in kinds  # tables and the plotly layer map render
    if name == "quickstart.ipynb":
        assert "image/png" in kinds  # the picture grids render


def test_the_gpu_notebook_is_a_valid_notebook() -> None:
    notebook = nbformat.read(EXAMPLES / "real_checkpoint.ipynb", as_version=4)
    nbformat.validate(notebook)
    source = "\n".join(cell.source for cell in notebook.cells)
    assert 'device_map="cuda"' in source and "llava-hf/llava-1.5-7b-hf" in source
