"""Idefics3 and SmolVLM: tiles plus a global view, a pixel-shuffle connector. Tiny models
saved and loaded back; references: plain torch hooks and the model's own merge of the
connector output into the LLM's input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from references import (
    assert_interventions_touch_the_llm_only,
    assert_new_interventions_match_references,
    capture_beside_hooks,
    token_change,
)
from tiny_vlms import build_idefics3

from analyses import RunConfig, run
from interp import (
    StimulusSpec,
    generate,
    load_model,
)

SIZE = 32  # 2x2 tiles of 16 px + the global view; 4x4 patches a view, 2x2 after shuffle


@pytest.fixture(scope="module", params=["idefics3", "smolvlm"])
def family(request, tmp_path_factory):
    smol = request.param == "smolvlm"
    folder = build_idefics3(tmp_path_factory.mktemp(request.param), smolvlm=smol)
    return folder, load_model(folder)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return generate(StimulusSpec(n_images=2, image_size=SIZE, seed=1)).images


def test_capture_equals_hooks_and_what_enters_the_llm(family, images) -> None:
    folder, loaded = family
    adapter = loaded.adapter
    got, inputs, model, seen = capture_beside_hooks(loaded, folder, images)
    assert inputs["pixel_values"].shape[1] == 5  # 4 tiles + global
    positions = (inputs["input_ids"] == model.config.image_token_id).nonzero()[:, 1].reshape(2, -1)
    rows = torch.arange(2)[:, None]
    for site in adapter.sites():
        ref = seen[site]
        ref = ref[rows, positions] if site.startswith("lm.") else ref.reshape(2, -1, ref.shape[-1])
        assert got.acts[site].shape[1] == len(adapter.token_layout(site, SIZE)), site
        torch.testing.assert_close(got.acts[site], ref, rtol=0, atol=0, msg=site)
    torch.testing.assert_close(seen["lm_input"][rows, positions], got.acts["projector"])


@pytest.mark.parametrize("site", ["vision.0", "projector"])
def test_grid_maps_tokens_to_patches_in_every_tile(family, images, site) -> None:
    _, loaded = family
    layout = loaded.adapter.token_layout(site, SIZE)
    prompt = loaded.adapter.default_prompt("Describe the image.")
    tiles = np.flatnonzero(layout.crops > 0)
    for t in tiles[:: max(1, len(tiles) // 6)]:
        y0, x0, y1, x1 = layout.boxes[t]
        change = token_change(loaded, images[0], layout.boxes[t], site, prompt)
        crop = layout.crops[t]
        same = np.flatnonzero(layout.crops == crop)
        assert same[change[same].argmax()] == t, (site, t)
        other_tiles = np.flatnonzero((layout.crops > 0) & (layout.crops != crop))
        assert change[other_tiles].max() < 1e-4  # other tiles never see these pixels
        whole = np.flatnonzero(layout.crops == 0)  # the global view: the token holding it
        box = layout.boxes[whole[change[whole].argmax()]]
        assert box[0] <= (y0 + y1) / 2 < box[2] and box[1] <= (x0 + x1) / 2 < box[3]


def test_interventions_and_the_whole_run(family, images, tmp_path) -> None:
    folder, loaded = family
    adapter = loaded.adapter
    prompt = adapter.default_prompt("Describe the image.")
    assert_interventions_touch_the_llm_only(loaded, images, prompt)
    assert_new_interventions_match_references(loaded, folder, images, prompt)
    result = run(
        RunConfig(
            out=str(tmp_path / "r"), model=folder, n_images=20, image_size=SIZE, n_splits=2,
            selections=["mean", "token"], progress=False,
        )
    )  # fmt: skip
    assert set(result.table.site) == set(adapter.sites())
    assert set(result.tables.get("pixels").site) == set(adapter.sites())  # tiles tile the image
