"""Vision encoders on their own (CLIP, SigLIP, DINOv2), and the patch-grid mapping of every
family: tiny models built offline, saved, and loaded back with from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_vlms import build_encoder
from transformers import AutoModel

from analyses import RunConfig, run
from caches import CacheReader, extract
from interp import ConfigError, StimulusSpec, capture, capture_tokens, generate, load_model

SIDE, PATCH = 32, 8  # a 4x4 patch grid


KINDS = ["clip", "siglip", "dinov2", "dinov2_registers"]
PREFIX = {"clip": 1, "siglip": 0, "dinov2": 1, "dinov2_registers": 3}


@pytest.fixture(scope="module", params=KINDS)
def encoder(request, tmp_path_factory):
    torch.manual_seed(0)
    folder = build_encoder(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, folder, load_model(folder)


@pytest.fixture(scope="module")
def images():
    return generate(StimulusSpec(n_images=3, image_size=SIDE, seed=2)).images


def test_encoder_capture_equals_torch_hooks(encoder, images) -> None:
    kind, folder, loaded = encoder
    adapter = loaded.adapter
    assert adapter.sites() == ["vision.0", "vision.1"]
    assert adapter.patch_grid == (4, 4) and adapter.vision_prefix_tokens == PREFIX[kind]
    captured = capture_tokens(loaded, images, adapter.sites())
    got = captured.acts
    reference = AutoModel.from_pretrained(folder).eval()
    modules = dict(reference.named_modules())
    seen = {}
    handles = [
        modules[adapter.module_path(site)].register_forward_hook(
            lambda _m, _i, out, site=site: seen.__setitem__(
                site, out[0] if isinstance(out, tuple) else out
            )
        )
        for site in adapter.sites()
    ]
    try:
        with torch.no_grad():
            reference(**adapter.build_inputs(images, ""))
    finally:
        for h in handles:
            h.remove()
    for site in adapter.sites():
        assert seen[site].shape[1] == 16 + PREFIX[kind]
        torch.testing.assert_close(got[site], seen[site][:, PREFIX[kind] :], rtol=0, atol=0)
        # CLS and registers: kept apart, named in the layout
        kinds = adapter.token_layout(site, SIDE).extra
        assert kinds == ("cls",) * min(1, PREFIX[kind]) + ("register",) * (PREFIX[kind] - 1)
        if PREFIX[kind]:
            extra = captured.extra[site]
            torch.testing.assert_close(extra, seen[site][:, : PREFIX[kind]], rtol=0, atol=0)
        else:
            assert site not in captured.extra


def _changed_token(loaded, image: np.ndarray, row: int, col: int, prompt: str) -> np.ndarray:
    """Per-token size of the change at vision.0 when one patch's pixels are repainted."""
    size = image.shape[0] // loaded.adapter.patch_grid[0]
    edited = image.copy()
    edited[row * size : (row + 1) * size, col * size : (col + 1) * size] = (10, 200, 90)
    both = capture(loaded, np.stack([image, edited]), ["vision.0"], prompt=prompt)["vision.0"]
    return (both[1] - both[0]).norm(dim=-1).numpy()  # (tokens,)


@pytest.mark.parametrize(("row", "col"), [(0, 3), (2, 1)])
def test_encoder_grid_maps_tokens_to_patches(encoder, images, row, col) -> None:
    _, _, loaded = encoder
    change = _changed_token(loaded, images[0], row, col, "")
    grid = loaded.adapter.token_layout("vision.0", SIDE).grid
    hit = int(change.argmax())
    assert tuple(grid[hit]) == (row, col)
    assert change[hit] > 2 * np.sort(change)[-2]  # the rest only through attention


def test_llava_grid_maps_tokens_to_patches(loaded, stimuli, prompt) -> None:
    grid = loaded.adapter.token_layout("vision.0", 64).grid
    for row, col in [(0, 0), (5, 2), (7, 7)]:
        change = _changed_token(loaded, stimuli.images[0], row, col, prompt)
        hit = int(change.argmax())
        assert tuple(grid[hit]) == (row, col)
        assert change[hit] > 2 * np.sort(change)[-2]


def test_encoders_run_baseline_mean_and_patch_only(encoder, tmp_path) -> None:
    kind, folder, loaded = encoder
    stimuli = generate(StimulusSpec(n_images=4, image_size=SIDE))
    kinds = r"conditions \['baseline', 'mean', 'zero', 'patch', 'sae'\]"
    with pytest.raises(ConfigError, match=kinds):
        extract(loaded, stimuli, tmp_path / "c.h5", conditions=["shuffle"], progress=False)
    # mean:vision.0 puts each patch position's mean over the set at vision.0 (a plain
    # numpy mean of the baseline); the CLS / register tokens and nothing before it move.
    conditions = ["mean:vision.0", "patch:vision.0"]
    path = extract(loaded, stimuli, tmp_path / "m.h5", conditions=conditions, progress=False)
    with CacheReader(path) as reader:
        base = reader.acts("vision.0")[:].astype(np.float64)  # (n, tokens, d)
        ablated = reader.acts("vision.0", "mean:vision.0")[:]
        np.testing.assert_allclose(ablated, np.broadcast_to(base.mean(0), base.shape), atol=2e-3)
        later = reader.acts("vision.1", "mean:vision.0")[:] - reader.acts("vision.1")[:]
        assert np.abs(later).max() > 1e-3
        # patch:vision.0: each image's vision.0 patch tokens are its partner's
        partners = reader.intervention("patch:vision.0")["partners"]
        patched = reader.acts("vision.0", "patch:vision.0")[:]
        np.testing.assert_array_equal(patched, reader.acts("vision.0")[:][partners])
    if kind != "clip":
        return
    result = run(
        RunConfig(out=str(tmp_path / "r"), model=folder, n_images=20, n_splits=2, progress=False)
    )
    assert set(result.table.condition) == {"baseline"}
    assert set(result.table.site) == {"vision.0", "vision.1"}
    assert all(p.is_file() for p in result.paths.values())


def test_encoders_take_no_prompt_and_no_interventions(encoder, images) -> None:
    from interp import InterventionError, LowerLayerMask

    _, _, loaded = encoder
    with pytest.raises(ConfigError, match="takes no prompt"):
        capture(loaded, images, ["vision.0"], prompt="<image> hello")
    with pytest.raises(InterventionError, match="encoder has no"):
        LowerLayerMask().actions(loaded.adapter, None)


def test_shuffle_needs_an_llm_and_layouts_need_their_modules(encoder, images) -> None:
    from interp import InterventionError, ShufflePatches, UnsupportedModelError
    from interp.adapters import find_first_module

    _, _, loaded = encoder
    inputs = loaded.adapter.build_inputs(images, "")
    with pytest.raises(InterventionError, match="no LLM input to shuffle"):
        ShufflePatches().actions(loaded.adapter, inputs)
    with pytest.raises(UnsupportedModelError, match=r"'\*language_model' \(or text_model\)"):
        find_first_module(loaded.model, ("language_model", "text_model"))
