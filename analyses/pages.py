"""Self-contained HTML pages (the run report, the feature pages): the page, its sections,
key-value tables, collapsed tables and embedded pictures; nothing to fetch when read."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
from PIL import Image

__all__ = ["collapsed", "definitions", "page", "picture", "png_uri", "section", "shown"]


def page(title: str, parts: Sequence[str]) -> str:
    """The whole page: ``title`` and the HTML ``parts`` one after the other."""
    return _PAGE.format(title=html.escape(title), body="\n".join(parts))


def section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def definitions(values: dict[str, Any]) -> str:
    """A two-column table of names and values."""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(shown(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table class='kv'>{rows}</table>"


def shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def collapsed(table: pd.DataFrame) -> str:
    """A table folded away behind its row count."""
    return (
        f"<details><summary>{len(table)} rows</summary>"
        f"{table.round(4).to_html(index=False, border=0, na_rep='')}</details>"
    )


def picture(image: Image.Image | bytes, alt: str) -> str:
    """An ``<img>`` holding the PNG itself (a PIL image, or PNG bytes)."""
    return f'<img alt="{html.escape(alt)}" src="{png_uri(image)}">'


def png_uri(image: Image.Image | bytes) -> str:
    """A ``data:`` URI of the PNG itself (a PIL image, or PNG bytes): a picture a page
    holds, nothing to fetch."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        image = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(image).decode("ascii")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: Arial, Helvetica, sans-serif; margin: 2em auto; max-width: 1100px;
        color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ padding: 2px 8px; text-align: left; border-bottom: 1px solid #ddd; }}
table.kv th {{ color: #555; font-weight: normal; }}
section {{ margin-bottom: 2em; }}
img {{ max-width: 100%; image-rendering: pixelated; }}
</style></head>
<body>
{body}
</body></html>
"""
