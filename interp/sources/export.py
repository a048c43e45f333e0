"""Write any image set as a folder with a label table: PNG images, PNG object masks,
``labels.csv`` and ``classes.json`` (the order of each attribute's classes).

Reading the folder back (:class:`interp.sources.LabelTable`) gives the same pixels,
object maps and labels: the built-in stimuli written out this way are the format's
worked example, and a round trip through it is a test of the table source.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from interp.sources.base import ImageSet

__all__ = ["write_label_folder"]


def write_label_folder(data: ImageSet, folder: str | Path, *, batch: int = 64) -> Path:
    """``folder/images/NNNNN.png``, ``folder/masks/NNNNN.png`` (0 = background, k = object
    k - 1 of the row's ``objects``), ``folder/labels.csv`` and ``folder/classes.json``.
    Returns the table's path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    classes = data.label_classes
    per_object = data.object_labels()
    rows = []
    for start in range(0, len(data), batch):
        indices = np.arange(start, min(len(data), start + batch))
        pixels, maps = data.pixels(indices), data.maps(indices)
        for j, i in enumerate(indices.tolist()):
            height, width = (int(v) for v in data.sizes[i])
            name = f"{i:05d}.png"
            Image.fromarray(pixels[j, :height, :width]).save(folder / "images" / name)
            mask = maps[j, :height, :width].astype(np.int16) + 1  # 0 = background
            Image.fromarray(mask.astype(np.uint8)).save(folder / "masks" / name)
            row = {"image": f"images/{name}", "mask": f"masks/{name}"}
            for attribute, values in data.labels.items():
                value = values[i]
                if attribute in classes:
                    row[attribute] = classes[attribute][value] if value >= 0 else None
                else:
                    row[attribute] = float(value)
            row["objects"] = json.dumps(_objects(mask, per_object, classes, i))
            rows.append(row)
    table = folder / "labels.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    (folder / "classes.json").write_text(json.dumps({k: list(v) for k, v in classes.items()}))
    return table


def _objects(
    mask: np.ndarray, per_object: dict[str, np.ndarray], classes: dict, i: int
) -> list[dict]:
    """Every object of image ``i``: its classes, and its bounding box in the mask where
    any of its pixels shows."""
    known = [int((values[i] >= 0).sum()) for values in per_object.values()]
    objects = []
    for k in range(max([int(mask.max(initial=0)), *known])):
        ys, xs = np.nonzero(mask == k + 1)
        obj: dict = {}
        if len(xs):
            obj["box"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        for attribute, values in per_object.items():
            if values[i, k] >= 0:
                obj[attribute] = classes[attribute][values[i, k]]
        objects.append(obj)
    return objects
