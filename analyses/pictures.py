"""Picture grids: originals beside their reconstructions, one column per depth."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from interp.errors import ConfigError

__all__ = ["reconstruction_grid"]


def reconstruction_grid(
    columns: dict[str, np.ndarray], scale: int = 3, label_height: int = 14
) -> Image.Image:
    """One row per image, one column per entry of ``columns`` (``name -> (k, H, W, 3)``
    uint8, e.g. ``"original"`` then each site in depth order), each headed by its name.

    Pixels are enlarged ``scale`` times without smoothing, so patches stay visible.
    """
    if not columns:
        raise ConfigError("no images to put in the grid")
    shapes = {name: images.shape for name, images in columns.items()}
    if len(set(shapes.values())) != 1:
        raise ConfigError(f"every column needs images of one shape, got {shapes}")
    k, height, width, _ = next(iter(columns.values())).shape
    cell_w, cell_h, gap = width * scale, height * scale, 2
    grid = Image.new(
        "RGB",
        (len(columns) * (cell_w + gap), label_height + k * (cell_h + gap)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for col, (name, images) in enumerate(columns.items()):
        x = col * (cell_w + gap)
        draw.text((x + 2, 1), name, fill=(0, 0, 0), font=font)
        for row in range(k):
            tile = Image.fromarray(np.ascontiguousarray(images[row]), "RGB")
            tile = tile.resize((cell_w, cell_h), Image.Resampling.NEAREST)
            grid.paste(tile, (x, label_height + row * (cell_h + gap)))
    return grid
