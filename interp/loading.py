"""Load a VLM and its processor through ``from_pretrained``, and pick its adapter."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.adapters import Adapter, adapter_class_for
from interp.errors import ModelLoadError
from interp.organism import ORGANISM_DIR, ORGANISM_NAME
from interp.tiny_llava import TINY_LLAVA_NAME, build_tiny_llava, default_model_dir

__all__ = ["LoadedModel", "load_model", "resolve_model_source", "BUILTIN_MODELS"]

BUILTIN_MODELS: tuple[str, ...] = (ORGANISM_NAME, TINY_LLAVA_NAME)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "org/name"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A model, its processor and adapter, and the source given to ``from_pretrained``."""

    model: nn.Module
    processor: Any
    adapter: Adapter
    source: str
    _traced: Any = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def move_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Processor outputs onto the model's device; float tensors (pixels) in its dtype."""
        return {
            key: value.to(self.device, self.dtype)
            if value.is_floating_point()
            else value.to(self.device)
            for key, value in inputs.items()
        }

    @property
    def traced(self) -> Any:
        """The nnsight wrapper of :attr:`model` (created on first use).

        nnsight wraps module ``forward`` methods in place; plain calls of the model keep
        returning the same values.
        """
        if self._traced is None:
            from nnsight import NNsight

            self._traced = NNsight(self.model)
        return self._traced


def resolve_model_source(source: str) -> str:
    """A built-in name -> its folder; a path -> checked; else a hub id."""
    if source == ORGANISM_NAME:
        if not (ORGANISM_DIR / "config.json").is_file():
            raise ModelLoadError(
                f"the organism's weights are missing from {ORGANISM_DIR}; reinstall "
                f"vlm-interp or rebuild them with `interp organism train --out {ORGANISM_DIR}`"
            )
        return str(ORGANISM_DIR)
    if source == TINY_LLAVA_NAME:
        folder = default_model_dir()
        if (
            not (folder / "config.json").is_file()
            or not (folder / "processor_config.json").is_file()
        ):
            tmp = folder.with_name(folder.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            build_tiny_llava(tmp, seed=0)
            if folder.exists():  # a stale, incomplete folder: replace it
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        return str(folder)
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{source!r} exists but holds no config.json; pass a folder written by "
                f"save_pretrained, a hub id, or one of the built-ins {BUILTIN_MODELS}"
            )
        return str(path.resolve())
    if not _HUB_ID.match(source):
        raise ModelLoadError(
            f"model path {source!r} does not exist; pass an existing save_pretrained folder, "
            f"a hub id such as 'llava-hf/llava-1.5-7b-hf', or a built-in: "
            f"{', '.join(BUILTIN_MODELS)}"
        )
    return source  # "org/name": a hub id


def load_model(
    source: str = ORGANISM_NAME,
    *,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | None = None,
    local_files_only: bool = False,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load model + processor with ``from_pretrained`` and resolve the family adapter.

    ``source`` is a built-in name, a local ``save_pretrained`` folder or a hub id.
    ``dtype`` is e.g. ``"bfloat16"``; ``device_map`` e.g. ``"cuda"`` or ``"auto"``;
    ``attn_implementation`` e.g. ``"sdpa"`` or ``"eager"`` (the attention knockout needs one
    of these two).
    """
    import transformers
    from transformers import AutoConfig, AutoProcessor

    resolved = resolve_model_source(source)
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ModelLoadError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype]
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    try:
        config = AutoConfig.from_pretrained(resolved, **kwargs)
        adapter_class = adapter_class_for(config, f" (from {source!r})")
        processor = AutoProcessor.from_pretrained(resolved, **kwargs)
    except OSError as err:
        raise ModelLoadError(
            f"could not load {source!r}: {str(err).splitlines()[0]}. Without network access, "
            f"pass a local save_pretrained folder (or pre-fill the Hugging Face cache)"
        ) from err
    except ImportError as err:  # e.g. Qwen2-VL's video processor without torchvision
        raise ModelLoadError(
            f"the processor of {source!r} needs a package that is not installed: "
            f"{str(err).splitlines()[0]} Install it (`pip install 'vlm-interp[qwen]'` for "
            f"torchvision, matching your torch build)"
        ) from err
    auto_class = getattr(transformers, adapter_class.auto_class)
    model_kwargs: dict[str, Any] = dict(kwargs)
    if dtype is not None:
        model_kwargs["dtype"] = dtype
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    try:
        model = auto_class.from_pretrained(resolved, config=config, **model_kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load the weights of {source!r}: {err}") from err
    model.eval()
    adapter = adapter_class(model, processor)
    return LoadedModel(model=model, processor=processor, adapter=adapter, source=resolved)
