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
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from PIL import Image

from interp.errors import ConfigError
from interp.sources.base import SourceOpener, register_source
from interp.sources.tabular import TabularImages

__all__ = ["LabelTable", "TABLE_NAMES"]

TABLE_NAMES = ("labels.csv", "labels.jsonl", "labels.parquet")


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


class LabelTable(TabularImages):
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
        frame = frame.iloc[:n_images].reset_index(drop=True)
        self.frame = frame  # for messages while the paths are checked
        self.paths = [self._image_path(i, value) for i, value in enumerate(frame["image"])]
        seen: dict[Path, int] = {}
        for i, path in enumerate(self.paths):
            if path in seen:
                raise ConfigError(
                    f"{self._row(i)} names the same image as row {seen[path]}; each image "
                    f"once: drop the duplicate row"
                )
            seen[path] = i
        orders_path = self.root / "classes.json"
        super().__init__(
            frame,
            name=f"the label table {self.table}",
            attributes=attributes,
            categorical=categorical,
            orders=_read_orders(orders_path),
            orders_from=str(orders_path),
        )

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

    def _open_image(self, i: int) -> Image.Image:
        return Image.open(self.paths[i])

    def names(self) -> list[str]:
        return [str(path) for path in self.paths]

    def _open_mask(self, i: int) -> Image.Image:
        return Image.open((self.root / str(self.frame["mask"].iloc[i])).resolve())

    def _has_mask(self, i: int) -> bool:
        if "mask" not in self.frame.columns:
            return False
        value = self.frame["mask"].iloc[i]
        return isinstance(value, str) and bool(value.strip())

    def describe(self) -> dict[str, Any]:
        return {
            "source": "table",
            "path": str(self.table.resolve()),
            "table_sha256": hashlib.sha256(self.table.read_bytes()).hexdigest(),
            "n_images": len(self),
            "attributes": list(self.labels),
            "categorical": sorted(self.label_classes),
        }


def _read_orders(path: Path) -> dict[str, list[str]]:
    """``classes.json``: attribute -> its classes in order (empty where there is none)."""
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
    def open(cls, path: Path, *, image_column: str | None = None, **options: Any) -> LabelTable:
        if image_column not in (None, "image"):
            raise ConfigError(
                f"a label table's images are in its 'image' column; image_column="
                f"{image_column!r} is for Hugging Face datasets"
            )
        return LabelTable(cls._table(path), **options)
