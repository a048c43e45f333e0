"""One vector per image from a vision encoder, each family's own image embedding.

- ``image``: what the checkpoint itself calls the image's embedding: CLIP's projected
  embedding where the checkpoint has the projection (``CLIPModel``,
  ``CLIPVisionModelWithProjection``), otherwise its pooled output (the CLS token after
  the final norm; a LLaVA's CLIP tower); SigLIP's pooled output (its attention-pooling
  head); DINOv2's CLS token after the final norm.
- ``mean``: the mean of the patch tokens of the encoder's last hidden state.

The vision transformer is found from the model's own module tree (the module holding
the layers the adapter's ``vision.*`` sites name), so every family whose tower takes
``pixel_values`` alone is reached by the same code (adapter attribute ``pixel_tower``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from interp.errors import ConfigError
from interp.models.loading import LoadedModel
from interp.models.tracing import check_images
from interp.sources import ImageSet

__all__ = ["EMBEDDINGS", "embed_batch", "embed_images"]

EMBEDDINGS = ("image", "mean")
_LAYER_LISTS = (".encoder.layers", ".encoder.layer", "encoder.layers", "encoder.layer")


def _tower(loaded: LoadedModel) -> tuple[nn.Module, nn.Module | None]:
    """The vision transformer (called on ``pixel_values``) and the projection to the
    image embedding, if the checkpoint has one."""
    adapter = loaded.adapter
    if not adapter.pixel_tower:
        raise ConfigError(
            f"image embeddings need a vision tower that takes pixel_values alone; a "
            f"{adapter.family} model's does not: use a vision encoder (CLIP, SigLIP, "
            f"DINOv2) or a LLaVA-1.5 checkpoint"
        )
    layers = adapter.module_path("vision.0").rsplit(".", 1)[0]  # the list of layers
    path = next((layers[: -len(s)] for s in _LAYER_LISTS if layers.endswith(s)), None)
    if path is None:
        raise ConfigError(f"cannot find the vision transformer above {layers!r}")
    model = loaded.model
    tower = model.get_submodule(path) if path else model
    projection = getattr(model, "visual_projection", None)
    return tower, projection


def embed_batch(
    loaded: LoadedModel, images: np.ndarray | list[np.ndarray], kind: str = "image"
) -> torch.Tensor:
    """``(batch, d)`` float32 CPU embeddings of ``images``: ``(batch, H, W, 3)`` uint8, or
    a list of ``(H_i, W_i, 3)`` for a family that resizes every image alike."""
    if kind not in EMBEDDINGS:
        raise ConfigError(f"embedding must be one of {EMBEDDINGS}, got {kind!r}")
    check_images(images)
    tower, projection = _tower(loaded)
    adapter = loaded.adapter
    inputs = loaded.move_inputs(adapter.build_inputs(images, adapter.default_prompt("")))
    with torch.no_grad():
        out: Any = tower(pixel_values=inputs["pixel_values"])
        if kind == "mean":
            hidden = out.last_hidden_state  # (batch, prefix + patches, d)
            n_patches = adapter.patch_grid[0] * adapter.patch_grid[1]
            vectors = hidden[:, hidden.shape[1] - n_patches :].mean(1)  # (batch, d)
        else:
            vectors = out.pooler_output  # (batch, d)
            if projection is not None:
                vectors = projection(vectors)
    return vectors.detach().to("cpu", torch.float32)


def embed_images(
    loaded: LoadedModel,
    data: ImageSet,
    kind: str = "image",
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """``(n, d)`` float32 embeddings of every image of ``data``, a batch at a time (images
    of mixed sizes one size at a time)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    sizes = data.sizes  # (n, 2)
    out: np.ndarray | None = None
    with tqdm(total=len(data), unit="img", disable=not progress) as bar:
        for start in range(0, len(data), batch_size):
            indices = np.arange(start, min(len(data), start + batch_size))
            pixels = data.pixels(indices)  # (b, *canvas, 3): each image top left
            for members in loaded.adapter.batch_groups(sizes[indices]):
                crops = [pixels[m, : sizes[indices[m], 0], : sizes[indices[m], 1]] for m in members]
                same = len({crop.shape for crop in crops}) == 1
                vectors = embed_batch(loaded, np.stack(crops) if same else crops, kind).numpy()
                if out is None:
                    out = np.empty((len(data), vectors.shape[1]), dtype=np.float32)
                out[indices[members]] = vectors  # (group, d)
            bar.update(len(indices))
    assert out is not None  # an ImageSet holds at least one image
    return out
