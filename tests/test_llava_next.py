"""LLaVA-NeXT: any-resolution crops, unpadding and newline tokens, on a tiny model saved
and loaded back. References: plain torch hooks and the model's own packing."""

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
from tiny_vlms import build_llava_next

from analyses import RunConfig, run
from caches import CacheReader, extract
from interp import (
    ConfigError,
    ShufflePatches,
    StimulusSpec,
    capture_tokens,
    generate,
    load_model,
)

# 32 px: a 2x2 crop canvas, nothing padded. 16 px: a 1x2 canvas, the image centred in it
# with 8 px of padding either side, unpadded to the middle 4 of 8 patch columns.
SIZES = {32: (80, 5, 8), 16: (32, 3, 4)}  # patch tokens in the LLM, views, newlines


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return build_llava_next(tmp_path_factory.mktemp("llava-next"))


@pytest.fixture(scope="module")
def loaded(folder):
    return load_model(folder)


@pytest.mark.parametrize("size", sorted(SIZES))
def test_capture_equals_hooks_and_the_models_own_packing(loaded, folder, size) -> None:
    adapter = loaded.adapter
    n_lm, n_views, n_newlines = SIZES[size]
    images = generate(StimulusSpec(n_images=2, image_size=size, seed=1)).images
    got, inputs, model, seen = capture_beside_hooks(loaded, folder, images)
    positions = adapter.token_positions(inputs)
    rows = torch.arange(2)[:, None]
    for site in adapter.sites():
        layout = adapter.token_layout(site, size)
        ref = seen[site]
        if site.startswith("vision."):  # (batch * views, 1 + 16, d)
            assert ref.shape[0] == 2 * n_views
            want = ref[:, 1:].reshape(2, -1, ref.shape[-1])
            torch.testing.assert_close(got.extra[site], ref[:, :1].reshape(2, n_views, -1))
            assert layout.extra == ("cls",) * n_views
        elif site == "projector":
            want = ref.reshape(2, -1, ref.shape[-1])
        else:
            want = ref[rows, positions.patch]
            torch.testing.assert_close(got.extra[site], ref[rows, positions.extra])
            assert layout.extra == ("newline",) * n_newlines
        assert got.acts[site].shape[1] == len(layout), site
        torch.testing.assert_close(got.acts[site], want, rtol=0, atol=0, msg=site)
    assert len(adapter.token_layout("lm.0", size)) == n_lm
    # The LLM input: newline tokens hold the model's image_newline; each patch token holds
    # the projector output of the (crop, row, col) the lm layout names.
    lm_input = seen["lm_input"]  # (batch, seq, d)
    newline = model.model.image_newline
    torch.testing.assert_close(lm_input[rows, positions.extra], newline.expand(2, n_newlines, -1))
    proj = adapter.token_layout("projector", size)
    lm = adapter.token_layout("lm.0", size)
    where = {key: t for t, key in enumerate(_keys(proj))}
    index = [where[key] for key in _keys(lm)]
    torch.testing.assert_close(
        lm_input[rows, positions.patch], seen["projector"].reshape(2, -1, 32)[:, index]
    )


def _keys(layout) -> list[tuple[int, int, int]]:
    """(crop, row, col) of each token."""
    return [(int(c), int(r), int(q)) for c, (r, q) in zip(layout.crops, layout.grid, strict=True)]


def test_unpadding_keeps_the_image_and_drops_the_padding(loaded) -> None:
    vision = loaded.adapter.token_layout("vision.0", 16)
    canvas = vision.crops > 0
    empty = (vision.boxes[:, 2] <= vision.boxes[:, 0]) | (vision.boxes[:, 3] <= vision.boxes[:, 1])
    assert empty[canvas].sum() == 16  # 2 padding columns on each side of a 4-row canvas
    lm = loaded.adapter.token_layout("lm.0", 16)
    assert not ((lm.boxes[:, 2:] - lm.boxes[:, :2]) <= 0).any()  # the LLM sees no padding
    index, _, grid = lm.tiling(16)
    assert grid == (4, 4) and len(index) == 16


@pytest.mark.parametrize("size", sorted(SIZES))
def test_grid_maps_tokens_to_patches_in_every_crop(loaded, size) -> None:
    adapter = loaded.adapter
    layout = adapter.token_layout("vision.0", size)
    image = generate(StimulusSpec(n_images=1, image_size=size, seed=3)).images[0]
    canvas = layout.crops > 0
    sides = layout.boxes[:, 2:] - layout.boxes[:, :2]
    for t in np.flatnonzero(canvas & (sides > 0).all(1))[::5]:
        y0, x0, y1, x1 = layout.boxes[t]
        change = token_change(loaded, image, layout.boxes[t], "vision.0", "<image>")
        crop = layout.crops[t]
        in_crop = np.flatnonzero(layout.crops == crop)
        assert in_crop[change[in_crop].argmax()] == t  # the mapped token changes most
        others = np.flatnonzero((layout.crops > 0) & (layout.crops != crop))
        assert change[others].max() < 1e-4  # other crops never see these pixels
        base = np.flatnonzero(layout.crops == 0)
        hit = base[change[base].argmax()]  # the base view: the token whose box holds it
        by, bx = (y0 + y1) / 2, (x0 + x1) / 2
        b = layout.boxes[hit]
        assert b[0] <= by < b[2] and b[1] <= bx < b[3]


def test_interventions_act_on_the_llm_only(loaded, folder) -> None:
    adapter = loaded.adapter
    images = generate(StimulusSpec(n_images=2, image_size=32, seed=2)).images
    prompt = adapter.default_prompt("Describe the image.")
    assert_interventions_touch_the_llm_only(loaded, images, prompt)
    shuffled = ShufflePatches(seed=3).describe(adapter, 32)["permutation"]
    assert sorted(shuffled) == list(range(80))
    assert_new_interventions_match_references(loaded, folder, images, prompt)


def test_run_on_llava_next(folder, tmp_path) -> None:
    result = run(
        RunConfig(
            out=str(tmp_path / "r"), model=folder, n_images=24, image_size=32, n_splits=2,
            selections=["mean", "token"], progress=False,
        )
    )  # fmt: skip
    assert set(result.table.condition) == {"baseline", "shuffle", "lower_mask"}
    with CacheReader(result.paths["cache"]) as reader:
        assert reader.acts("vision.0").shape[1:] == (80, 32)
        assert reader.acts("lm.0").shape[1:] == (80, 32)
        assert reader.extra_acts("lm.0").shape[1] == 8
        assert reader.layout("lm.0").extra == ("newline",) * 8
    # The pixel probe reads the crop tokens, which tile the image at the finer grid.
    sites = {"vision.0", "vision.1", "projector", "lm.0", "lm.1", "lm.2", "lm.3"}
    assert set(result.tables.get("pixels").site) == sites == set(result.table.site)


def test_stimuli_that_do_not_tile_are_refused_by_a_run(folder, tmp_path) -> None:
    """The run draws stimuli whose patches are whole pixels (labels and the pixel probe
    exact); extract takes any size, each token's box through the processor."""
    config = RunConfig(out=str(tmp_path / "out"), model=folder, image_size=30, progress=False)
    with pytest.raises(ConfigError, match="does not tile"):
        run(config)
    stimuli = generate(StimulusSpec(n_images=2, image_size=30))
    path = extract(load_model(folder), stimuli, tmp_path / "c.h5", progress=False)
    with CacheReader(path) as reader:  # 30 px resized to the 16 px base view: 7.5 px patches
        np.testing.assert_allclose(reader.layout("vision.0").boxes[1], [0, 7.5, 7.5, 15])


def test_loads_with_a_dtype_and_device_map(folder, loaded) -> None:
    """The checkpoint path a GPU run takes (device_map through accelerate), on the CPU."""
    half = load_model(folder, dtype="bfloat16", device_map="cpu", local_files_only=True)
    assert half.dtype == torch.bfloat16 and half.device.type == "cpu"
    images = generate(StimulusSpec(n_images=2, image_size=32, seed=4)).images
    prompt = half.adapter.default_prompt("Describe the image.")
    low = capture_tokens(half, images, ["vision.1", "lm.3"], prompt=prompt)
    full = capture_tokens(loaded, images, ["vision.1", "lm.3"], prompt=prompt)
    for site in ("vision.1", "lm.3"):
        assert low.acts[site].dtype == torch.float32  # stored as float32 whatever the model
        error = (low.acts[site] - full.acts[site]).norm() / full.acts[site].norm()
        assert error < 0.05, (site, float(error))


def test_refusals_name_the_fix(folder, loaded, tmp_path) -> None:
    import json
    import shutil

    from interp import InterventionError, UnsupportedModelError

    full = tmp_path / "full"
    shutil.copytree(folder, full)
    config = json.loads((full / "config.json").read_text())
    config["vision_feature_select_strategy"] = "full"
    (full / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="'full' is not supported.*'default'"):
        load_model(str(full))
    adapter = loaded.adapter
    inputs = adapter.build_inputs(
        generate(StimulusSpec(n_images=1, image_size=32)).images, "<image>"
    )
    inputs["image_sizes"] = torch.tensor([[32, 16], [32, 32]])
    with pytest.raises(InterventionError, match="the same size"):
        adapter.token_positions(inputs)
    with pytest.raises(InterventionError, match="use token_positions"):
        adapter.image_token_positions(inputs["input_ids"])
