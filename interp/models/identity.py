"""What a cache was made from, independent of the device: weights, processor, dtype.

A resumed extraction must continue with the same model, or the cache would mix two
models' activations. The identity of a checkpoint folder is cheap to compute and needs no
weights in memory: a hash of every weight file's name and size plus its safetensors
header (names, dtypes, shapes and byte offsets of every tensor) and of ``config.json``;
the processor's identity hashes the folder's processor and tokenizer files.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

__all__ = ["folder_identity", "snapshot_folder"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
_PROCESSOR_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")
_NOT_PROCESSOR = ("config.json", "generation_config.json")
_MAX_HEADER = 100 * 2**20  # a safetensors header beyond this is not one


def _safetensors_header(path: Path) -> bytes:
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            return b"(short file)"
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            return b"(no header)"
        return handle.read(length)


def folder_identity(folder: str | Path) -> dict[str, str]:
    """Hashes of the weights (names, sizes, safetensors headers, ``config.json``) and of
    the processor files of a ``save_pretrained`` folder (or a hub snapshot):
    ``{"weights": sha256 hex, "processor": sha256 hex}``."""
    folder = Path(folder)
    weights, processor = hashlib.sha256(), hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name.endswith(_WEIGHT_SUFFIXES) and not name.endswith(".index.json"):
            weights.update(f"{name}\0{path.stat().st_size}\0".encode())
            if name.endswith(".safetensors"):
                weights.update(_safetensors_header(path))
        elif name == "config.json":
            weights.update(b"config.json\0" + path.read_bytes())
        elif name.endswith(_PROCESSOR_SUFFIXES) and name not in _NOT_PROCESSOR:
            processor.update(f"{name}\0".encode() + path.read_bytes())
    return {"weights": weights.hexdigest(), "processor": processor.hexdigest()}


def snapshot_folder(hub_id: str) -> Path | None:
    """The local snapshot folder of a hub id in the Hugging Face cache, if it is there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None
