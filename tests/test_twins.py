"""Hard-negative twins of the contrastive stage, and the renderer they rely on."""

from __future__ import annotations

import numpy as np
import pytest

from interp import StimulusSpec, generate
from interp.organism.twins import contrastive_batch, twin
from interp.stimuli import render
from interp.stimuli.questions import caption


@pytest.fixture(scope="module")
def stimuli():
    return generate(StimulusSpec(n_images=40, image_size=64, seed=11))


def test_render_reproduces_the_generator(stimuli) -> None:
    for i in range(len(stimuli)):
        image, object_map = render(stimuli.objects[i], 64)
        assert np.array_equal(image, stimuli.images[i])
        assert np.array_equal(object_map, stimuli.object_map[i])


def test_mirror_twin_is_the_flipped_image_with_left_and_right_swapped(stimuli) -> None:
    rng = np.random.default_rng(0)
    for i in range(len(stimuli)):
        objects = stimuli.objects[i]
        mirrored = twin(objects, "mirror", 64, rng)
        assert np.array_equal(render(mirrored, 64)[0], stimuli.images[i][:, ::-1])
        before, after = caption(objects, 64), caption(mirrored, 64)
        assert before.count("left") == after.count("right")
        assert objects[0]["x"] == stimuli.objects[i][0]["x"]  # the original is untouched


@pytest.mark.parametrize("kind, field", [("shape", "shape"), ("swap", "color")])
def test_twins_change_one_fact_and_the_caption(stimuli, kind: str, field: str) -> None:
    rng = np.random.default_rng(1)
    swapped = 0
    for objects in stimuli.objects:
        changed = twin(objects, kind, 64, rng)
        diff = [k for k, (a, b) in enumerate(zip(objects, changed, strict=True)) if a != b]
        if kind == "swap" and len(diff) == 2:
            i, j = diff
            assert changed[i]["color"] == objects[j]["color"] != objects[i]["color"]
            assert changed[j]["color"] == objects[i]["color"]
            swapped += 1
        else:  # a shape twin, or swap's fallback when no two colors differ
            assert len(diff) == 1
            k = diff[0]
            assert changed[k]["shape"] != objects[k]["shape"]
            assert {f: v for f, v in changed[k].items() if f != "shape"} == {
                f: v for f, v in objects[k].items() if f != "shape"
            }
        assert caption(changed, 64) != caption(objects, 64)
    if kind == "swap":
        assert swapped > 10


def test_contrastive_batch_pairs_each_fresh_image_with_its_twin() -> None:
    images, objects = contrastive_batch(5, 12, 64, np.random.default_rng(0))
    fresh = generate(StimulusSpec(n_images=6, image_size=64, seed=5))
    assert images.shape == (12, 64, 64, 3)
    assert np.array_equal(images[0::2], fresh.images)
    for k in range(1, 12, 2):
        assert caption(objects[k], 64) != caption(objects[k - 1], 64)
        assert np.array_equal(images[k], render(objects[k], 64)[0])
    again, _ = contrastive_batch(5, 12, 64, np.random.default_rng(0))
    assert np.array_equal(images, again)


def test_unknown_twin_kind_is_refused(stimuli) -> None:
    with pytest.raises(ValueError, match="expected one of"):
        twin(stimuli.objects[0], "rotate", 64, np.random.default_rng(0))
