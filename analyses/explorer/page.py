"""The explorer as one self-contained HTML page: the view's data, its script and its
style inline (no network, no server), openable offline and shareable as one file."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

__all__ = ["view_page", "view_script", "view_style"]

_EXPORT = "export default { render };"


def view_script() -> str:
    """The view's front-end module (``render({model, el})``, the anywidget contract)."""
    return files("analyses.explorer").joinpath("view.js").read_text(encoding="utf-8")


def view_style() -> str:
    return files("analyses.explorer").joinpath("view.css").read_text(encoding="utf-8")


def _inline_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</`` to close it early)."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def view_page(data: dict[str, Any], title: str = "vlm-interp explorer") -> str:
    """The HTML of a page that shows ``data`` (:func:`~analyses.explorer.build_view`'s)
    with the same module the notebook widget runs; the page's model
    (``window.explorerModel``, anywidget's get/set/on/off) holds the data and keeps the
    selection (``window.explorerSelection``)."""
    script = view_script()
    if _EXPORT not in script:
        raise RuntimeError(f"view.js must end with {_EXPORT!r}")  # the package is broken
    module = script.replace(_EXPORT, "")
    escaped = title.replace("&", "&amp;").replace("<", "&lt;")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escaped}</title>
<style>
body {{ margin: 16px; }}
{view_style()}
</style>
</head>
<body>
<h3 style="font-family: system-ui, sans-serif">{escaped}</h3>
<div id="explorer"></div>
<script type="application/json" id="explorer-data">{_inline_json(data)}</script>
<script type="module">
{module}
// The page's model: the anywidget model's get/set/on/off over the data held here.
const held = {{ data: JSON.parse(document.getElementById("explorer-data").textContent) }};
const listeners = {{}};
const model = {{
  get: (key) => held[key],
  set: (key, value) => {{
    held[key] = value;
    window.explorerSelection = held.selection;
    for (const listener of [...(listeners[`change:${{key}}`] || [])]) listener();
  }},
  save_changes: () => {{}},
  on: (name, listener) => {{ (listeners[name] = listeners[name] || []).push(listener); }},
  off: (name, listener) => {{
    listeners[name] = (listeners[name] || []).filter((l) => l !== listener);
  }},
}};
window.explorerModel = model;
render({{ model, el: document.getElementById("explorer") }});
document.getElementById("explorer").dataset.ready = "true";
</script>
</body>
</html>
"""
