"""Load a VLM and its processor through ``from_pretrained``, and pick its adapter."""

from __future__ import annotations

import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from torch import nn

from interp.adapters import Adapter, adapter_class_for
from interp.errors import ConfigError, ModelLoadError
from interp.models.identity import folder_identity, snapshot_folder
from interp.organism import ORGANISM_NAME, ORGANISM_SSL_NAME, SHIPPED
from interp.organism.tiny_llava import TINY_LLAVA_NAME, build_tiny_llava, default_model_dir
from interp.ranks import Part

__all__ = [
    "LoadedModel",
    "load_model",
    "resolve_model_source",
    "check_device_map",
    "BUILTIN_MODELS",
]

BUILTIN_MODELS: tuple[str, ...] = (ORGANISM_NAME, ORGANISM_SSL_NAME, TINY_LLAVA_NAME)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "org/name"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A model, its processor and adapter, and the source given to ``from_pretrained``.

    ``identity`` says which weights and processor files were loaded, independent of the
    device (see :func:`interp.models.identity.folder_identity`); empty for a model built in
    memory."""

    model: nn.Module
    processor: Any
    adapter: Adapter
    source: str
    identity: dict[str, str] = field(default_factory=dict)
    _traced: Any = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def dtype_name(self) -> str:
        """The parameters' dtype as a name, e.g. ``"bfloat16"``."""
        return str(self.dtype).removeprefix("torch.")

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
    if source in SHIPPED:
        folder, command = SHIPPED[source]
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"the weights of the built-in {source!r} are missing from {folder}; reinstall "
                f"vlm-interp or rebuild them with `{command} --out {folder}`"
            )
        return str(folder)
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


def check_device_map(device_map: str | dict | None, parameter: str = "device_map") -> None:
    """Refuse a ``device_map`` (or a device, given as the setting ``parameter``) that
    names an accelerator this machine lacks (before any weights are read)."""
    if device_map is None:
        return
    wanted = device_map.values() if isinstance(device_map, dict) else [device_map]
    for device in wanted:
        name = str(device)
        if name.isdigit() or name.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(
                    f"{parameter}={device_map!r} needs a CUDA GPU, but torch sees none on "
                    f"this machine; leave out {parameter}= to run on the CPU"
                )
            index = int(name.rpartition(":")[2]) if ":" in name or name.isdigit() else 0
            if index >= torch.cuda.device_count():
                raise ConfigError(
                    f"{parameter}={device_map!r} names GPU {index}, but this machine has "
                    f"{torch.cuda.device_count()}; use cuda:0..cuda:{torch.cuda.device_count() - 1}"
                )
        elif name.startswith("mps") and not torch.backends.mps.is_available():
            raise ConfigError(
                f"{parameter}={device_map!r} needs Apple's MPS, which this machine lacks; "
                f"leave out {parameter}= to run on the CPU"
            )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection to the hub's endpoint (no retries)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_hub_check(source: str, resolved: str, local_files_only: bool) -> bool:
    """For a hub id: whether to load from the local cache only. Without a network and
    without a cached copy, a clear error at once (instead of the hub client's retries)."""
    if Path(resolved).is_dir() or local_files_only:
        return local_files_only
    if _hub_reachable():
        return False
    if snapshot_folder(source) is not None:
        return True  # cached: load it without asking the hub
    raise ModelLoadError(
        f"hub id {source!r} is not in the local Hugging Face cache and the hub cannot be "
        f"reached (no network, or HF_HUB_OFFLINE is set); pass a local save_pretrained "
        f"folder, or download the model on a machine with network access first"
    )


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
    of these two). Under ``torchrun``, ``device_map="cuda"`` puts each rank's copy on its
    own GPU (``cuda:<LOCAL_RANK>``), and ``device_map="auto"`` spreads each rank's copy
    over its own share of the machine's GPUs (:meth:`interp.ranks.Part.gpus`: with 8
    GPUs and 4 ranks per machine, rank 1 gets GPUs 2 and 3), for a model too large for
    one.
    """
    import transformers
    from transformers import AutoConfig

    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ModelLoadError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype]
    part = Part.from_env()
    if part.parallel and device_map == "cuda":
        device_map = part.device()  # one GPU per rank of a data-parallel extraction
    check_device_map(device_map)
    max_memory = None
    if part.parallel and device_map == "auto" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        own = part.gpus(count)  # the other ranks' GPUs get nothing of this copy
        max_memory = {
            i: torch.cuda.get_device_properties(i).total_memory if i in own else 0
            for i in range(count)
        }
    resolved = resolve_model_source(source)
    local_files_only = _offline_hub_check(source, resolved, local_files_only)
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    try:
        config = AutoConfig.from_pretrained(resolved, **kwargs)
        adapter_class = adapter_class_for(config, f" (from {source!r})")
        processor_class = getattr(transformers, adapter_class.processor_class)
        processor = processor_class.from_pretrained(resolved, **kwargs)
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
    if max_memory is not None:
        model_kwargs["max_memory"] = max_memory
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    try:
        model = auto_class.from_pretrained(resolved, config=config, **model_kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"could not load the weights of {source!r}: {first}. The weight files may be "
            f"truncated or corrupt: save or download them again"
        ) from err
    model.eval()
    adapter = adapter_class(model, processor)
    folder = Path(resolved) if Path(resolved).is_dir() else snapshot_folder(resolved)
    identity = folder_identity(folder) if folder is not None else {}
    return LoadedModel(
        model=model, processor=processor, adapter=adapter, source=resolved, identity=identity
    )
