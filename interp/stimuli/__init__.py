"""Deterministic synthetic stimuli (flat shapes on a plain or textured background) and the
questions asked about them (:mod:`interp.stimuli.questions`).

Each image carries ground-truth labels for its *first* object (shape, color, size bin,
centre position and 3x3 cell) and for the whole image (object count), plus an object map
(which object, if any, covers each pixel) from which per-patch label maps are derived for
any patch grid. Image ``i`` depends only on ``(seed, i)``, so the first ``k`` images of a
larger set are byte-identical to a set of ``k`` images with the same seed.

Sizes may be mixed (``image_sizes``): image ``i`` is ``image_sizes[i % len]`` px square,
drawn at that size (object radii and cells scale with it) and padded at the bottom and
right, with the background colour (object map: -1), to the largest side, so a set is
still one array; ``Stimuli.sizes`` says which part of each is the image.

A complexity dial (``complexity=1..5``, :data:`COMPLEXITY_LEVELS`) goes from one object
on a plain background to up to eight mostly small objects over grey clutter, a textured
or noisy background and partial occlusion. Clutter and texture are grey (never an object
colour) and lie under the objects, so every pixel the object map gives object ``k`` has
exactly that object's colour at every level, and the labels keep their meaning: the
first object's attributes, the number of objects.
"""

from interp.stimuli.drawing import (
    COMPLEXITY_LEVELS,
    MAX_OBJECTS,
    Complexity,
    Stimuli,
    StimulusSpec,
    cell_of,
    generate,
    patch_label_map,
    render,
)
from interp.stimuli.vocabulary import (
    CATEGORICAL_ATTRIBUTES,
    CELL_NAMES,
    COLORS,
    COUNT_NAMES,
    OBJECT_ATTRIBUTES,
    SHAPES,
    SIZES,
)

__all__ = [
    "SHAPES",
    "COLORS",
    "SIZES",
    "CELL_NAMES",
    "COUNT_NAMES",
    "CATEGORICAL_ATTRIBUTES",
    "MAX_OBJECTS",
    "COMPLEXITY_LEVELS",
    "Complexity",
    "OBJECT_ATTRIBUTES",
    "cell_of",
    "StimulusSpec",
    "Stimuli",
    "generate",
    "patch_label_map",
    "render",
]
