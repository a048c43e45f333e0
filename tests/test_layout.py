"""Token layouts: labels of any boxes, tilings, and the cache's layout and extra tokens."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from caches import CacheReader, CacheWriter, extract
from interp import (
    CacheError,
    ConfigError,
    StimulusSpec,
    capture_tokens,
    generate,
    load_model,
    patch_label_map,
)
from interp.layout import TokenLayout, box_label_map


@pytest.fixture(scope="module")
def maps() -> np.ndarray:
    return generate(StimulusSpec(n_images=12, image_size=48, seed=9)).object_map  # (n, H, W)


@pytest.mark.parametrize("rows", [4, 6, 12])
def test_box_labels_of_a_grid_equal_the_patch_label_map(maps, rows) -> None:
    layout = TokenLayout.regular(rows, rows, 48)
    expected = patch_label_map(maps, (rows, rows)).reshape(len(maps), -1)
    np.testing.assert_array_equal(box_label_map(maps, layout.boxes), expected)


def test_box_labels_of_mixed_boxes_equal_brute_force(maps, rng) -> None:
    corners = rng.integers(0, 40, size=(30, 2))
    sides = rng.integers(1, 9, size=(30, 2))
    boxes = np.concatenate([corners, corners + sides], axis=1).astype(np.float32)
    got = box_label_map(maps, boxes)
    for i, image in enumerate(maps):
        for t, (y0, x0, y1, x1) in enumerate(boxes.astype(int)):
            block = image[y0:y1, x0:x1]
            counts = [(block == k).sum() for k in range(int(maps.max()) + 1)]
            want = int(np.argmax(counts)) if max(counts) > 0 else -1
            assert got[i, t] == want, (i, t)
    with pytest.raises(ConfigError, match="outside"):
        box_label_map(maps, np.array([[0, 0, 60, 8]], dtype=np.float32))


def test_tiling_finds_the_finest_complete_grid() -> None:
    base = TokenLayout.regular(2, 2, 32)
    fine = TokenLayout.regular(4, 4, 32, crop=1)
    index, cells, grid = TokenLayout.concat([base, fine]).tiling(32)
    assert grid == (4, 4) and list(index) == list(range(4, 20))
    np.testing.assert_array_equal(cells, fine.grid)
    # The base alone tiles; half the fine tokens alone do not.
    assert TokenLayout.concat([base, fine.take(np.arange(8))]).tiling(32)[2] == (2, 2)
    assert fine.take(np.arange(8)).tiling(32) is None
    with pytest.raises(ValueError, match="unknown extra"):
        TokenLayout.regular(2, 2, 32, extra=("sep",))


def test_extra_tokens_are_kept_apart(plain_dir, tmp_path) -> None:
    """The 'full' strategy sends CLS into the LLM: stored apart at every site, equal to
    the plain model's own outputs at those positions."""
    loaded = load_model(plain_dir)
    adapter = loaded.adapter
    images = generate(StimulusSpec(n_images=3, image_size=32, seed=1)).images
    prompt = adapter.default_prompt("What color is it?")
    sites = ["vision.1", "projector", "lm.2"]
    got = capture_tokens(loaded, images, sites, prompt=prompt)
    inputs = adapter.build_inputs(images, prompt)
    with torch.no_grad():
        out = loaded.model(**inputs, output_hidden_states=True)
        vision = loaded.model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
    cls_position = (inputs["input_ids"][0] == loaded.model.config.image_token_id).nonzero()[0]
    torch.testing.assert_close(got.extra["vision.1"], vision.hidden_states[2][:, :1])
    torch.testing.assert_close(got.extra["lm.2"], out.hidden_states[3][:, cls_position])
    assert got.extra["projector"].shape == (3, 1, got.acts["projector"].shape[-1])
    assert got.acts["lm.2"].shape[1] == 16  # the 4x4 patches, CLS apart
    for site in sites:
        assert adapter.token_layout(site, 32).extra == ("cls",)

    path = extract(
        loaded, generate(StimulusSpec(n_images=4, image_size=32)), tmp_path / "c.h5",
        sites=sites, conditions=["baseline", "shuffle"], progress=False,
    )  # fmt: skip
    with CacheReader(path) as reader:
        for site in sites:
            assert reader.layout(site).extra == ("cls",)
            assert reader.extra_acts(site).shape[:2] == (4, 1)
            assert reader.extra_acts(site, "shuffle").shape[:2] == (4, 1)


def test_schema_2_files_read_with_one_grid(cache_path_v3, tmp_path) -> None:
    old = tmp_path / "old.h5"
    shutil.copy(cache_path_v3, old)
    with h5py.File(old, "a") as f:
        grid = f["layout/vision.0/grid"][()]
        del f["layout"], f["extra"]
        f.create_dataset("tokens/grid", data=grid)
        f.attrs["schema_version"] = 2
    with CacheReader(cache_path_v3) as new, CacheReader(old) as reader:
        for site in reader.sites:
            np.testing.assert_array_equal(reader.layout(site).boxes, new.layout(site).boxes)
            assert reader.extra_acts(site) is None


@pytest.fixture(scope="module")
def cache_path_v3(loaded, tmp_path_factory):
    stimuli = generate(StimulusSpec(n_images=4, image_size=64, seed=1))
    return extract(
        loaded, stimuli, tmp_path_factory.mktemp("v3") / "c.h5",
        sites=["vision.0", "lm.1"], conditions=["baseline"], progress=False,
    )  # fmt: skip


def test_writer_refuses_tokens_that_disagree_with_the_layout(tmp_path) -> None:
    layout = TokenLayout.regular(2, 2, 8)
    with CacheWriter(tmp_path / "c.h5", {"sites": ["vision.0"]}) as writer:
        images = np.zeros((2, 8, 8, 3), np.uint8)
        writer.write_static(images, np.zeros((2, 8, 8), np.int8), {}, {}, {"vision.0": layout})
        with pytest.raises(CacheError, match="gave 5 patch tokens for image 0, its layout has 4"):
            writer.write_batch(0, {"baseline": {"vision.0": torch.zeros(2, 5, 3)}})
        with pytest.raises(CacheError, match="1 extra tokens for image 0, its layout has 0"):
            writer.write_batch(
                0,
                {"baseline": {"vision.0": torch.zeros(2, 4, 3)}},
                {"baseline": {"vision.0": torch.zeros(2, 1, 3)}},
            )
    ragged = [TokenLayout.regular(2, 2, 8), TokenLayout.regular(1, 1, 8)]  # 4 and 1 tokens
    with CacheWriter(tmp_path / "r.h5", {"sites": ["vision.0"]}) as writer:
        images = np.zeros((2, 8, 8, 3), np.uint8)
        writer.write_static(images, np.zeros((2, 8, 8), np.int8), {}, {}, {"vision.0": ragged})
        with pytest.raises(CacheError, match="gave 4 patch tokens for image 1, its layout has 1"):
            writer.write_batch(0, {"baseline": {"vision.0": torch.zeros(2, 4, 3)}})
        assert writer.n_written == 0  # nothing counted as written


def test_layout_arrays_must_agree() -> None:
    with pytest.raises(ValueError, match="layout arrays disagree"):
        TokenLayout(np.zeros((3, 4), np.float32), np.zeros(2, np.int16), np.zeros((3, 2), np.int32))
