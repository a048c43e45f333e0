"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): Qwen2-VL's layout, with windowed
attention in most vision blocks.

Before its blocks the vision tower reorders the merge units (2x2 patches) window by window
(``window_size`` px squares of the merged grid, row-major, each row-major inside) and
only puts them back after the merger. The adapter computes the same window order and
undoes it at the vision sites and the projector, so stored tokens follow the processor's
order as in Qwen2-VL.
"""

from __future__ import annotations

import numpy as np
import torch

from interp.adapters.base import register_adapter
from interp.adapters.qwen2_vl import Qwen2VLAdapter

__all__ = ["Qwen25VLAdapter"]


@register_adapter
class Qwen25VLAdapter(Qwen2VLAdapter):
    family = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)
    hub_ids = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")

    def window_index(self, grid_thw: torch.Tensor) -> torch.Tensor:
        """The merge-unit order of the vision blocks: ``(units,)``, unit ``window_index[k]``
        of the processor's order sits at row ``k``."""
        side = int(self.model.config.vision_config.window_size) // self._merge // self._patch
        order, offset = [], 0
        for frames, height, width in grid_thw.tolist():
            rows, cols = int(height) // self._merge, int(width) // self._merge
            units = np.arange(int(frames) * rows * cols).reshape(int(frames), rows, cols)
            for frame in units:
                for r0 in range(0, rows, side):
                    for c0 in range(0, cols, side):
                        order.append(frame[r0 : r0 + side, c0 : c0 + side].ravel() + offset)
            offset += units.size
        return torch.as_tensor(np.concatenate(order), dtype=torch.long)

    def vision_order(self, grid_thw: torch.Tensor) -> torch.Tensor:
        return torch.argsort(self.window_index(grid_thw))
