"""Images whose labels are the columns of a table: the shared part of the label-table and
the Hugging Face ``datasets`` sources.

Every column but the reserved ones (``image``, ``objects``, ``mask``, ``question``,
``answer``, ``question_type``) is an attribute: categorical when its values are strings or
booleans (or it is named in ``categorical``, or has a class order), numeric otherwise.
``objects`` holds, per row, a JSON list (or a list) of ``{"box": [x0, y0, x1, y1],
"<attribute>": value, ...}`` in the image's pixels; ``mask``, an image of object indices
(0 = background, k = object k - 1), which then draws the objects instead of their boxes.
A subclass says how image ``i`` (and its mask) is opened, and how a row is named in
messages.
"""

from __future__ import annotations

import json
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from interp.errors import ConfigError
from interp.names import as_names
from interp.sources.base import ImageSet, Question

__all__ = ["TabularImages", "RESERVED_COLUMNS"]

RESERVED_COLUMNS = ("image", "objects", "mask", "question", "answer", "question_type")


class TabularImages(ImageSet):
    """Images with a table of labels, ``frame`` (one row per image, reserved columns
    included where present). ``name`` names the data in messages; ``orders`` gives the
    order of some attributes' classes (``orders_from`` says where it came from)."""

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        name: str,
        attributes: str | Sequence[str] | None = None,
        categorical: str | Sequence[str] | None = None,
        orders: dict[str, list[str]] | None = None,
        orders_from: str = "",
    ) -> None:
        if len(frame) == 0:
            raise ConfigError(f"{name} has no rows")
        self.frame = frame.reset_index(drop=True)
        self.name = name
        self._orders = orders or {}
        self._orders_from = orders_from
        columns = [c for c in self.frame.columns if c not in RESERVED_COLUMNS]
        self._sizes = np.array([self._size(i) for i in range(len(self.frame))], dtype=np.int64)
        self._sizes = self._sizes.reshape(len(self.frame), 2)  # (n, 2) (height, width)
        self._objects = self._parse_objects()
        # An attribute of the objects with no column of its own labels each image by its
        # first object that has it (as the stimuli's labels are their first object's).
        found = [k for objects in self._objects for obj in objects for k in obj if k != "box"]
        available = [*columns, *dict.fromkeys(k for k in found if k not in columns)]
        chosen = as_names(attributes, "attributes") or available
        unknown = [a for a in chosen if a not in available]
        if unknown:
            raise ConfigError(
                f"attributes {unknown} are not columns of {name} nor attributes of its "
                f"objects; its attributes: {', '.join(map(str, available)) or '(none)'}"
            )
        forced = as_names(categorical, "categorical") or []
        unknown = [c for c in forced if c not in columns]
        if unknown:
            raise ConfigError(
                f"categorical columns {unknown} are not in {name}; its attribute columns: "
                f"{', '.join(map(str, columns))}"
            )
        self._labels, self._classes = self._parse_labels(chosen, forced)
        self._warned_modes: set[str] = set()

    @abstractmethod
    def _open_image(self, i: int) -> Image.Image:
        """Image ``i``, opened (not yet decoded)."""

    @abstractmethod
    def _open_mask(self, i: int) -> Image.Image:
        """The mask of row ``i``, opened."""

    @abstractmethod
    def _has_mask(self, i: int) -> bool:
        """Whether row ``i`` has a mask (which then draws its objects)."""

    @abstractmethod
    def _row(self, i: int) -> str:
        """Row ``i`` as messages name it."""

    def _size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i``, read from its header."""
        try:
            with self._open_image(i) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError) as err:
            raise ConfigError(
                f"{self._row(i)}: not a readable image ({err}); replace it or drop the row"
            ) from err
        return height, width

    def _parse_objects(self) -> list[list[dict[str, Any]]]:
        if "objects" not in self.frame.columns:
            return [[] for _ in range(len(self.frame))]
        parsed = []
        for i, raw in enumerate(self.frame["objects"]):
            if raw is None or (isinstance(raw, float) and np.isnan(raw)):
                parsed.append([])
                continue
            try:
                objects = json.loads(raw) if isinstance(raw, str) else list(raw)
            except (json.JSONDecodeError, TypeError) as err:
                raise ConfigError(
                    f"{self._row(i)}: column 'objects' is not a JSON list ({err}); write "
                    f'[{{"box": [x0, y0, x1, y1], "<attribute>": value}}, ...]'
                ) from err
            height, width = (int(v) for v in self._sizes[i])
            masked = self._has_mask(i)
            for k, obj in enumerate(objects):
                if not isinstance(obj, dict):
                    raise ConfigError(f"{self._row(i)}: object {k} is not a JSON object: {obj!r}")
                box = obj.get("box")
                if box is None and masked:
                    continue  # the mask draws it (an object hidden from view has no box)
                if (
                    not isinstance(box, (list, tuple))
                    or len(box) != 4
                    or not all(isinstance(v, (int, float)) for v in box)
                ):
                    raise ConfigError(
                        f"{self._row(i)}: object {k} needs a 'box' [x0, y0, x1, y1] in the "
                        f"image's pixels (or the row a mask), got {obj!r}"
                    )
                x0, y0, x1, y1 = box
                if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                    raise ConfigError(
                        f"{self._row(i)}: object {k}'s box {list(box)} is not inside the "
                        f"image of {width}x{height} px (width x height: 0 <= x0 < x1 <= "
                        f"{width}, 0 <= y0 < y1 <= {height})"
                    )
            if len(objects) > 127:
                raise ConfigError(f"{self._row(i)}: at most 127 objects per image")
            parsed.append(objects)
        return parsed

    def _parse_labels(
        self, chosen: list[str], forced: list[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
        object_values: dict[str, list] = {}
        for objects in self._objects:
            for obj in objects:
                for key, value in obj.items():
                    if key != "box":
                        object_values.setdefault(key, []).append(value)
        labels, classes = {}, {}
        for name in [*chosen, *[k for k in object_values if k not in chosen]]:
            column = (
                self.frame[name]
                if name in self.frame.columns
                else pd.Series(
                    [
                        next((o[name] for o in objects if name in o), None)
                        for objects in self._objects
                    ]
                )
            )
            in_objects = object_values.get(name, [])
            textual = (
                name in forced
                or name in self._orders
                or pd.api.types.is_object_dtype(column)
                or pd.api.types.is_string_dtype(column)
                or pd.api.types.is_bool_dtype(column)
                or any(isinstance(v, (str, bool)) for v in in_objects)
            )
            if not textual:
                if name in chosen:
                    labels[name] = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
                    infinite = np.flatnonzero(np.isinf(labels[name]))
                    if len(infinite):
                        raise ConfigError(
                            f"{self._row(int(infinite[0]))}: {name!r} is "
                            f"{labels[name][infinite[0]]}; a numeric label must be finite "
                            f"(leave the cell empty where the value is missing)"
                        )
                continue
            column = column.map(lambda v: v.strip() if isinstance(v, str) else v)
            in_objects = [v.strip() if isinstance(v, str) else v for v in in_objects]
            present = column[column.notna()].map(str).tolist() + [str(v) for v in in_objects]
            _say_case_twins(name, set(present))
            classes[name] = self._class_order(name, set(present))
            if name in chosen:
                index = {c: k for k, c in enumerate(classes[name])}
                labels[name] = np.array(
                    [index[str(v)] if pd.notna(v) else -1 for v in column], dtype=np.int64
                )
        return labels, classes

    def _class_order(self, name: str, present: set[str]) -> tuple[str, ...]:
        """The classes of ``name``: in the order ``orders`` gives (where it names the
        attribute), else sorted."""
        order = self._orders.get(name)
        if order is None:
            return tuple(sorted(present))
        missing = sorted(present - set(order))
        if missing:
            raise ConfigError(
                f"the class order of {name!r} ({self._orders_from}) lacks {missing}, which "
                f"the data hold; add them to the list"
            )
        return tuple(order)

    # ----- ImageSet -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame)

    @property
    def sizes(self) -> np.ndarray:
        return self._sizes

    @property
    def labels(self) -> dict[str, np.ndarray]:
        return self._labels

    @property
    def label_classes(self) -> dict[str, tuple[str, ...]]:
        return dict(self._classes)

    def object_labels(self) -> dict[str, np.ndarray]:
        most = max((len(objects) for objects in self._objects), default=0)
        out = {}
        for name, classes in self._classes.items():
            if not any(name in obj for objects in self._objects for obj in objects):
                continue
            index = {c: k for k, c in enumerate(classes)}
            values = np.full((len(self), max(most, 1)), -1, dtype=np.int64)
            for i, objects in enumerate(self._objects):
                for k, obj in enumerate(objects):
                    if name in obj:
                        values[i, k] = index[str(obj[name])]
            out[name] = values
        return out

    def questions(self) -> list[Question]:
        """The rows' ``question`` / ``answer`` (rows without both are skipped); the type is
        the ``question_type`` column where there is one (else ``"question"``), and each
        type's options are the distinct answers of its rows."""
        frame = self.frame
        if not {"question", "answer"} <= set(frame.columns):
            return []
        kinds = (
            frame["question_type"].astype(str)
            if "question_type" in frame.columns
            else pd.Series("question", index=frame.index)
        )

        def given(column: pd.Series) -> np.ndarray:
            return (column.notna() & (column.astype(str).str.strip() != "")).to_numpy()

        has_q, has_a = given(frame["question"]), given(frame["answer"])
        half = np.flatnonzero(has_q != has_a)
        if len(half):
            shown = ", ".join(self._row(int(i)) for i in half[:3])
            warnings.warn(
                f"{len(half)} rows have a question without an answer or an answer without a "
                f"question, and are left out of the answers ({shown}"
                f"{', ...' if len(half) > 3 else ''}); fill in both to score them",
                stacklevel=2,
            )
        rows = [
            (i, str(kind), str(q).strip(), str(a).strip())
            for i, (ok, kind, q, a) in enumerate(
                zip(has_q & has_a, kinds, frame["question"], frame["answer"], strict=True)
            )
            if ok
        ]
        options: dict[str, list[str]] = {}
        for _, kind, _, answer in rows:
            options.setdefault(kind, [])
            if answer not in options[kind]:
                options[kind].append(answer)
        probed = set(self.labels)  # a type named as an attribute column asks about it
        return [
            Question(i, kind, q, a, tuple(options[kind]), kind if kind in probed else None)
            for i, kind, q, a in rows
        ]

    def pixels(self, indices: np.ndarray) -> np.ndarray:
        out = np.zeros((len(indices), *self.canvas, 3), dtype=np.uint8)
        for j, i in enumerate(np.asarray(indices).tolist()):
            height, width = (int(v) for v in self._sizes[i])
            decoded = self._decode(i)
            if decoded.shape[:2] != (height, width):  # the file changed since it was read
                raise ConfigError(
                    f"{self._row(i)}: the image is now {decoded.shape[1]}x{decoded.shape[0]} "
                    f"px, {width}x{height} when the data were opened; open them again"
                )
            out[j, :height, :width] = decoded
        return out

    def _decode(self, i: int) -> np.ndarray:
        try:
            with self._open_image(i) as image:
                image.load()
                if image.mode != "RGB":
                    self._say_converted(image.mode)
                    image = image.convert("RGB")
                return np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise ConfigError(
                f"{self._row(i)}: the image cannot be decoded ({err}); it may be truncated: "
                f"replace it or drop the row, then rerun to resume"
            ) from err

    def _say_converted(self, mode: str) -> None:
        if mode not in self._warned_modes:
            self._warned_modes.add(mode)
            warnings.warn(
                f"images of mode {mode!r} in {self.name} are converted to RGB (said once)",
                stacklevel=4,
            )

    def maps(self, indices: np.ndarray) -> np.ndarray:
        out = np.full((len(indices), *self.canvas), -1, dtype=np.int8)
        for j, i in enumerate(np.asarray(indices).tolist()):
            height, width = (int(v) for v in self._sizes[i])
            if self._has_mask(i):
                out[j, :height, :width] = self._mask(i, (height, width))
                continue
            for k, obj in enumerate(self._objects[i]):
                x0, y0, x1, y1 = (int(round(v)) for v in obj["box"])
                out[j, y0:y1, x0:x1] = k
        return out

    def _mask(self, i: int, size: tuple[int, int]) -> np.ndarray:
        try:
            with self._open_mask(i) as image:
                mask = np.asarray(image)
        except (UnidentifiedImageError, OSError) as err:
            raise ConfigError(f"{self._row(i)}: its mask cannot be read ({err})") from err
        if mask.shape[:2] != size or mask.ndim != 2:
            found = f"{mask.shape[1]}x{mask.shape[0]} px" if mask.ndim >= 2 else str(mask.shape)
            raise ConfigError(
                f"{self._row(i)}: its mask is {found}"
                f"{' with ' + str(mask.shape[2]) + ' channels' if mask.ndim == 3 else ''}, the "
                f"image {size[1]}x{size[0]} px (width x height); a mask is one channel of the "
                f"image's size (0 = background, k = object k)"
            )
        if mask.max(initial=0) > len(self._objects[i]):
            raise ConfigError(
                f"{self._row(i)}: its mask names object {int(mask.max())}, but the row has "
                f"{len(self._objects[i])} objects"
            )
        return mask.astype(np.int16) - 1


def _say_case_twins(name: str, classes: set[str]) -> None:
    """Warn where two classes of ``name`` differ only in case (``Red`` and ``red``):
    they stay two classes, as written."""
    by_fold: dict[str, list[str]] = {}
    for value in sorted(classes):
        by_fold.setdefault(value.casefold(), []).append(value)
    twins = [group for group in by_fold.values() if len(group) > 1]
    if twins:
        shown = "; ".join(" and ".join(repr(v) for v in group) for group in twins[:3])
        warnings.warn(
            f"{name!r}: the classes {shown} differ only in case and stay separate classes; "
            f"write them alike if they are one",
            stacklevel=3,
        )
