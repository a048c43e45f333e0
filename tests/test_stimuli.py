from __future__ import annotations

import numpy as np
import pytest

from interp import ConfigError, StimulusSpec, generate, patch_label_map
from interp.stimuli import CATEGORICAL_ATTRIBUTES, COLORS, SHAPES


def test_same_seed_gives_byte_identical_images_and_labels() -> None:
    a = generate(StimulusSpec(n_images=20, seed=7))
    b = generate(StimulusSpec(n_images=20, seed=7))
    assert a.images.tobytes() == b.images.tobytes()
    assert a.object_map.tobytes() == b.object_map.tobytes()
    for name in a.labels:
        assert a.labels[name].tobytes() == b.labels[name].tobytes()


def test_other_seed_differs_and_prefix_is_stable() -> None:
    a = generate(StimulusSpec(n_images=20, seed=7))
    assert a.images.tobytes() != generate(StimulusSpec(n_images=20, seed=8)).images.tobytes()
    head = generate(StimulusSpec(n_images=5, seed=7))
    assert head.images.tobytes() == a.images[:5].tobytes()


def test_label_sets_meet_the_spec() -> None:
    s = generate(StimulusSpec(n_images=400, seed=0))
    assert len(SHAPES) >= 4 and len(COLORS) >= 6
    assert set(np.unique(s.labels["size"])) == {0, 1, 2}
    assert set(np.unique(s.labels["count"])) == {0, 1, 2, 3}  # 1..4 objects
    for name, classes in CATEGORICAL_ATTRIBUTES.items():
        assert s.labels[name].min() >= 0 and s.labels[name].max() < len(classes)


def test_labels_agree_with_the_pixels() -> None:
    s = generate(StimulusSpec(n_images=60, seed=1, image_size=48))
    for i in range(len(s)):
        x, y = s.labels["x"][i], s.labels["y"][i]
        row, col = int(y), int(x)
        assert s.object_map[i, row, col] == 0, "first object's centre is on the first object"
        color = list(COLORS.values())[s.labels["color"][i]]
        assert tuple(s.images[i, row, col]) == color
        n_objects = len(set(np.unique(s.object_map[i])) - {-1})
        assert s.labels["count"][i] == n_objects - 1
        third = 48 / 3
        assert s.labels["cell"][i] == int(y // third) * 3 + int(x // third)
        assert (s.images[i][s.object_map[i] == -1] == 255).all(), "background is plain"


def test_patch_label_map_matches_a_brute_force_count() -> None:
    s = generate(StimulusSpec(n_images=8, seed=2, image_size=64))
    grid = (8, 8)
    fast = patch_label_map(s.object_map, grid)
    for i in range(len(s)):
        for r in range(8):
            for c in range(8):
                cell = s.object_map[i, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8]
                objects, counts = np.unique(cell[cell >= 0], return_counts=True)
                expected = objects[counts.argmax()] if len(objects) else -1
                assert fast[i, r, c] == expected
    assert patch_label_map(s.object_map[0], grid).shape == grid


def test_patch_label_map_refuses_a_grid_that_does_not_tile() -> None:
    s = generate(StimulusSpec(n_images=1, image_size=64))
    with pytest.raises(ConfigError, match="multiple of 7"):
        patch_label_map(s.object_map, (7, 7))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_images": 0}, "n_images"),
        ({"image_size": 8}, "image_size"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects"),
        ({"background": (0, 0, 300)}, "background"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StimulusSpec(**kwargs)
