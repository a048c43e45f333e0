"""The explorer in a notebook: an anywidget widget (JupyterLab, Jupyter Notebook, VS Code;
no server of our own) that draws the view's data with the page's own module."""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["explorer_widget"]


def explorer_widget(data: dict[str, Any]) -> Any:
    """A widget of the view's ``data``: its ``data`` trait holds the numbers it draws, its
    ``selection`` trait what the user chose last (image, condition, site, measure, the
    pixel clicked). anywidget is imported here, when a widget is made."""
    return _widget_class()(data=data)


@functools.cache
def _widget_class() -> type:
    try:
        import anywidget
        import traitlets
    except ImportError as err:  # a dependency of the package: a broken install
        from interp.errors import ConfigError

        raise ConfigError(
            f"the notebook explorer needs anywidget ({err}); pip install 'anywidget>=0.9'"
        ) from err

    from analyses.explorer.page import view_script, view_style

    class ExplorerWidget(anywidget.AnyWidget):
        """The patch explorer: ``data`` is the view (:func:`analyses.explorer.build_view`),
        ``selection`` the user's last choice."""

        _esm = view_script()
        _css = view_style()
        data = traitlets.Dict().tag(sync=True)
        selection = traitlets.Dict().tag(sync=True)

    return ExplorerWidget
