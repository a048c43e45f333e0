"""A Hugging Face ``datasets`` dataset as a data source: a folder written by
``save_to_disk``, an ``imagefolder`` folder (images plus ``metadata.jsonl`` or
``metadata.csv``), or, in Python, a ``datasets.Dataset`` object. No hub access is needed.

``image_column`` names the images (an ``Image`` feature); the other columns are
attributes, as in a label table (:mod:`interp.sources.tabular`): a ``ClassLabel`` column is
categorical with its own class names, in their order; strings and booleans are
categorical; numbers numeric; ``label_columns`` restricts them. ``objects`` (a JSON list,
or a list of ``{"box": [...], ...}``) and ``mask`` (an ``Image`` of object indices) work
as in a label table.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from interp.errors import ConfigError
from interp.sources.base import SourceOpener, register_source
from interp.sources.tabular import TabularImages

__all__ = ["HuggingFaceImages"]

_SAVED = ("dataset_info.json", "state.json")
_DICT = "dataset_dict.json"
_METADATA = ("metadata.jsonl", "metadata.csv")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ConfigError(
            "reading a Hugging Face dataset needs the datasets package: pip install "
            "'vlm-interp[datasets]'"
        ) from err
    return datasets


def _plain(value: Any) -> Any:
    """numpy arrays and scalars (as ``to_pandas`` gives nested values) as Python values."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


class HuggingFaceImages(TabularImages):
    """The images and labels of a ``datasets.Dataset`` (see the module doc).

    ``origin`` is where it was read from (a folder), recorded in the cache."""

    def __init__(
        self,
        dataset: Any,
        *,
        image_column: str = "image",
        label_columns: str | list[str] | None = None,
        categorical: str | list[str] | None = None,
        n_images: int | None = None,
        origin: str | None = None,
    ) -> None:
        datasets = _datasets()
        if isinstance(dataset, datasets.DatasetDict):
            raise ConfigError(
                f"the dataset has the splits {list(dataset)}; pass one split (split=)"
            )
        columns = list(dataset.column_names)
        if image_column not in columns:
            raise ConfigError(
                f"the dataset has no image column {image_column!r} (columns: "
                f"{', '.join(columns)}); name it with image_column=NAME"
            )
        images = [c for c in columns if isinstance(dataset.features[c], datasets.Image)]
        if image_column not in images:
            raise ConfigError(
                f"column {image_column!r} of the dataset holds {dataset.features[image_column]}, "
                f"not images; name the image column with image_column=NAME"
            )
        if n_images is not None:
            dataset = dataset.select(range(min(n_images, len(dataset))))
        self.image_column = image_column
        self.origin = origin
        self._raw = dataset.select_columns([c for c in images if c in (image_column, "mask")])
        for column in images:
            if column in (image_column, "mask"):
                self._raw = self._raw.cast_column(column, datasets.Image(decode=False))
        self.fingerprint = dataset._fingerprint
        other = [c for c in columns if c not in images]
        frame = dataset.select_columns(other).to_pandas() if other else None
        if frame is None:
            import pandas as pd

            frame = pd.DataFrame(index=range(len(dataset)))
        orders = {}
        for column in other:
            feature = dataset.features[column]
            if isinstance(feature, datasets.ClassLabel):
                names = list(feature.names)
                orders[column] = names
                frame[column] = [
                    names[v] if v is not None and v >= 0 else None for v in frame[column]
                ]
            elif column == "objects":
                frame[column] = [
                    v if v is None or isinstance(v, str) else json.dumps(_plain(v))
                    for v in frame[column]
                ]
            elif not isinstance(feature, datasets.Value):
                frame = frame.drop(columns=column)  # lists, structs: not an attribute
        frame["image"] = [
            self._raw_item(i, image_column).get("path") or f"#{i}" for i in range(len(dataset))
        ]
        super().__init__(
            frame,
            name=f"the dataset {origin or self.fingerprint}",
            attributes=label_columns,
            categorical=categorical,
            orders=orders,
            orders_from="the dataset's ClassLabel names",
        )

    def _raw_item(self, i: int, column: str) -> dict:
        return self._raw[i][column] or {}

    def _open(self, item: dict) -> Image.Image:
        if item.get("bytes"):
            return Image.open(io.BytesIO(item["bytes"]))
        return Image.open(item["path"])

    def _open_image(self, i: int) -> Image.Image:
        return self._open(self._raw_item(i, self.image_column))

    def _open_mask(self, i: int) -> Image.Image:
        return self._open(self._raw_item(i, "mask"))

    def _has_mask(self, i: int) -> bool:
        return "mask" in self._raw.column_names and bool(self._raw_item(i, "mask"))

    def _row(self, i: int) -> str:
        return f"row {i} ({self.frame['image'].iloc[i]!r}) of {self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "source": "datasets",
            "path": self.origin,
            "fingerprint": self.fingerprint,
            "image_column": self.image_column,
            "n_images": len(self),
            "attributes": list(self.labels),
            "categorical": sorted(self.label_classes),
        }


@register_source
class HuggingFaceOpener(SourceOpener):
    name: ClassVar[str] = "Hugging Face datasets (save_to_disk, imagefolder)"

    @classmethod
    def recognises(cls, path: Path) -> bool:
        return path.is_dir() and (
            all((path / name).is_file() for name in _SAVED)
            or (path / _DICT).is_file()
            or any((path / name).is_file() for name in _METADATA)
        )

    @classmethod
    def open(
        cls, path: Path, *, split: str = "train", attributes: Any = None, **options: Any
    ) -> HuggingFaceImages:
        datasets = _datasets()
        if any((path / name).is_file() for name in _METADATA):
            dataset = datasets.load_dataset("imagefolder", data_dir=str(path), split=split)
        else:
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise ConfigError(
                        f"{path} holds the splits {list(dataset)}, not {split!r}; pass one (split=)"
                    )
                dataset = dataset[split]
        options.setdefault("label_columns", attributes)
        return HuggingFaceImages(dataset, origin=str(path.resolve()), **options)
