"""The stimuli's vocabulary: shapes, colours, size bins, cells, counts, and the
categorical attributes with their class names (light: the drawing and the questions
both read it)."""

from __future__ import annotations

__all__ = [
    "CATEGORICAL_ATTRIBUTES",
    "CELL_NAMES",
    "COLORS",
    "COUNT_NAMES",
    "OBJECT_ATTRIBUTES",
    "SHAPES",
    "SIZES",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
}
# Object radius as a fraction of the image side, one per size bin.
SIZES: dict[str, float] = {"small": 0.08, "medium": 0.12, "large": 0.17}
CELL_NAMES: tuple[str, ...] = tuple(
    f"{row}-{col}" for row in ("top", "middle", "bottom") for col in ("left", "center", "right")
)
COUNT_NAMES: tuple[str, ...] = ("1", "2", "3", "4", "5", "6", "7", "8")

# Categorical attributes and their class names, in label-index order.
CATEGORICAL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "cell": CELL_NAMES,
    "count": COUNT_NAMES,
}
# Attributes every object has (the rest, ``count``, belong to the whole image).
OBJECT_ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size", "cell")
