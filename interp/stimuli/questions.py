"""The questions asked about the stimuli, with their answers: captions (the organism's
training stage 1) and VQA (stage 2, its evaluation, and every answer study on them).

Every question refers to one object by a description that fits no other object in the
image, so each has exactly one right one-word answer. Position questions are asked only
about objects at least ``POSITION_MARGIN`` of the image side away from the midline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from interp.stimuli.vocabulary import COLORS, COUNT_NAMES, SHAPES, SIZES

if TYPE_CHECKING:  # the drawing imports these questions; only the type is read here
    from interp.stimuli.drawing import Stimuli

__all__ = [
    "QUESTION_TYPES",
    "ANSWERS",
    "PROBED_AS",
    "POSITION_MARGIN",
    "QA",
    "caption",
    "ask",
    "questions_for",
]

QUESTION_TYPES: tuple[str, ...] = (
    "color",
    "shape",
    "size",
    "count",
    "left_right",
    "top_bottom",
)
ANSWERS: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "count": COUNT_NAMES,
    "left_right": ("left", "right"),
    "top_bottom": ("top", "bottom"),
}
# The stimulus label a probe reads for the fact each question type asks about.
PROBED_AS: dict[str, str] = {
    "color": "color",
    "shape": "shape",
    "size": "size",
    "count": "count",
    "left_right": "x",
    "top_bottom": "y",
}
POSITION_MARGIN = 1 / 16  # of the image side: 4 px at 64 px

# Descriptions tried in order; the first that singles the object out is used.
_REFERENCES: dict[str, tuple[tuple[str, ...], ...]] = {
    "color": (("shape",), ("size", "shape"), ("size",)),
    "shape": (("color",), ("size", "color"), ("size",)),
    "size": (("color", "shape"), ("shape",), ("color",)),
    "left_right": (("color", "shape"), ("shape",), ("color",), ("size", "color", "shape")),
    "top_bottom": (("color", "shape"), ("shape",), ("color",), ("size", "color", "shape")),
}
_TEMPLATES = {
    "color": "what color is the {ref} ?",
    "shape": "what shape is the {ref} ?",
    "size": "what size is the {ref} ?",
    "count": "how many objects are there ?",
    "left_right": "is the {ref} on the left or right ?",
    "top_bottom": "is the {ref} at the top or bottom ?",
}


@dataclass(frozen=True)
class QA:
    image: int  # index into the stimuli
    kind: str  # one of QUESTION_TYPES
    question: str
    answer: str


def _words(obj: dict[str, float], fields: tuple[str, ...]) -> str:
    names = {
        "color": list(COLORS)[int(obj["color"])],
        "shape": SHAPES[int(obj["shape"])],
        "size": list(SIZES)[int(obj["size"])],
    }
    words = [names[f] for f in fields]
    return " ".join(words) if "shape" in fields else " ".join([*words, "object"])


def _reference(objects: list[dict[str, float]], target: int, kind: str) -> str | None:
    for fields in _REFERENCES[kind]:
        matches = [
            i
            for i, obj in enumerate(objects)
            if all(int(obj[f]) == int(objects[target][f]) for f in fields)
        ]
        if matches == [target]:
            return _words(objects[target], fields)
    return None


def ask(objects: list[dict[str, float]], target: int, kind: str, image_size: int) -> QA | None:
    """The question of ``kind`` about object ``target`` (None if it cannot be asked)."""
    if kind == "count":
        return QA(-1, kind, _TEMPLATES[kind], COUNT_NAMES[len(objects) - 1])
    obj = objects[target]
    half, margin = image_size / 2, POSITION_MARGIN * image_size
    if kind == "left_right" and abs(obj["x"] - half) < margin:
        return None
    if kind == "top_bottom" and abs(obj["y"] - half) < margin:
        return None
    ref = _reference(objects, target, kind)
    if ref is None:
        return None
    answer = {
        "color": lambda: list(COLORS)[int(obj["color"])],
        "shape": lambda: SHAPES[int(obj["shape"])],
        "size": lambda: list(SIZES)[int(obj["size"])],
        "left_right": lambda: "left" if obj["x"] < half else "right",
        "top_bottom": lambda: "top" if obj["y"] < half else "bottom",
    }[kind]()
    return QA(-1, kind, _TEMPLATES[kind].format(ref=ref), answer)


def questions_for(
    stimuli: Stimuli, rng: np.random.Generator, kinds: tuple[str, ...] = QUESTION_TYPES
) -> list[QA]:
    """One question of each kind per image where one can be asked, about a random object."""
    out = []
    size = stimuli.spec.image_size
    for i, objects in enumerate(stimuli.objects):
        for kind in kinds:
            for target in rng.permutation(len(objects)):
                qa = ask(objects, int(target), kind, size)
                if qa is not None:
                    out.append(QA(i, qa.kind, qa.question, qa.answer))
                    break
    return out


def caption(objects: list[dict[str, float]], image_size: int) -> str:
    """A short caption naming the count and every object, left to right."""
    half = image_size / 2
    parts = [COUNT_NAMES[len(objects) - 1], "objects", ":"]
    for obj in sorted(objects, key=lambda o: o["x"]):
        parts += [
            list(SIZES)[int(obj["size"])],
            list(COLORS)[int(obj["color"])],
            SHAPES[int(obj["shape"])],
            "top" if obj["y"] < half else "bottom",
            "left" if obj["x"] < half else "right",
            ",",
        ]
    return " ".join(parts[:-1])
