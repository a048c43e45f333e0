"""Qwen2-VL and Qwen2.5-VL: a patch sequence without a batch dimension, merged 2x2, and
(2.5) attention windows that reorder it. Tiny models saved and loaded back; references:
plain torch hooks, transformers' own window index, the model's own merge into the LLM."""

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
from tiny_vlms import build_qwen2_vl

from analyses import RunConfig, run
from interp import ConfigError, StimulusSpec, generate, load_model

SIZE = {"2": 16, "2.5": 32}  # 2.5: 4x4 merged tokens in 2x2 windows of 2x2


@pytest.fixture(scope="module", params=sorted(SIZE))
def qwen(request, tmp_path_factory):
    folder = build_qwen2_vl(tmp_path_factory.mktemp("qwen"), version=request.param)
    return request.param, folder, load_model(folder)


def _library_window_index(model, grid_thw: torch.Tensor) -> torch.Tensor:
    visual = model.model.visual
    if hasattr(visual, "get_window_index"):  # transformers 4.x
        return visual.get_window_index(grid_thw)[0]
    from transformers.vision_utils import get_vision_window_index

    config = model.config.vision_config
    return get_vision_window_index(
        grid_thw, spatial_merge_size=2, window_size=config.window_size, patch_size=4
    )[0]


def test_capture_equals_hooks_and_what_enters_the_llm(qwen) -> None:
    version, folder, loaded = qwen
    adapter = loaded.adapter
    size = SIZE[version]
    images = generate(StimulusSpec(n_images=2, image_size=size, seed=1)).images
    got, inputs, model, seen = capture_beside_hooks(loaded, folder, images)
    positions = (inputs["input_ids"] == model.config.image_token_id).nonzero()[:, 1].reshape(2, -1)
    rows = torch.arange(2)[:, None]
    undo = None
    if version == "2.5":  # blocks and merger work in window order; undo it at each site
        undo = torch.argsort(_library_window_index(model, inputs["image_grid_thw"]))
    for site in adapter.sites():
        ref = seen[site]
        if site.startswith("lm."):
            ref = ref[rows, positions]
        else:  # (images x tokens, d)
            if undo is not None:
                ref = ref.reshape(len(undo), -1, ref.shape[-1])[undo]
            ref = ref.reshape(2, -1, ref.shape[-1])
        assert got.acts[site].shape[1] == len(adapter.token_layout(site, size)), site
        torch.testing.assert_close(got.acts[site], ref, rtol=0, atol=0, msg=site)
    # What the model itself scatters into the LLM's input is the stored projector output.
    torch.testing.assert_close(seen["lm_input"][rows, positions], got.acts["projector"])


@pytest.mark.parametrize("site", ["vision.0", "projector"])
def test_grid_maps_tokens_to_patches(qwen, site) -> None:
    version, _, loaded = qwen
    size = SIZE[version]
    layout = loaded.adapter.token_layout(site, size)
    image = generate(StimulusSpec(n_images=1, image_size=size, seed=3)).images[0]
    prompt = loaded.adapter.default_prompt("Describe the image.")
    for t in (0, 3, len(layout) // 2 + 1, len(layout) - 1):
        change = token_change(loaded, image, layout.boxes[t], site, prompt)
        assert int(change.argmax()) == t, (site, t)
        if site == "vision.0":  # the rest only through attention
            assert change[t] > 2 * np.sort(change)[-2]


def test_interventions_change_the_llm_only(qwen) -> None:
    version, _, loaded = qwen
    adapter = loaded.adapter
    images = generate(StimulusSpec(n_images=2, image_size=SIZE[version], seed=2)).images
    assert_interventions_touch_the_llm_only(loaded, images, adapter.default_prompt("Hi."))


def test_new_interventions_equal_their_references(qwen) -> None:
    version, folder, loaded = qwen
    adapter = loaded.adapter
    images = generate(StimulusSpec(n_images=2, image_size=SIZE[version], seed=2)).images
    assert_new_interventions_match_references(loaded, folder, images, adapter.default_prompt("Hi."))


def test_the_whole_run_and_sizes_the_processor_would_resize(qwen, tmp_path) -> None:
    version, folder, loaded = qwen
    with pytest.raises(ConfigError, match="would be resized"):
        loaded.adapter.check_image_size(20)
    if version != "2":
        return
    result = run(
        RunConfig(
            out=str(tmp_path / "r"), model=folder, n_images=20, image_size=16, n_splits=2,
            selections=["mean", "token"], progress=False,
        )
    )  # fmt: skip
    assert set(result.table.site) == set(loaded.adapter.sites())
    assert set(result.table.condition) == {"baseline", "shuffle", "lower_mask"}


def test_batches_of_mixed_sizes_are_refused(qwen) -> None:
    from interp import InterventionError

    version, _, loaded = qwen
    adapter = loaded.adapter
    size = SIZE[version]
    images = generate(StimulusSpec(n_images=2, image_size=size)).images
    inputs = adapter.build_inputs(images, adapter.default_prompt("Hi."))
    inputs["image_grid_thw"] = torch.tensor([[1, 4, 4], [1, 4, 8]])
    with pytest.raises(InterventionError, match="same size"):
        adapter.token_positions(inputs)
