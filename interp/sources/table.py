"""A folder of images with a label table (``labels.csv``, ``labels.jsonl`` or
``labels.parquet``).

Columns: ``image``, the image's path relative to the table; every other column an
attribute (categorical when its values are strings or booleans, numeric otherwise;
``categorical=`` overrides); optionally ``objects``, a JSON list of ``{"box": [x0, y0,
x1, y1], "<attribute>": value, ...}`` in the image's pixels (half-open boxes, later
objects drawn over earlier ones), and ``mask``, the path of a PNG whose pixel values are
1-based indices into ``objects`` (0 = background), which then gives the object map
instead of the boxes; ``question`` / ``answer`` are kept for the answer scoring, not
probed. An optional ``classes.json`` beside the table gives the order of an attribute's
classes (``{"size": ["small", "medium", "large"]}``; default: sorted). Everything but the
pixels is read and checked when the source is opened; images are decoded a batch at a
time.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from interp.errors import ConfigError
from interp.names import as_names
from interp.sources.base import ImageSet, SourceOpener, register_source

__all__ = ["LabelTable", "TABLE_NAMES"]

TABLE_NAMES = ("labels.csv", "labels.jsonl", "labels.parquet")
_RESERVED = ("image", "objects", "mask", "question", "answer")


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, keep_default_na=True)
        if path.suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
    except ImportError as err:
        raise ConfigError(
            f"reading {path} needs a package that is not installed: {err}; install pyarrow"
        ) from err
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"the label table {path} cannot be read: {first}") from err
    raise ConfigError(f"label tables are {', '.join(TABLE_NAMES)}, got {path.name!r}")


class LabelTable(ImageSet):
    """The images and labels of one label table (see the module doc).

    ``attributes`` restricts the probed columns (default: every attribute column);
    ``categorical`` names numeric-looking columns to treat as classes; ``n_images`` keeps
    the first rows only.
    """

    def __init__(
        self,
        table: str | Path,
        *,
        attributes: str | list[str] | None = None,
        categorical: str | list[str] | None = None,
        n_images: int | None = None,
    ) -> None:
        self.table = Path(table)
        self.root = self.table.parent
        frame = _read_table(self.table)
        if "image" not in frame.columns:
            raise ConfigError(
                f"the label table {self.table} has no 'image' column (columns: "
                f"{', '.join(map(str, frame.columns))}); add one with each image's path "
                f"relative to the table"
            )
        if n_images is not None:
            frame = frame.iloc[:n_images]
        if len(frame) == 0:
            raise ConfigError(f"the label table {self.table} has no rows")
        frame = frame.reset_index(drop=True)
        self.frame = frame
        self.paths = [self._image_path(i, value) for i, value in enumerate(frame["image"])]
        seen: dict[Path, int] = {}
        for i, path in enumerate(self.paths):
            if path in seen:
                raise ConfigError(
                    f"{self._row(i)} names the same image as row {seen[path]}; each image "
                    f"once: drop the duplicate row"
                )
            seen[path] = i
        columns = [c for c in frame.columns if c not in _RESERVED]
        chosen = as_names(attributes, "attributes") or columns
        unknown = [a for a in chosen if a not in columns]
        if unknown:
            raise ConfigError(
                f"attributes {unknown} are not columns of {self.table}; its attribute "
                f"columns: {', '.join(map(str, columns)) or '(none)'}"
            )
        forced = as_names(categorical, "categorical") or []
        unknown = [c for c in forced if c not in columns]
        if unknown:
            raise ConfigError(
                f"categorical columns {unknown} are not in {self.table}; its attribute "
                f"columns: {', '.join(map(str, columns))}"
            )
        self._orders = self._read_orders()
        self._sizes = np.array([self._side(i) for i in range(len(frame))], dtype=np.int64)
        self._objects = self._parse_objects()
        self._labels, self._classes = self._parse_labels(chosen, forced)
        self._warned_modes: set[str] = set()
        self.questions = (
            frame[["question", "answer"]].astype(str).to_dict("records")
            if {"question", "answer"} <= set(frame.columns)
            else []
        )

    def _read_orders(self) -> dict[str, list[str]]:
        path = self.root / "classes.json"
        if not path.is_file():
            return {}
        try:
            orders = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not JSON ({err})") from err
        if not isinstance(orders, dict) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in orders.values()
        ):
            raise ConfigError(
                f"{path} must map each attribute to the list of its class names, e.g. "
                f'{{"size": ["small", "medium", "large"]}}'
            )
        return orders

    # ----- checks on opening --------------------------------------------------------------
    def _row(self, i: int) -> str:
        return f"row {i} ({self.frame['image'].iloc[i]!r}) of {self.table}"

    def _image_path(self, i: int, value: Any) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"row {i} of {self.table} has no image path in column 'image'")
        path = (self.root / value).resolve()
        if not path.is_file():
            raise ConfigError(
                f"{self._row(i)}: no image file at {path}; fix the path (relative to the "
                f"table's folder) or drop the row"
            )
        return path

    def _side(self, i: int) -> int:
        try:
            with Image.open(self.paths[i]) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError) as err:
            raise ConfigError(
                f"{self._row(i)}: {self.paths[i]} is not a readable image ({err}); replace "
                f"it or drop the row"
            ) from err
        if width != height:
            raise ConfigError(
                f"{self._row(i)} is {width}x{height} px; images must be square for now "
                f"(the token geometry of non-square images through each processor is not "
                f"implemented yet): crop or pad it to a square"
            )
        return width

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
            side = int(self._sizes[i])
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
                if not (0 <= x0 < x1 <= side and 0 <= y0 < y1 <= side):
                    raise ConfigError(
                        f"{self._row(i)}: object {k}'s box {list(box)} is not inside the "
                        f"{side}x{side} image (0 <= x0 < x1 <= {side}, the same for y)"
                    )
            if len(objects) > 127:
                raise ConfigError(f"{self._row(i)}: at most 127 objects per image")
            parsed.append(objects)
        return parsed

    def _has_mask(self, i: int) -> bool:
        if "mask" not in self.frame.columns:
            return False
        value = self.frame["mask"].iloc[i]
        return isinstance(value, str) and bool(value.strip())

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
            column = self.frame[name] if name in self.frame.columns else pd.Series(dtype=object)
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
                continue
            present = column[column.notna()].map(str).tolist() + [str(v) for v in in_objects]
            classes[name] = self._class_order(name, set(present))
            if name in chosen:
                index = {c: k for k, c in enumerate(classes[name])}
                labels[name] = np.array(
                    [index[str(v)] if pd.notna(v) else -1 for v in column], dtype=np.int64
                )
        return labels, classes

    def _class_order(self, name: str, present: set[str]) -> tuple[str, ...]:
        """The classes of ``name``: in the order ``classes.json`` beside the table gives
        (where it names the attribute), else sorted."""
        order = self._orders.get(name)
        if order is None:
            return tuple(sorted(present))
        missing = sorted(present - set(order))
        if missing:
            raise ConfigError(
                f"{self.root / 'classes.json'} lists the classes of {name!r} without "
                f"{missing}, which the table holds; add them to the list"
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

    def pixels(self, indices: np.ndarray) -> np.ndarray:
        canvas = self.canvas
        out = np.zeros((len(indices), canvas, canvas, 3), dtype=np.uint8)
        for j, i in enumerate(np.asarray(indices).tolist()):
            side = int(self._sizes[i])
            out[j, :side, :side] = self._decode(i)
        return out

    def _decode(self, i: int) -> np.ndarray:
        try:
            with Image.open(self.paths[i]) as image:
                image.load()
                if image.mode != "RGB":
                    self._say_converted(image.mode)
                    image = image.convert("RGB")
                return np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise ConfigError(
                f"{self._row(i)}: {self.paths[i]} cannot be decoded ({err}); it may be "
                f"truncated: replace it or drop the row, then rerun to resume"
            ) from err

    def _say_converted(self, mode: str) -> None:
        if mode not in self._warned_modes:
            self._warned_modes.add(mode)
            warnings.warn(
                f"images of mode {mode!r} in {self.table} are converted to RGB (said once)",
                stacklevel=4,
            )

    def maps(self, indices: np.ndarray) -> np.ndarray:
        canvas = self.canvas
        out = np.full((len(indices), canvas, canvas), -1, dtype=np.int8)
        for j, i in enumerate(np.asarray(indices).tolist()):
            side = int(self._sizes[i])
            if self._has_mask(i):
                out[j, :side, :side] = self._mask(i, self.frame["mask"].iloc[i], side)
                continue
            for k, obj in enumerate(self._objects[i]):
                x0, y0, x1, y1 = (int(round(v)) for v in obj["box"])
                out[j, y0:y1, x0:x1] = k
        return out

    def _mask(self, i: int, value: str, side: int) -> np.ndarray:
        path = (self.root / value).resolve()
        try:
            with Image.open(path) as image:
                mask = np.asarray(image)
        except (UnidentifiedImageError, OSError) as err:
            raise ConfigError(f"{self._row(i)}: its mask {path} cannot be read ({err})") from err
        if mask.shape[:2] != (side, side) or mask.ndim != 2:
            raise ConfigError(
                f"{self._row(i)}: its mask {path} is {mask.shape}, the image {side}x{side}; a "
                f"mask is one channel of the image's size (0 = background, k = object k)"
            )
        if mask.max(initial=0) > len(self._objects[i]):
            raise ConfigError(
                f"{self._row(i)}: its mask names object {int(mask.max())}, but the row has "
                f"{len(self._objects[i])} objects"
            )
        return mask.astype(np.int16) - 1

    def describe(self) -> dict[str, Any]:
        return {
            "source": "table",
            "path": str(self.table.resolve()),
            "table_sha256": hashlib.sha256(self.table.read_bytes()).hexdigest(),
            "n_images": len(self),
            "attributes": list(self._labels),
            "categorical": sorted(self._classes),
        }


@register_source
class LabelTableOpener(SourceOpener):
    name: ClassVar[str] = "label table (labels.csv / labels.jsonl / labels.parquet)"

    @classmethod
    def _table(cls, path: Path) -> Path | None:
        if path.is_file():
            return path if path.name.endswith(tuple(s[6:] for s in TABLE_NAMES)) else None
        found = [path / name for name in TABLE_NAMES if (path / name).is_file()]
        if len(found) > 1:
            raise ConfigError(
                f"{path} holds {', '.join(p.name for p in found)}; keep one label table, or "
                f"pass the path of the one to use"
            )
        return found[0] if found else None

    @classmethod
    def recognises(cls, path: Path) -> bool:
        return cls._table(path) is not None

    @classmethod
    def open(cls, path: Path, **options: Any) -> LabelTable:
        return LabelTable(cls._table(path), **options)
