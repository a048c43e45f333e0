"""The complexity dial: labels and object maps stay exact at every level."""

from __future__ import annotations

import numpy as np
import pytest

from interp import ConfigError, StimulusSpec, generate
from interp.stimuli import COLORS, COMPLEXITY_LEVELS, COUNT_NAMES, SHAPES, SIZES, render

LEVELS = sorted(COMPLEXITY_LEVELS)


@pytest.mark.parametrize("level", LEVELS)
def test_every_level_keeps_labels_and_object_maps_exact(level: int) -> None:
    spec = StimulusSpec(n_images=40, seed=3, complexity=level, image_sizes=(48, 64))
    s = generate(spec)
    most = COMPLEXITY_LEVELS[level].occlusion
    fewest, largest = COMPLEXITY_LEVELS[level].objects
    counts = []
    for i, objects in enumerate(s.objects):
        side = spec.size_of(i)
        image, maps = s.image(i), s.object_map[i, :side, :side]
        assert (s.object_map[i, side:] == -1).all() and (s.object_map[i, :, side:] == -1).all()
        for k, obj in enumerate(objects):
            here = maps == k
            colour = COLORS[list(COLORS)[int(obj["color"])]]
            assert (image[here] == colour).all(), "an object's pixels have its colour"
            _, alone = render([obj], side)  # the object drawn by itself
            own = alone == 0
            assert not (here & ~own).any(), "an object covers only its own shape"
            assert here.sum() >= (1 - most) * own.sum(), "occluded beyond the level's limit"
            assert maps[int(obj["y"]), int(obj["x"])] == k, "its centre shows"
        background = image[maps == -1]  # (pixels, 3)
        assert (background == background[:, :1]).all(), "background, texture, clutter: grey"
        first = objects[0]
        assert s.labels["color"][i] == first["color"] and s.labels["shape"][i] == first["shape"]
        assert s.labels["size"][i] == first["size"]
        assert (s.labels["x"][i], s.labels["y"][i]) == pytest.approx((first["x"], first["y"]))
        assert s.labels["count"][i] == len(objects) - 1 == len(np.unique(maps[maps >= 0])) - 1
        counts.append(len(objects))
        for attribute, columns in s.object_labels().items():
            assert (columns[i, len(objects) :] == -1).all()
            if attribute != "cell":
                assert list(columns[i, : len(objects)]) == [o[attribute] for o in objects]
    assert max(counts) <= largest and np.mean(np.array(counts) >= fewest) >= 0.9


def test_levels_one_and_two_are_todays_stimuli_and_the_levels_grow_harder() -> None:
    plain = generate(StimulusSpec(n_images=30, seed=5))
    assert generate(StimulusSpec(n_images=30, seed=5, complexity=2)).images.tobytes() == (
        plain.images.tobytes()
    )
    lone = generate(StimulusSpec(n_images=30, seed=5, max_objects=1))
    assert generate(StimulusSpec(n_images=30, seed=5, complexity=1)).images.tobytes() == (
        lone.images.tobytes()
    )
    means, shading = [], []
    for level in LEVELS:
        s = generate(StimulusSpec(n_images=60, seed=5, complexity=level))
        means.append(np.mean([len(o) for o in s.objects]))
        shading.append(float((255 - s.images[s.object_map == -1]).mean()))  # off white
    assert all(a < b for a, b in zip(means, means[1:], strict=False)), means
    assert shading[:2] == [0.0, 0.0] and 0 < shading[2] < shading[3] < shading[4], shading
    assert len(COUNT_NAMES) == max(c.objects[1] for c in COMPLEXITY_LEVELS.values())
    assert len(SHAPES) == 5 and len(SIZES) == 3


def test_a_level_is_deterministic_and_round_trips_through_its_dict() -> None:
    spec = StimulusSpec(n_images=12, seed=9, complexity=5)
    again = StimulusSpec(**spec.to_dict())
    assert again == spec and (again.min_objects, again.max_objects) == (5, 8)
    assert generate(again).images.tobytes() == generate(spec).images.tobytes()
    head = generate(StimulusSpec(n_images=4, seed=9, complexity=5))
    assert head.images.tobytes() == generate(spec).images[:4].tobytes()
    assert "complexity" not in StimulusSpec(n_images=3).to_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"complexity": 0}, "complexity must be one of"),
        ({"complexity": 6}, "complexity must be one of"),
        ({"complexity": 3, "max_objects": 2}, "leave min_objects and max_objects out"),
    ],
)
def test_bad_levels_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StimulusSpec(**kwargs)
