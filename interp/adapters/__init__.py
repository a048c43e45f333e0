"""Model-family adapters: one registered class per family."""

from interp.adapters import llava as _llava  # noqa: F401  (registers the LLaVA adapter)
from interp.adapters.base import (
    Adapter,
    adapter_for,
    find_module,
    register_adapter,
    registered_families,
)

__all__ = ["Adapter", "adapter_for", "find_module", "register_adapter", "registered_families"]
