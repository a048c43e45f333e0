"""Hard negatives for the contrastive stage: twins of an image that differ in one fact.

A batch of random images is told apart by color, size and count alone, so an encoder
trained on it never has to see shape or left/right (measured on the first organism:
shape decodable at chance). Each twin changes exactly one thing, and its caption changes
with it, so matching image to caption within the batch needs that thing:

- ``shape``: one object takes another shape (same place, color and size);
- ``mirror``: the image mirrored left to right (every shape here is symmetric);
- ``swap``: two objects of different colors trade colors (binding color to object).
"""

from __future__ import annotations

import numpy as np

from interp.errors import ConfigError
from interp.stimuli import SHAPES, StimulusSpec, generate, render

__all__ = ["PAIR_KINDS", "TWIN_KINDS", "TWIN_WEIGHTS", "contrastive_batch", "twin", "twin_pair"]

TWIN_KINDS: tuple[str, ...] = ("shape", "mirror", "swap")
# Shape is the hardest fact to see at 8 px patches, so half of the twins are shape twins.
TWIN_WEIGHTS: tuple[float, ...] = (0.5, 0.25, 0.25)

Objects = list[dict[str, float]]


def twin(objects: Objects, kind: str, image_size: int, rng: np.random.Generator) -> Objects:
    """A copy of ``objects`` with one fact changed (``kind`` in ``TWIN_KINDS``).

    ``swap`` needs two objects of different colors; without them it falls back to ``shape``.
    """
    out = [dict(obj) for obj in objects]
    if kind == "mirror":
        for obj in out:
            obj["x"] = image_size - obj["x"]
        return out
    if kind == "swap":
        pairs = [
            (i, j)
            for i in range(len(out))
            for j in range(i + 1, len(out))
            if out[i]["color"] != out[j]["color"]
        ]
        if pairs:
            i, j = pairs[int(rng.integers(len(pairs)))]
            out[i]["color"], out[j]["color"] = out[j]["color"], out[i]["color"]
            return out
        kind = "shape"
    if kind == "shape":
        target = out[int(rng.integers(len(out)))]
        others = [s for s in range(len(SHAPES)) if s != int(target["shape"])]
        target["shape"] = int(rng.choice(others))
        return out
    raise ConfigError(f"unknown twin kind {kind!r}; expected one of {TWIN_KINDS}")


def contrastive_batch(
    seed: int, batch: int, image_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[Objects]]:
    """``batch`` images: ``batch // 2`` fresh ones (seed ``seed``), each followed by a twin
    of a random kind. Returns ``(batch, H, W, 3)`` uint8 images and their objects.
    """
    n_base = (batch + 1) // 2
    base = generate(StimulusSpec(n_images=n_base, image_size=image_size, seed=seed))
    images = np.empty((batch, image_size, image_size, 3), dtype=np.uint8)
    objects: list[Objects] = []
    for k in range(batch):
        if k % 2 == 0:
            images[k] = base.images[k // 2]
            objects.append(base.objects[k // 2])
        else:
            kind = str(rng.choice(TWIN_KINDS, p=TWIN_WEIGHTS))
            objects.append(twin(base.objects[k // 2], kind, image_size, rng))
            images[k] = render(objects[-1], image_size)[0]
    return images, objects


# The facts a patching pair may change, and the question type that asks about each
# (``mirror``: the objects' places mirrored left to right, asked left or right; ``flip``:
# top to bottom, asked top or bottom; ``count``: one object left out, asked how many).
PAIR_KINDS: dict[str, str] = {
    "color": "color", "shape": "shape", "mirror": "left_right", "flip": "top_bottom",
    "count": "count",
}  # fmt: skip


def twin_pair(kind: str, image_size: int = 64, seed: int = 0, max_objects: int = 3):
    """A clean / corrupted pair for activation patching: a stimulus and its twin in which
    one object's ``kind`` (``color`` or ``shape``) is another, whose objects' places are
    mirrored (``mirror``: asked whether an object is on the left or right; ``flip``: top
    to bottom, asked top or bottom), or which lacks one object (``count``: asked how
    many), the question worded the same for both, the clean answer and the corrupted one.
    Seeded; the first image of seeds ``seed``, ``seed + 1``, ... where such a question
    can be asked and its answer differs."""
    from interp.experiments.patching import PatchPair
    from interp.stimuli import COLORS
    from interp.stimuli.questions import ask

    if kind not in PAIR_KINDS:
        raise ConfigError(f"kind must be one of {tuple(PAIR_KINDS)}, got {kind!r}")
    names = list(COLORS) if kind == "color" else list(SHAPES)  # (unused by mirror)
    for attempt in range(1000):
        spec = StimulusSpec(
            n_images=1, image_size=image_size, seed=seed + attempt, max_objects=max_objects
        )
        objects = generate(spec).objects[0]
        rng = np.random.default_rng([seed, attempt])
        target = int(rng.integers(len(objects)))
        if kind == "mirror":
            changed = twin(objects, "mirror", image_size, rng)
        elif kind == "flip":
            changed = [{**obj, "y": image_size - obj["y"]} for obj in objects]
        elif kind == "count":
            if len(objects) < 2:
                continue
            changed = [dict(obj) for k, obj in enumerate(objects) if k != target]
        else:
            changed = [dict(obj) for obj in objects]
            others = [v for v in range(len(names)) if v != int(objects[target][kind])]
            changed[target][kind] = int(rng.choice(others))
        clean = ask(objects, target, PAIR_KINDS[kind], image_size)
        corrupt = ask(changed, target, PAIR_KINDS[kind], image_size)
        if clean is None or corrupt is None or clean.question != corrupt.question:
            continue
        if clean.answer == corrupt.answer:
            continue
        return PatchPair(
            clean=render(objects, image_size)[0],
            corrupt=render(changed, image_size)[0],
            question=clean.question,
            answer=clean.answer,
            wrong=corrupt.answer,
            name=f"{kind} twin (seed {seed + attempt})",
        )
    raise ConfigError(f"no {kind} pair found from seed {seed}")
