"""A folder of your own images, made up: the worked example of "Probe your own images".

48 images of 48x72, 72x48 and 40x64 px (height x width), a coloured square on grey in
each, with ``labels.csv``: ``tint`` (the square's colour: drawn), ``area`` (its side: a
number) and ``coin`` (a label independent of the pixels), and each square's box as its
object. Probing it should find ``tint`` far above chance and leave ``coin`` at chance::

    python examples/planted_folder.py /tmp/planted
    interp run --data /tmp/planted --out /tmp/planted-out --sites vision.0 lm.3 \
        --selections mean on_object token --conditions baseline --n-splits 3 --n-boot 200
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

PLANTED_SIZES = [(48, 72), (72, 48), (40, 64)]  # (height, width)


def planted_folder(folder: Path, n: int = 48, seed: int = 0) -> Path:
    """Squares on grey in images of 48x72, 72x48 and 40x64 px (height x width):
    ``tint`` (the square's colour) is drawn, ``coin`` is a label independent of the
    pixels, ``area`` a number (the square's side). Squares lie in the image's middle
    square, which a centre-cropping processor keeps."""
    rng = np.random.default_rng(seed)
    tints = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220)}
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        height, width = PLANTED_SIZES[i % len(PLANTED_SIZES)]
        side = min(height, width)
        tint = list(tints)[rng.integers(3)]
        half = int(rng.integers(side // 8, side // 4))
        x, y = (int(v) for v in rng.integers(half, side - half, size=2))
        x, y = x + (width - side) // 2, y + (height - side) // 2
        image = np.full((height, width, 3), 128, np.uint8)
        image[y - half : y + half, x - half : x + half] = tints[tint]
        Image.fromarray(image).save(folder / "img" / f"{i}.png")
        box = [x - half, y - half, x + half, y + half]
        rows.append(
            {
                "image": f"img/{i}.png",
                "tint": tint,
                "coin": ["heads", "tails"][rng.integers(2)],
                "area": float(2 * half),
                "objects": json.dumps([{"box": box, "tint": tint}]),
            }
        )
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/planted_folder.py FOLDER (a new folder)")
    table = planted_folder(Path(sys.argv[1])) / "labels.csv"
    print(f"wrote {table}; probe it with: interp run --data {table.parent} --out OUT")
