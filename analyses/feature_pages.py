"""Looking at sparse features: each feature's top-activating patches as image crops with
the patch outlined, its activation histogram, its best attributes and (LM sites) its
words; a grid of many features (PNG, or shown inline in a notebook) and one
self-contained HTML page of them all (:mod:`analyses.pages`).

The patches come from the images the cache stores (``--store-pixels``; the built-in
stimuli store them by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from PIL import Image, ImageDraw, ImageFont

from analyses.pages import definitions, page, picture, section
from analyses.theme import apply_theme
from caches.reader import CacheReader
from interp.errors import ConfigError
from interp.models.sae import SparseAutoencoder
from probes.sae_training import encoded_blocks

__all__ = ["FeatureView", "feature_grid", "feature_histogram", "feature_views", "feature_page"]


@dataclass
class FeatureView:
    """One feature: its ``top`` tokens ``(image, token, activation)``, most active first,
    their crops, and every positive activation over the images read (for the histogram)."""

    feature: int
    top: list[tuple[int, int, float]]
    crops: list[Image.Image]
    activations: np.ndarray


def _crop(
    reader: CacheReader, site: str, image: int, token: int, context: int, scale: int
) -> Image.Image:
    """The stored image around one token's box (``context`` box sizes each side), the
    box outlined, enlarged ``scale`` times without smoothing."""
    pixels = np.asarray(reader.images[image])  # (H, W, 3) uint8
    height, width = map(int, reader.image_sizes[image])
    pixels = pixels[:height, :width]
    y0, x0, y1, x1 = (float(v) for v in reader.layout(site, image).boxes[token])
    side_y, side_x = max(y1 - y0, 1.0), max(x1 - x0, 1.0)
    top, left = int(max(0, y0 - context * side_y)), int(max(0, x0 - context * side_x))
    bottom = int(min(height, y1 + context * side_y))
    right = int(min(width, x1 + context * side_x))
    tile = Image.fromarray(np.ascontiguousarray(pixels[top:bottom, left:right]), "RGB")
    tile = tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)
    box = [(x0 - left) * scale, (y0 - top) * scale, (x1 - left) * scale - 1, (y1 - top) * scale - 1]
    ImageDraw.Draw(tile).rectangle(box, outline=(255, 0, 255), width=2)
    return tile


def feature_views(
    sae: SparseAutoencoder,
    reader: CacheReader,
    site: str,
    features: Sequence[int],
    *,
    n_top: int = 8,
    condition: str = "baseline",
    images: range | None = None,
    context: int = 2,
    scale: int = 4,
) -> list[FeatureView]:
    """The top ``n_top`` tokens of each of ``features`` over ``images`` (default every
    written image), read in blocks, with their crops."""
    if not reader.has_pixels:
        raise ConfigError(
            f"{reader.path} stores no images to crop the patches from; extract with "
            f"store_pixels=True (--store-pixels)"
        )
    unknown = [f for f in features if not 0 <= f < sae.d_sae]
    if unknown:
        raise ConfigError(f"features {unknown} are not among the SAE's {sae.d_sae}")
    images = images or range(reader.n_written)
    chosen = torch.as_tensor(list(features), dtype=torch.long)
    offsets = reader.offsets(site)
    encoded = encoded_blocks(sae, reader, site, condition, images)
    acts = np.concatenate([f[:, chosen].numpy() for _, f in encoded])  # (tokens, features)
    first = int(offsets[images.start])
    token_rows = np.arange(first, first + len(acts))
    image_of = np.searchsorted(offsets, token_rows, side="right") - 1
    views = []
    for k, feature in enumerate(features):
        column = acts[:, k]
        order = np.argsort(-column, kind="stable")[:n_top]
        order = order[column[order] > 0]
        top = [
            (int(image_of[r]), int(token_rows[r] - offsets[image_of[r]]), float(column[r]))
            for r in order
        ]
        crops = [_crop(reader, site, i, t, context, scale) for i, t, _ in top]
        views.append(FeatureView(int(feature), top, crops, column[column > 0]))
    return views


def feature_grid(views: Sequence[FeatureView], labels: dict[int, str] | None = None) -> Image.Image:
    """One row per feature: its label, then its top crops, most active first."""
    if not views:
        raise ConfigError("no features to show")
    labels = labels or {}
    font = ImageFont.load_default()
    cell = max((c.width for v in views for c in v.crops), default=32)
    height = max((c.height for v in views for c in v.crops), default=32)
    label_width, gap = 150, 4
    columns = max(len(v.crops) for v in views)
    grid = Image.new(
        "RGB",
        (label_width + columns * (cell + gap), len(views) * (height + gap)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(grid)
    for row, view in enumerate(views):
        y = row * (height + gap)
        text = f"#{view.feature}\n{labels.get(view.feature, '')}"
        draw.multiline_text((2, y + 2), text, fill=(0, 0, 0), font=font)
        for col, crop in enumerate(view.crops):
            grid.paste(crop, (label_width + col * (cell + gap), y))
    return grid


def feature_histogram(view: FeatureView) -> go.Figure:
    """The feature's positive activations over the images read."""
    fig = go.Figure(go.Histogram(x=view.activations, nbinsx=30, marker_color="#0072B2"))
    fig.update_layout(
        title=f"feature {view.feature}: {len(view.activations)} tokens active",
        xaxis_title="activation",
        yaxis_title="tokens",
    )
    return apply_theme(fig)


def feature_page(
    views: Sequence[FeatureView],
    *,
    title: str,
    about: dict[str, object],
    table: pd.DataFrame | None = None,
    words: pd.DataFrame | None = None,
) -> str:
    """One self-contained HTML page: what the SAE is, then per feature its crops, its
    histogram, its best attributes (rows of ``features.csv``) and its words."""
    parts = [f"<h1>{title}</h1>", section("SAE", definitions(about))]
    first = True
    for view in views:
        body = [picture(feature_grid([view]), f"feature {view.feature}")]
        if table is not None:
            rows = table[table.feature == view.feature].sort_values("auroc", ascending=False)
            shown = rows[["attribute", "class", "auroc", "precision", "frequency"]]
            body.append(shown.round(3).to_html(index=False, border=0))
        if words is not None:
            found = words[words.feature == view.feature]["words"]
            if len(found):
                body.append(f"<p>words: {found.iloc[0]}</p>")
        figure = feature_histogram(view)
        body.append(figure.to_html(full_html=False, include_plotlyjs=first, default_width="100%"))
        first = False
        body.append(definitions({"top activations": [f"{a:.3g}" for _, _, a in view.top]}))
        parts.append(section(f"feature {view.feature}", "\n".join(body)))
    return page(title, parts)
