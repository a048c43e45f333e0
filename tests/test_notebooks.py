"""The example notebooks run headless (nbclient) and check their own findings; the GPU
one (real_checkpoint) is only checked to be a valid notebook."""

from __future__ import annotations

from pathlib import Path

import pytest

# The notebooks run steps that other tests check on both transformers versions: make
# test's second run (4.57) leaves them out.
pytestmark = pytest.mark.once

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


def test_the_explorer_notebooks_widget_holds_the_toolkits_numbers(tmp_path) -> None:
    """examples/explorer.ipynb run headless: the explorer widget's state, as the notebook
    saves it (what a front end draws), holds the attention to the image that
    attention_to_image gives for the same images, and the object under each token."""
    import numpy as np

    from analyses.explorer import VIEW_FORMAT, view_table
    from interp import StimulusSpec, box_label_map, generate, load_model
    from interp.experiments.attention import attention_to_image

    notebook = nbformat.read(EXAMPLES / "explorer.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    states = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [s["state"]["data"] for s in states.values() if "data" in s["state"]]
    assert len(views) == 1 and views[0]["format"] == VIEW_FORMAT
    table = view_table(views[0])
    eager = load_model("organism", attn_implementation="eager")
    stimuli = generate(StimulusSpec(n_images=8, image_size=64, seed=0))
    weights = attention_to_image(eager, stimuli.images[:4], prompt=views[0]["prompt"], layers=[3])
    shown = table[(table.condition == "baseline") & (table.site == "lm.3")]
    shown = shown.sort_values(["image", "token"])
    np.testing.assert_allclose(shown.attention_mean, weights[:, 0].mean(1).reshape(-1), rtol=1e-4)
    layout = eager.adapter.token_layout("lm.3", 64)
    objects = box_label_map(stimuli.object_map[:4], layout.boxes)  # (4, tokens)
    np.testing.assert_array_equal(shown.object, objects.reshape(-1))
