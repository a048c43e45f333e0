"""The patch explorer: point at a patch of an image and see what the model makes of it at
every depth. :func:`build_view` computes the view's data with the model,
:func:`view_page` makes it one self-contained HTML page, :func:`explorer_widget` a
notebook widget (``analyses.commands.explore`` and ``interp view`` do all of it from a
run)."""

from interp.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "VIEW_FORMAT": "analyses.explorer.build",
        "ViewData": "analyses.explorer.build",
        "build_view": "analyses.explorer.build",
        "view_table": "analyses.explorer.build",
        "view_page": "analyses.explorer.page",
        "explorer_widget": "analyses.explorer.widget",
    },
)

__all__ = ["VIEW_FORMAT", "ViewData", "build_view", "explorer_widget", "view_page", "view_table"]
