"""Pixel-value prediction: reconstructing images from visual tokens."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from analyses import reconstruction_grid
from caches import CacheReader, SiteTokens, extract
from interp import ConfigError, StimulusSpec, generate
from probes import TABLE_COLUMNS, pixel_sweep, reconstruct_pixels
from probes.pixels import Tiling, assemble, patch_pixels

GRID = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2)


@pytest.fixture(scope="module")
def stimuli():
    return generate(StimulusSpec(n_images=60, image_size=64, seed=4))


def test_patches_and_images_round_trip(stimuli) -> None:
    patches = patch_pixels(stimuli.images, GRID, (8, 8))  # (n, 64, 8 * 8 * 3)
    assert patches.shape == (60, 64, 192)
    np.testing.assert_array_equal(patches[0, 9].reshape(8, 8, 3), stimuli.images[0, 8:16, 8:16])
    np.testing.assert_array_equal(assemble(patches, GRID, (8, 8), 64), stimuli.images)
    with pytest.raises(ConfigError, match="do not tile"):
        patch_pixels(stimuli.images[:, :60, :60], GRID, (8, 8))


def test_identity_tokens_reconstruct_exactly_and_random_projections_degrade(stimuli) -> None:
    """A "model" whose tokens are the raw patches is reconstructed almost perfectly; one
    whose tokens are random projections of them to fewer dimensions loses more the fewer
    dimensions it keeps."""
    patches = patch_pixels(stimuli.images, GRID, (8, 8))
    identity = reconstruct_pixels(patches, stimuli.images, Tiling.of(GRID, (8, 8)))
    assert identity.mae < 0.5 and identity.psnr > 45
    np.testing.assert_allclose(identity.images, stimuli.images, atol=2)
    rng = np.random.default_rng(0)
    errors = []
    for width in (48, 12, 3):
        tokens = patches @ rng.normal(size=(192, width)).astype(np.float32)
        errors.append(reconstruct_pixels(tokens, stimuli.images, Tiling.of(GRID, (8, 8))).mae)
    baseline = identity.baseline_abs_error.sum() / identity.values.sum()
    assert identity.mae < errors[0] < errors[1] < errors[2] < baseline, (errors, baseline)


def test_images_of_mixed_sizes_are_reconstructed_at_one_patch_size() -> None:
    """32 and 64 px images on an 8x8 grid: patches of 4 and 8 px. The probe predicts
    4x4 patches (their common size), so an identity "model" whose tokens are those 4x4
    patches rebuilds the 32 px images exactly and the 64 px ones as their 2x2 block
    averages, each image at its own size."""
    mixed = generate(StimulusSpec(n_images=40, image_sizes=(32, 64), seed=7))
    values, offsets = [], [0]
    expected = np.zeros(mixed.images.shape, dtype=np.float32)
    for i, (side, _) in enumerate(mixed.sizes.tolist()):
        image = mixed.image(i).astype(np.float32)
        f = side // 32
        coarse = image.reshape(32, f, 32, f, 3).mean((1, 3))  # (32, 32, 3)
        expected[i, :side, :side] = coarse.repeat(f, 0).repeat(f, 1)
        values.append(patch_pixels(coarse[None], GRID, (8, 8))[0])  # (64, 48)
        offsets.append(offsets[-1] + 64)
    tokens = SiteTokens(np.concatenate(values), np.array(offsets))
    result = reconstruct_pixels(
        tokens, mixed.images, Tiling.of(GRID, (8, 8)), sizes=mixed.sizes, n_splits=4
    )
    assert result.patch == (4, 4)
    np.testing.assert_allclose(result.images, expected, atol=2)
    np.testing.assert_array_equal(result.values, mixed.sizes[:, 0].astype(float) ** 2 * 3)
    small = mixed.sizes[:, 0] == 32
    assert result.abs_error[small].sum() / result.values[small].sum() < 0.5
    assert result.mae < result.baseline_abs_error.sum() / result.values.sum()
    with pytest.raises(ConfigError, match="images of 32x32 px .* do not tile a 7x7 patch grid"):
        reconstruct_pixels(tokens, mixed.images, Tiling.of(GRID[:49], (7, 7)), sizes=mixed.sizes)


def test_pixel_sweep_on_a_cache(loaded, tmp_path) -> None:
    stimuli = generate(StimulusSpec(n_images=30, seed=5))
    path = extract(
        loaded, stimuli, tmp_path / "c.h5", sites=["vision.0", "lm.7"],
        conditions=["baseline"], progress=False,
    )  # fmt: skip
    with CacheReader(path) as reader:
        table, shown = pixel_sweep(reader, n_show=3, n_boot=100, progress=False)
    assert list(table.columns) == TABLE_COLUMNS
    assert set(table["metric"]) == {"mae", "psnr"} and set(table["attribute"]) == {"pixels"}
    mae = table[table.metric == "mae"].set_index("site")
    assert (mae["ci_low"] <= mae["value"]).all() and (mae["value"] <= mae["ci_high"]).all()
    # the first vision layer of a random tiny model still holds the pixels: better than
    # the mean patch
    assert mae.loc["vision.0", "value"] < mae.loc["vision.0", "chance"]
    psnr = table[table.metric == "psnr"].set_index("site")
    assert (psnr["ci_low"] <= psnr["value"]).all() and (psnr["value"] <= psnr["ci_high"]).all()
    assert list(shown) == ["original", "vision.0", "lm.7"]
    assert shown["vision.0"].shape == (3, 64, 64, 3) and shown["vision.0"].dtype == np.uint8
    np.testing.assert_array_equal(shown["original"], stimuli.images[:3])
    picture = reconstruction_grid(shown, scale=2)
    assert picture.size[0] == 3 * (128 + 2) and picture.size[1] > 3 * 128


def test_sites_whose_tokens_do_not_tile_are_skipped_with_a_warning(loaded, tmp_path) -> None:
    path = extract(
        loaded, generate(StimulusSpec(n_images=20, seed=6)), tmp_path / "c.h5",
        sites=["vision.0", "lm.7"], conditions=["baseline"], progress=False,
    )  # fmt: skip
    with h5py.File(path, "a") as f:  # lm.7 loses half its tokens' boxes: no tiling left
        boxes = f["layout/lm.7/boxes"]
        boxes[:32] = boxes[32:]
    with (
        CacheReader(path) as reader,
        pytest.warns(UserWarning, match=r"no pixel probe at \['lm.7'\]"),
    ):
        table, shown = pixel_sweep(reader, n_show=2, n_boot=20, progress=False)
    assert set(table.site) == {"vision.0"} and "lm.7" not in shown


def test_fractional_and_cropped_tilings_are_resampled_by_area() -> None:
    """Images of 32x48 px under a 3x3 grid of 10.67x16 px boxes (a processor's resize),
    each box one colour (by pixel centre): tokens that carry that colour rebuild every
    pixel but those next to a box edge, whose resampled cells mix two boxes. A grid over
    the middle column only (a centre crop) scores the pixels it covers, no others."""
    rng = np.random.default_rng(0)
    n = 40
    colours = rng.integers(0, 256, (n, 3, 3, 3))  # (images, rows, cols, rgb)
    row = np.floor((np.arange(32) + 0.5) / (32 / 3)).astype(int)
    col = np.floor((np.arange(48) + 0.5) / 16).astype(int)
    images = colours[:, row][:, :, col].astype(np.uint8)  # (n, 32, 48, 3)
    cells = np.stack(np.meshgrid(np.arange(3), np.arange(3), indexing="ij"), -1).reshape(-1, 2)
    tokens = colours.reshape(n, 9, 3).astype(np.float32)  # the box's colour
    sizes = np.tile([32, 48], (n, 1))
    whole = Tiling(np.arange(9), cells, (3, 3), region=(0.0, 0.0, 32.0, 48.0))
    result = reconstruct_pixels(tokens, images, whole, sizes=sizes)
    assert result.patch == (8, 8)  # the smallest box side, at most RESAMPLED_PATCH
    np.testing.assert_array_equal(result.values, 32 * 48 * 3)
    inside = np.abs((np.arange(32) + 0.5) - np.round((np.arange(32) + 0.5) / (32 / 3)) * 32 / 3)
    away = inside > 1.5  # rows whose centre is over 1.5 px from a box edge
    np.testing.assert_allclose(result.images[:, away], images[:, away], atol=2)
    assert result.mae < 0.1 * result.baseline_abs_error.sum() / result.values.sum()
    # The middle column of boxes, x 16..32, as the only region (a crop of the centre).
    column = np.stack([np.arange(3), np.zeros(3, int)], 1)  # (row, 0)
    middle = Tiling(np.arange(3), column, (3, 1), region=(0.0, 16.0, 32.0, 32.0))
    cropped = reconstruct_pixels(tokens[:, 1::3], images, middle, sizes=sizes)
    np.testing.assert_array_equal(cropped.values, 32 * 16 * 3)
    assert (cropped.images[:, :, :16] == 0).all() and (cropped.images[:, :, 32:] == 0).all()
    np.testing.assert_allclose(cropped.images[:, away, 16:32], images[:, away, 16:32], atol=2)
