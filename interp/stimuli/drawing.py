"""How the stimuli are drawn: the spec, the complexity dial, the objects and the images."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from einops import rearrange

from interp.errors import ConfigError
from interp.sources.base import ImageSet, Question
from interp.stimuli.questions import ANSWERS, PROBED_AS, questions_for
from interp.stimuli.vocabulary import (
    CATEGORICAL_ATTRIBUTES,
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

MAX_OBJECTS = len(COUNT_NAMES)
_MAX_PLACEMENT_TRIES = 200
_DEFAULT_SIZE = 64


@dataclass(frozen=True)
class Complexity:
    """One level of the complexity dial. Sizes are fractions of the image side, grey
    levels 0..255 subtracted from the background."""

    objects: tuple[int, int]  # fewest and most objects drawn
    size_weights: tuple[float, ...] | None  # chance of each SIZES bin (None: uniform)
    noise: int  # per-pixel grey noise amplitude of the background (0: plain)
    stripes: int  # grey level of diagonal stripes on the background (0: none)
    clutter: int  # grey distractor strokes and dots under the objects
    occlusion: float  # largest share of an object's pixels later objects may cover
    words: str  # what the level draws, for tables and the README


COMPLEXITY_LEVELS: dict[int, Complexity] = {
    1: Complexity((1, 1), None, 0, 0, 0, 0.0, "one object, plain background"),
    2: Complexity((1, 4), None, 0, 0, 0, 0.0, "1-4 objects, plain background (the default)"),
    3: Complexity((2, 6), None, 40, 0, 3, 0.0, "2-6 objects, faint noise, 3 distractors"),
    4: Complexity(
        (3, 8),
        (0.45, 0.35, 0.2),
        50,
        40,
        6,
        0.25,
        "3-8 smaller objects, striped noisy background, 6 distractors, occlusion <= 25%",
    ),
    5: Complexity(
        (5, 8),
        (0.6, 0.3, 0.1),
        110,
        0,
        10,
        0.4,
        "5-8 mostly small objects, strong noise, 10 distractors, occlusion <= 40%",
    ),
}


@dataclass(frozen=True)
class StimulusSpec:
    """What to draw. Validated on construction.

    ``image_size`` is the side of every image; with ``image_sizes`` (sides to mix, image
    ``i`` gets ``image_sizes[i % len(image_sizes)]``) it becomes the padded canvas side,
    ``max(image_sizes)``.
    """

    n_images: int = 256
    image_size: int = _DEFAULT_SIZE
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 4
    background: tuple[int, int, int] = (255, 255, 255)
    image_sizes: tuple[int, ...] = ()
    complexity: int | None = None

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise ConfigError(f"n_images must be >= 1, got {self.n_images}")
        if self.complexity is not None:
            self._set_level()
        object.__setattr__(self, "image_sizes", tuple(int(s) for s in self.image_sizes))
        if self.image_sizes:
            canvas = max(self.image_sizes)
            if self.image_size not in (canvas, _DEFAULT_SIZE):
                raise ConfigError(
                    f"with image_sizes={list(self.image_sizes)} the canvas side is their "
                    f"largest, {canvas} px, not image_size={self.image_size}; leave "
                    f"image_size out"
                )
            object.__setattr__(self, "image_size", canvas)
        if min(self.sizes) < 16:
            name = "image_sizes" if self.image_sizes else "image_size"
            raise ConfigError(
                f"{name} must be >= 16 px so that shapes are recognisable, got {min(self.sizes)}"
            )
        if not 1 <= self.min_objects <= self.max_objects <= len(COUNT_NAMES):
            raise ConfigError(
                f"need 1 <= min_objects <= max_objects <= {len(COUNT_NAMES)}, "
                f"got min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ConfigError(f"background must be an RGB triple in 0..255, got {self.background}")

    def _set_level(self) -> None:
        """Take the object counts from the complexity level (the defaults or the level's
        own counts may be given, as ``to_dict`` writes them; others conflict)."""
        if self.complexity not in COMPLEXITY_LEVELS:
            raise ConfigError(
                f"complexity must be one of {list(COMPLEXITY_LEVELS)}, got {self.complexity!r}"
            )
        counts = COMPLEXITY_LEVELS[self.complexity].objects
        if (self.min_objects, self.max_objects) not in ((1, 4), counts):
            raise ConfigError(
                f"complexity {self.complexity} draws {counts[0]}-{counts[1]} objects, not "
                f"min_objects={self.min_objects}, max_objects={self.max_objects}; leave "
                f"min_objects and max_objects out"
            )
        object.__setattr__(self, "min_objects", counts[0])
        object.__setattr__(self, "max_objects", counts[1])

    @property
    def level(self) -> Complexity:
        """The complexity level drawn (no complexity: plain background, these counts)."""
        if self.complexity is None:
            return Complexity((self.min_objects, self.max_objects), None, 0, 0, 0, 0.0, "")
        return COMPLEXITY_LEVELS[self.complexity]

    @property
    def sizes(self) -> tuple[int, ...]:
        """The distinct image sides of the set, in the order images cycle through them."""
        return self.image_sizes or (self.image_size,)

    def size_of(self, index: int) -> int:
        """Side in px of image ``index``."""
        return self.sizes[index % len(self.sizes)]

    def to_dict(self) -> dict:
        out = asdict(self)
        if not self.image_sizes:  # a single-size spec reads as it did before sizes mixed
            del out["image_sizes"]
        if self.complexity is None:  # and one without the dial as it did before the dial
            del out["complexity"]
        return out


@dataclass
class Stimuli(ImageSet):
    """A generated set: pixels, labels and object maps, all indexed by image (a data
    source, :class:`interp.sources.ImageSet`, held in memory)."""

    spec: StimulusSpec
    images: np.ndarray  # (n, H, W, 3) uint8 (mixed sizes: padded to the largest)
    object_map: np.ndarray  # (n, H, W) int8: object index covering the pixel, -1 = background
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # attribute -> (n,)
    # Per image, every object: {"shape", "color", "size"} (class indices) and {"x", "y"} (px).
    objects: list[list[dict[str, float]]] = field(default_factory=list)

    @property
    def sizes(self) -> np.ndarray:
        """``(n, 2)`` int64 (height, width) in px of each (square) image: the top-left
        square of its array."""
        cycle = np.asarray(self.spec.sizes, dtype=np.int64)
        sides = cycle[np.arange(len(self)) % len(cycle)]
        return np.stack([sides, sides], axis=1)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` without its padding, ``(side, side, 3)`` uint8."""
        side = self.spec.size_of(index)
        return self.images[index, :side, :side]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def distinct_sizes(self) -> tuple[tuple[int, int], ...]:
        return tuple((side, side) for side in self.spec.sizes)

    @property
    def canvas(self) -> tuple[int, int]:
        return self.spec.image_size, self.spec.image_size

    def pixels(self, indices: np.ndarray) -> np.ndarray:
        return self.images[indices]

    def maps(self, indices: np.ndarray) -> np.ndarray:
        return self.object_map[indices]

    def describe(self) -> dict:
        return {"source": "stimuli", "spec": self.spec.to_dict()}

    def questions(self) -> list[Question]:
        """One question of each type the built-in model was trained on per image where one
        can be asked (about a random object; seeded by the set's seed)."""
        qas = questions_for(self, np.random.default_rng(self.spec.seed))
        options = {**ANSWERS, "count": COUNT_NAMES[: self.spec.max_objects]}  # these images'
        return [
            Question(
                qa.image, qa.kind, qa.question, qa.answer, options[qa.kind], PROBED_AS[qa.kind]
            )
            for qa in qas
        ]

    @property
    def label_classes(self) -> dict[str, tuple[str, ...]]:
        return dict(CATEGORICAL_ATTRIBUTES)

    def object_labels(self) -> dict[str, np.ndarray]:
        """Every object's class per attribute of ``OBJECT_ATTRIBUTES``:
        ``(n, spec.max_objects)`` int64, object ``k`` in column ``k`` (as in
        ``object_map``), -1 where an image has fewer objects."""
        width = self.spec.max_objects
        out = {a: np.full((len(self), width), -1, dtype=np.int64) for a in OBJECT_ATTRIBUTES}
        for i, objs in enumerate(self.objects):
            for k, obj in enumerate(objs):
                for attribute in OBJECT_ATTRIBUTES:
                    value = (
                        cell_of(obj, self.spec.size_of(i))
                        if attribute == "cell"
                        else obj[attribute]
                    )
                    out[attribute][i, k] = int(value)
        return out


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` with radius ``r`` given pixel offsets from its centre."""
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        half = r * 0.85
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # upward-pointing, apex at -r, base at +0.8r
        base = 0.8 * r
        inside_y = (dy >= -r) & (dy <= base)
        half_width = (dy + r) / (base + r) * r
        return inside_y & (np.abs(dx) <= half_width)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "cross":
        arm = r * 0.35
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ConfigError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _sample_objects(spec: StimulusSpec, index: int) -> list[dict[str, float]]:
    """The objects of image ``index``: class indices and centre (px)."""
    rng = np.random.default_rng([spec.seed, index])
    size = spec.size_of(index)
    level = spec.level
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    objects: list[dict[str, float]] = []
    masks: list[np.ndarray] = []  # (H, W) bool per object, where occlusion is allowed
    for _ in range(count):
        shape_i = int(rng.integers(len(SHAPES)))
        color_i = int(rng.integers(len(COLORS)))
        if level.size_weights is None:
            size_i = int(rng.integers(len(SIZES)))
        else:
            size_i = int(rng.choice(len(SIZES), p=level.size_weights))
        r = list(SIZES.values())[size_i] * size
        obj = {"shape": shape_i, "color": color_i, "size": size_i, "x": 0.0, "y": 0.0}
        for _ in range(_MAX_PLACEMENT_TRIES):
            x, y = rng.uniform(r + 1, size - r - 1, size=2)
            obj["x"], obj["y"] = float(x), float(y)
            if level.occlusion == 0:
                if all(
                    (x - o["x"]) ** 2 + (y - o["y"]) ** 2 > (r + _radius(o, size) + 2) ** 2
                    for o in objects
                ):
                    break
            elif _occludes_within(obj, objects, masks, size, level.occlusion):
                break
        else:  # no room left: draw fewer objects rather than ones that break the rules
            break
        objects.append(obj)
        if level.occlusion:
            masks.append(_object_mask(obj, size))
    return objects


def _object_mask(obj: dict[str, float], image_size: int) -> np.ndarray:
    """``(H, W)`` bool: the pixels ``obj`` covers when drawn alone."""
    centre = np.arange(image_size) + 0.5  # pixel centres
    dy, dx = np.meshgrid(centre - obj["y"], centre - obj["x"], indexing="ij")
    return _shape_mask(SHAPES[int(obj["shape"])], dx, dy, _radius(obj, image_size))


def _occludes_within(
    new: dict[str, float],
    objects: list[dict[str, float]],
    masks: list[np.ndarray],
    image_size: int,
    most: float,
) -> bool:
    """Whether ``new``, drawn over ``objects``, leaves each of them at least ``1 - most``
    of its own pixels visible, its centre pixel among them, and touches none of its own
    colour (two would read as one)."""
    mask = _object_mask(new, image_size)
    for obj, own in zip(objects, masks, strict=True):
        if (own & mask).any() and int(obj["color"]) == int(new["color"]):
            return False
        if mask[int(obj["y"]), int(obj["x"])]:
            return False
    # Each earlier object: pixels hidden by every later one, this one included.
    for k, own in enumerate(masks):
        hidden = own & (mask | np.logical_or.reduce(masks[k + 1 :], initial=False))
        if hidden.sum() > most * own.sum():
            return False
    return True


def _radius(obj: dict[str, float], image_size: int) -> float:
    return list(SIZES.values())[int(obj["size"])] * image_size


def render(
    objects: list[dict[str, float]],
    image_size: int = 64,
    background: tuple[int, int, int] | np.ndarray = (255, 255, 255),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``objects`` (as in ``Stimuli.objects``) -> ``(H, W, 3)`` uint8 image and
    ``(H, W)`` int8 object map (-1 = background). Later objects are drawn over earlier ones.
    ``background`` is an RGB colour or a whole ``(H, W, 3)`` uint8 background picture.
    """
    image = np.empty((image_size, image_size, 3), dtype=np.uint8)
    image[...] = np.asarray(background, dtype=np.uint8)
    object_map = np.full((image_size, image_size), -1, dtype=np.int8)
    centre = np.arange(image_size) + 0.5  # pixel centres
    dy_grid, dx_grid = np.meshgrid(centre, centre, indexing="ij")
    for k, obj in enumerate(objects):
        r = _radius(obj, image_size)
        mask = _shape_mask(SHAPES[int(obj["shape"])], dx_grid - obj["x"], dy_grid - obj["y"], r)
        image[mask] = COLORS[list(COLORS)[int(obj["color"])]]
        object_map[mask] = k
    return image, object_map


def _background(spec: StimulusSpec, index: int) -> np.ndarray:
    """``(side, side, 3)`` uint8: the background of image ``index`` at its complexity:
    the plain colour darkened by grey noise and diagonal stripes, with grey distractor
    strokes and dots; every change is the same on all three channels (grey)."""
    level, side = spec.level, spec.size_of(index)
    rng = np.random.default_rng([spec.seed, index, 1])  # apart from the objects' stream
    shade = np.zeros((side, side), dtype=np.float64)  # (H, W) grey subtracted
    if level.noise:
        shade += rng.uniform(0, level.noise, size=(side, side))
    if level.stripes:
        period = max(4, side // 8)
        rows, cols = np.indices((side, side))
        shade += level.stripes * (((rows + cols) // (period // 2)) % 2)
    grey = np.clip(
        np.asarray(spec.background, dtype=np.float64)[None, None] - shade[..., None], 0, 255
    )
    image = grey.astype(np.uint8)  # (H, W, 3)
    for _ in range(level.clutter):
        tone = int(rng.integers(60, 180))
        if rng.random() < 0.5:  # a 1-px stroke
            (x0, y0), (x1, y1) = rng.uniform(0, side, size=(2, 2))
            steps = np.linspace(0, 1, 2 * side)
            xs = np.clip((x0 + (x1 - x0) * steps).astype(int), 0, side - 1)
            ys = np.clip((y0 + (y1 - y0) * steps).astype(int), 0, side - 1)
            image[ys, xs] = tone
        else:  # a small dot
            cx, cy = rng.uniform(0, side, size=2)
            rows, cols = np.indices((side, side))
            radius = max(1.0, 0.025 * side)
            image[(rows + 0.5 - cy) ** 2 + (cols + 0.5 - cx) ** 2 <= radius**2] = tone
    return image


def generate(spec: StimulusSpec) -> Stimuli:
    """Draw ``spec.n_images`` images. Same spec -> byte-identical images and labels."""
    canvas = spec.image_size
    images = np.empty((spec.n_images, canvas, canvas, 3), dtype=np.uint8)
    images[...] = np.asarray(spec.background, dtype=np.uint8)  # the padding of smaller images
    object_map = np.full((spec.n_images, canvas, canvas), -1, dtype=np.int8)
    objects: list[list[dict[str, float]]] = []
    for i in range(spec.n_images):
        drawn = _sample_objects(spec, i)
        side = spec.size_of(i)
        background = spec.background if spec.complexity is None else _background(spec, i)
        images[i, :side, :side], object_map[i, :side, :side] = render(drawn, side, background)
        objects.append(drawn)
    rows = [
        {
            **objs[0],
            "cell": cell_of(objs[0], spec.size_of(i)),
            "count": len(objs) - 1,  # class index: "1" is index 0
        }
        for i, objs in enumerate(objects)
    ]
    labels = {
        name: np.array([r[name] for r in rows], dtype=np.int64) for name in CATEGORICAL_ATTRIBUTES
    }
    labels["x"] = np.array([r["x"] for r in rows], dtype=np.float32)
    labels["y"] = np.array([r["y"] for r in rows], dtype=np.float32)
    return Stimuli(spec=spec, images=images, object_map=object_map, labels=labels, objects=objects)


def cell_of(obj: dict[str, float], image_size: int) -> int:
    """Index in ``CELL_NAMES`` of the 3x3 cell holding an object's centre."""
    third = image_size / 3
    return int(min(obj["y"] // third, 2) * 3 + min(obj["x"] // third, 2))


def patch_label_map(object_map: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Which object covers each cell of a ``grid = (rows, cols)`` patch grid.

    ``object_map`` is ``(n, H, W)`` (or ``(H, W)``) with -1 for background. A cell is
    labelled with the object covering the most of its pixels, or -1 if no object touches
    it. H and W must be multiples of the grid so that cells are whole pixel blocks.
    Returns ``(n, rows, cols)`` int8 (or ``(rows, cols)``).
    """
    single = object_map.ndim == 2
    maps = object_map[None] if single else object_map  # (n, H, W)
    n, height, width = maps.shape
    rows, cols = grid
    if height % rows or width % cols:
        raise ConfigError(
            f"image of {height}x{width} px does not tile a {rows}x{cols} patch grid; "
            f"use an image size that is a multiple of {rows}"
        )
    # (n, rows, cols, pixels per cell)
    blocks = rearrange(maps, "n (r h) (c w) -> n r c (h w)", r=rows, c=cols)
    n_objects = int(maps.max()) + 1
    out = np.full((n, rows, cols), -1, dtype=np.int8)
    if n_objects > 0:
        counts = np.stack([(blocks == k).sum(-1) for k in range(n_objects)], axis=-1)
        best = counts.argmax(-1)
        out = np.where(counts.max(-1) > 0, best, -1).astype(np.int8)
    return out[0] if single else out
