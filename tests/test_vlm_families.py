"""VLM families without crops (PaliGemma; Gemma 3, whose projector pools patches):
tiny models saved and loaded back, checked against plain torch hooks, by repainting one
patch, and under the interventions. LLaVA-1.5 has its own tests (test_capture,
test_interventions), LLaVA-NeXT too (test_llava_next)."""

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
from tiny_vlms import build_gemma3, build_paligemma

from analyses import RunConfig, run
from caches import CacheReader
from interp import (
    StimulusSpec,
    generate,
    load_model,
)

BUILDERS = {"paligemma": build_paligemma, "gemma3": build_gemma3}
SIZE = 16


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def family(request, tmp_path_factory):
    folder = BUILDERS[request.param](tmp_path_factory.mktemp(request.param))
    return request.param, folder, load_model(folder)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return generate(StimulusSpec(n_images=2, image_size=SIZE, seed=5)).images


def test_capture_equals_torch_hooks(family, images) -> None:
    _, folder, loaded = family
    adapter = loaded.adapter
    got, inputs, _, seen = capture_beside_hooks(loaded, folder, images)
    positions = adapter.token_positions(inputs).patch
    image_ids = inputs["input_ids"] == loaded.model.config.image_token_id
    assert (positions == image_ids.nonzero()[:, 1].reshape(len(images), -1)).all()
    rows = torch.arange(len(images))[:, None]
    prefix = adapter.vision_prefix_tokens
    for site in adapter.sites():
        ref = seen[site]
        if site.startswith("vision."):
            ref = ref[:, prefix:]
        elif site.startswith("lm."):
            ref = ref[rows, positions]
        assert got.acts[site].shape[1] == len(adapter.token_layout(site, SIZE)), site
        torch.testing.assert_close(got.acts[site], ref, rtol=0, atol=0, msg=site)


@pytest.mark.parametrize("site", ["vision.0", "projector"])
def test_grid_maps_tokens_to_patches(family, images, site) -> None:
    """Repaint the pixels of one token's box: that token changes most. Gemma 3's projector
    pools 2x2 patches, so its tokens' boxes are 4 vision patches each."""
    kind, _, loaded = family
    layout = loaded.adapter.token_layout(site, SIZE)
    assert len(layout) == (4 if (kind, site) == ("gemma3", "projector") else 16)
    prompt = loaded.adapter.default_prompt("Describe the image.")
    for t in (0, len(layout) // 2 - 1, len(layout) - 1):
        change = token_change(loaded, images[0], layout.boxes[t], site, prompt)
        assert int(change.argmax()) == t
        if site == "vision.0":
            assert change[t] > 2 * np.sort(change)[-2]  # the rest only through attention


def test_interventions_change_the_llm_only(family, images) -> None:
    _, _, loaded = family
    adapter = loaded.adapter
    assert_interventions_touch_the_llm_only(loaded, images, adapter.default_prompt("Hi."))


def test_new_interventions_equal_their_references(family, images) -> None:
    _, folder, loaded = family
    prompt = loaded.adapter.default_prompt("Hi.")
    assert_new_interventions_match_references(loaded, folder, images, prompt)


def test_the_whole_run(family, tmp_path) -> None:
    _, folder, loaded = family
    result = run(
        RunConfig(
            out=str(tmp_path / "r"), model=folder, n_images=20, n_splits=2,
            selections=["mean", "token"], progress=False,
        )
    )  # fmt: skip
    assert set(result.table.site) == set(loaded.adapter.sites())
    assert set(result.table.condition) == {"baseline", "shuffle", "lower_mask"}
    assert set(result.tables.get("pixels").site) == set(loaded.adapter.sites())
    # Gemma 3's outliers exceed float16: its caches keep float32 unless told otherwise
    expected = "float32" if loaded.adapter.family == "Gemma 3" else "float16"
    with CacheReader(result.paths["cache"]) as reader:
        assert reader.attrs["store_dtype"] == expected
        assert reader.acts("projector").dtype == np.dtype(expected)
