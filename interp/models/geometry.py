"""Where a processor puts an image: the part of the original image each model input shows.

A processor resizes, pads to a square, centre-crops, places on a canvas or cuts into tiles.
A :class:`View` follows one processed image through those steps: its pixel ``shape`` and
the ``region`` ``(y0, x0, y1, x1)`` of the *original* image's pixels it spans (reaching
beyond the image where the processor padded). A patch grid laid over a view then gives
every token its box in the original image (:meth:`interp.layout.TokenLayout.regular`),
whatever the image's size or aspect ratio.

:func:`single_view` replays the common resize / pad-to-square / centre-crop pipeline from
an image processor's own parameters (``do_pad``, ``do_resize``, ``size``,
``do_center_crop``, ``crop_size``), as transformers' image processors apply them; families
with tiles or canvases (LLaVA-NeXT, Idefics3, Qwen2-VL) compose views themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from interp.errors import UnsupportedModelError
from interp.layout import ImageSize

__all__ = ["View", "Region", "single_view", "processor_setting", "size_field"]

Region = tuple[float, float, float, float]  # (y0, x0, y1, x1) in the original image's pixels


@dataclass(frozen=True)
class View:
    """A processed image of ``shape`` ``(height, width)`` px that shows ``region`` of the
    original image (edge to edge: pixel row 0's top edge is ``region[0]``)."""

    region: Region
    shape: ImageSize

    @classmethod
    def whole(cls, size: ImageSize) -> View:
        """The original image itself."""
        height, width = size
        return cls((0.0, 0.0, float(height), float(width)), (int(height), int(width)))

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per processed pixel, (y, x)."""
        y0, x0, y1, x1 = self.region
        return (y1 - y0) / self.shape[0], (x1 - x0) / self.shape[1]

    def resize(self, height: int, width: int) -> View:
        """The same region, resampled to ``height x width`` px."""
        return View(self.region, (int(height), int(width)))

    def window(self, top: int, left: int, height: int, width: int) -> View:
        """The ``height x width`` px starting at processed pixel ``(top, left)``; a window
        reaching outside (negative ``top``, or past the edge) is the view padded there."""
        sy, sx = self.scale
        y0, x0 = self.region[0] + top * sy, self.region[1] + left * sx
        return View((y0, x0, y0 + height * sy, x0 + width * sx), (int(height), int(width)))

    def tiles(self, rows: int, cols: int) -> list[View]:
        """The view cut into ``rows x cols`` equal tiles, row-major."""
        height, width = self.shape[0] // rows, self.shape[1] // cols
        return [
            self.window(i * height, j * width, height, width)
            for i in range(rows)
            for j in range(cols)
        ]


def size_field(size: Any, key: str) -> int | None:
    """``size[key]`` of a processor's size dict (a dict under transformers 4, a SizeDict
    under 5); None where absent."""
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return None if value is None else int(value)


def processor_setting(image_processor: Any, overrides: dict[str, Any], name: str) -> Any:
    """The value the processor uses for ``name``: the call's override, else its own."""
    return overrides[name] if name in overrides else getattr(image_processor, name, None)


def _uses_torchvision(image_processor: Any) -> bool:
    names = {cls.__name__ for cls in type(image_processor).__mro__}
    return bool(names & {"TorchvisionBackend", "BaseImageProcessorFast"})


def resized_shape(size: Any, shape: ImageSize) -> ImageSize:
    """``(height, width)`` a ``shape`` image is resized to under a processor's ``size``."""
    height, width = shape
    exact = size_field(size, "height"), size_field(size, "width")
    shortest = size_field(size, "shortest_edge")
    if exact[0] and exact[1]:
        return exact[0], exact[1]
    if shortest and not size_field(size, "longest_edge"):
        short, long = min(height, width), max(height, width)
        new_short, new_long = shortest, int(shortest * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)
    raise UnsupportedModelError(
        f"the processor resizes with size={size!r}, whose token geometry is not known here "
        f"(known: height and width, or shortest_edge); register an adapter that places "
        f"its views"
    )


def single_view(image_processor: Any, overrides: dict[str, Any], size: ImageSize) -> View:
    """The model input an image of ``size`` ``(height, width)`` becomes under the
    processor's pad-to-square (``do_pad``, LLaVA), resize and centre crop, with the
    processor call's ``overrides``."""
    setting = lambda name: processor_setting(image_processor, overrides, name)  # noqa: E731
    view = View.whole(size)
    height, width = view.shape
    if setting("do_pad") and height != width and _pads_to_square(image_processor):
        side = max(height, width)  # the image centred on a square (floor of the margin)
        view = view.window(-((side - height) // 2), -((side - width) // 2), side, side)
    if setting("do_resize") is not False and setting("size") is not None:
        view = view.resize(*resized_shape(setting("size"), view.shape))
    if setting("do_center_crop"):
        crop = setting("crop_size")
        crop_h, crop_w = size_field(crop, "height"), size_field(crop, "width")
        if not (crop_h and crop_w):
            raise UnsupportedModelError(f"the processor centre-crops to {crop!r}, not a size")
        view = view.window(
            _crop_start(view.shape[0], crop_h, image_processor),
            _crop_start(view.shape[1], crop_w, image_processor),
            crop_h,
            crop_w,
        )
    return view


def _pads_to_square(image_processor: Any) -> bool:
    """Whether the processor's ``do_pad`` pads an image to a square before resizing (the
    LLaVA image processor), rather than a batch to its largest image."""
    return hasattr(image_processor, "pad_to_square")


def _crop_start(length: int, crop: int, image_processor: Any) -> int:
    """First processed pixel a centre crop of ``crop`` keeps out of ``length`` (negative:
    the crop is larger, and padded; numpy and torchvision round that margin differently)."""
    if crop > length and _uses_torchvision(image_processor):
        return -((crop - length) // 2)
    return (length - crop) // 2
