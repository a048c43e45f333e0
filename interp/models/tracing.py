"""Record sites (and apply interventions) in one nnsight trace per batch.

A capture is a list of :class:`Action` s, each bound to a module's ``inputs`` or
``output``; they are run in forward-pass order inside ``model.trace(...)`` (nnsight
requires that order), with edits applied before the value is recorded.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import nnsight
import numpy as np
import torch
from torch import nn

from interp.errors import ConfigError
from interp.models.loading import LoadedModel
from interp.names import as_names

__all__ = ["Action", "Captured", "capture", "capture_tokens", "check_images", "event_ranks"]

Port = Literal["inputs", "output"]
_RANKS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, Port], int]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class Action:
    """Edit and/or record the ``port`` of the module at ``path``.

    ``edit`` maps the current value (``(args, kwargs)`` for inputs, the module's return
    value for output) to its replacement. ``site`` names the recording, if any: a site's
    patch tokens, or with ``read`` whatever ``read(value)`` returns (a tensor), kept in
    :attr:`Captured.records`.
    """

    path: str
    port: Port
    edit: Callable[[Any], Any] | None = None
    site: str | None = None
    read: Callable[[Any], torch.Tensor] | None = None


def event_ranks(model: nn.Module) -> dict[tuple[str, Port], int]:
    """Forward-pass order of every module's inputs and output events.

    A module's inputs are seen when it is entered and its output when it exits, so a
    depth-first walk (children in registration order) gives the order in which nnsight
    meets them for sequential models such as these.
    """
    ranks: dict[tuple[str, Port], int] = {}
    counter = 0

    def walk(module: nn.Module, path: str) -> None:
        nonlocal counter
        ranks[(path, "inputs")] = counter
        counter += 1
        for name, child in module.named_children():
            walk(child, f"{path}.{name}" if path else name)
        ranks[(path, "output")] = counter
        counter += 1

    walk(model, "")
    return ranks


def _envoy(root: Any, path: str) -> Any:
    envoy = root
    for part in path.split("."):
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


@dataclass
class Captured:
    """One batch's recordings: ``acts`` maps a site to its patch tokens ``(batch, tokens,
    d)`` (in the order of ``adapter.token_layout``); ``extra`` maps the sites that have
    them to the tokens that carry no patch (CLS, registers, newlines), ``(batch, k, d)``;
    ``logits``, when asked for, the model's next-token logits ``(batch, vocab)`` after
    each prompt; ``records``, what the ``read`` of recording actions returned. All
    on the CPU. ``ranges`` (when asked for) maps ``"acts/<site>"`` and ``"extra/<site>"``
    to the ``(2,)`` float32 smallest and largest value of those tokens (NaN where one is
    NaN), found where the values were made (on a GPU: no pass over them on the host)."""

    acts: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None
    records: dict[str, torch.Tensor] = field(default_factory=dict)
    ranges: dict[str, torch.Tensor] = field(default_factory=dict)


def check_images(images: Any) -> None:
    """Images as every capture takes them: a ``(batch, H, W, 3)`` uint8 array (0-255), or
    a list of ``(H_i, W_i, 3)`` uint8 arrays (images of mixed sizes, for a family whose
    model input has one size whatever the image's: see ``Adapter.batch_key``).

    A float array in [0, 1] would pass through the processor's own rescaling as if it
    were 0-255 and give other activations than the same picture in uint8, so it is
    refused, as is a single image without a batch axis."""
    if isinstance(images, (list, tuple)) and images:
        for image in images:
            if not isinstance(image, np.ndarray) or image.ndim != 3:
                raise ConfigError(
                    f"a list of images holds (H, W, 3) uint8 arrays, got "
                    f"{getattr(image, 'shape', type(image).__name__)}"
                )
            check_images(image[None])
        return
    if not isinstance(images, np.ndarray):
        raise ConfigError(
            f"images must be a numpy array (batch, H, W, 3) of uint8, got "
            f"{type(images).__name__}; use np.asarray(...)"
        )
    if images.ndim == 3 and images.shape[-1] == 3:
        raise ConfigError(
            f"images must have a batch axis, (batch, H, W, 3); got one image of shape "
            f"{images.shape}: pass images[None]"
        )
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ConfigError(f"images must be (batch, H, W, 3) with batch >= 1, got {images.shape}")
    if images.dtype != np.uint8:
        low, high = (float(images.min()), float(images.max())) if images.size else (0, 0)
        hint = (
            "(values in [0, 1]: multiply by 255 first) "
            if np.issubdtype(images.dtype, np.floating) and high <= 1.0
            else ""
        )
        raise ConfigError(
            f"images must be uint8 in 0..255, got {images.dtype} in [{low:g}, {high:g}]; "
            f"convert with np.clip(x, 0, 255).round().astype(np.uint8) {hint}so that the "
            f"processor sees the pixels the cache stores"
        )


def capture(
    loaded: LoadedModel,
    images: np.ndarray | Sequence[np.ndarray],
    sites: Sequence[str],
    *,
    prompt: str = "",
    intervention: Any | None = None,
) -> dict[str, torch.Tensor]:
    """Run one batch and return ``site -> (batch, tokens, d)`` float32 CPU tensors of the
    patch tokens (:func:`capture_tokens` also returns the tokens that carry no patch).

    ``images`` is ``(batch, H, W, 3)`` uint8; ``prompt`` the exact text for a VLM (see
    ``adapter.default_prompt``), empty for a vision encoder. ``intervention`` is an object
    with an ``actions(adapter, inputs, context)`` method (see
    :mod:`interp.experiments.interventions`); the recorded values are those of the intervened
    forward pass.
    """
    return capture_tokens(
        loaded, images, sites, prompt=prompt, intervention=intervention, extra=False
    ).acts


def capture_tokens(
    loaded: LoadedModel,
    images: np.ndarray | Sequence[np.ndarray],
    sites: Sequence[str],
    *,
    prompt: str | Sequence[str] = "",
    intervention: Any | None = None,
    extra: bool = True,
    context: Any | None = None,
    logits: bool = False,
    records: Sequence[Action] = (),
    dtype: torch.dtype | None = torch.float32,
    inputs: dict[str, torch.Tensor] | None = None,
    ranges: bool = False,
) -> Captured:
    """As :func:`capture`, and (with ``extra``) the non-patch tokens of each site; with
    ``logits``, the next-token logits after each prompt (``prompt`` may then be one text
    per image, padded by the processor). ``context`` (an
    :class:`interp.experiments.interventions.BatchContext`) reaches the intervention; ``records``,
    actions with a ``read``, record whatever it returns (:attr:`Captured.records`).

    Recordings come back on the CPU as ``dtype`` (None: the model's own, as an
    extraction stores them without a float32 detour), converted on the model's device.
    From a GPU they are copied into pinned memory without waiting (the forward pass
    goes on meanwhile), and the copies are awaited once, when the trace is done.

    ``ranges``: also record each recording's smallest and largest value
    (:attr:`Captured.ranges`), reduced on the model's device.

    ``inputs``: the processor's outputs for these ``images`` and ``prompt``
    (``adapter.build_inputs``) where they were built already (an extraction builds them
    once per batch, in its loader workers); built here otherwise."""
    adapter = loaded.adapter
    check_images(images)
    sites = [adapter.check_site(s) for s in as_names(sites, "sites")]
    if inputs is None:
        inputs = adapter.build_inputs(images, prompt)
    inputs = loaded.move_inputs(inputs)
    positions = adapter.token_positions(inputs)  # None without an LLM
    if logits and not adapter.has_language_model:
        raise ConfigError(f"a {adapter.family} encoder has no next-token logits")

    actions = [Action(adapter.module_path(s), "output", site=s) for s in sites]
    actions += list(records)
    if intervention is not None:
        actions += intervention.actions(adapter, inputs, context)
    if loaded.model not in _RANKS:
        _RANKS[loaded.model] = event_ranks(loaded.model)
    ranks = _RANKS[loaded.model]
    # One visit per module event (nnsight meets each once), in forward-pass order; at
    # each, edits run before the value is recorded.
    events: dict[tuple[str, Port], list[Action]] = {}
    for action in sorted(actions, key=lambda a: (ranks[(a.path, a.port)], a.site is not None)):
        events.setdefault((action.path, action.port), []).append(action)

    traced = loaded.traced
    with torch.no_grad(), traced.trace(**inputs) as tracer:
        store = nnsight.save({})
        extras = nnsight.save({})
        found_ranges = nnsight.save({})
        for (path, port), group in events.items():
            envoy = _envoy(traced, path)
            edits = [a.edit for a in group if a.edit is not None]
            if port == "inputs":
                value = envoy.inputs
                for edit in edits:
                    value = edit(value)
                envoy.inputs = value
                continue
            value = envoy.output
            if edits:
                for edit in edits:
                    value = edit(value)
                envoy.output = value
            for action in group:
                if action.site is None:
                    continue
                if action.read is not None:
                    store[action.site] = _to_host(action.read(value), dtype)
                    continue
                selected = adapter.select(action.site, value, positions)
                store[action.site] = _to_host(selected, dtype)
                if ranges:
                    found_ranges[f"acts/{action.site}"] = _range(selected)
                if extra:
                    others = adapter.select_extra(action.site, value, positions)
                    if others is not None:
                        extras[action.site] = _to_host(others, dtype)
                        if ranges:
                            found_ranges[f"extra/{action.site}"] = _range(others)
        if logits:
            final = nnsight.save(_last_logits(traced.output.logits, inputs))
        else:  # nothing later is needed: the model stops after the last event used
            tracer.stop()
    for device in {p.device for p in loaded.model.parameters() if p.device.type == "cuda"}:
        torch.cuda.current_stream(device).synchronize()  # the copies to pinned memory
    return Captured(
        acts={site: store[site] for site in sites},
        extra={site: extras[site] for site in sites if site in extras},
        logits=final if logits else None,
        records={a.site: store[a.site] for a in records if a.site is not None},
        ranges=dict(found_ranges),
    )


def _range(value: torch.Tensor) -> torch.Tensor:
    """``(2,)`` float32 on the host: the smallest and largest of ``value`` (NaN where one
    is NaN), reduced in one pass where ``value`` lies (the copy of the two numbers to
    pinned memory is not awaited)."""
    value = value.detach()
    if not value.numel():
        return torch.tensor([0.0, 0.0])
    low, high = value.reshape(-1).aminmax()
    return _to_host(torch.stack([low, high]), torch.float32)


def _to_host(value: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """A recording as a CPU tensor of its own (``dtype``, or the value's), converted where
    it lies; a copy from a GPU lands in pinned memory and is not awaited (the caller
    synchronises the stream before reading it)."""
    value = value.detach()
    if value.device.type == "cpu":
        return value.to(dtype or value.dtype, copy=True)
    return value.to(dtype or value.dtype).to("cpu", non_blocking=True)


def _last_logits(logits: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(batch, vocab)`` float32 CPU: the logits ``(batch, seq, vocab)`` at each row's last
    real position (the end, with left padding; the last unmasked one otherwise)."""
    mask = inputs.get("attention_mask")
    rows = torch.arange(logits.shape[0], device=logits.device)
    if mask is None:
        last = torch.full_like(rows, logits.shape[1] - 1)
    else:  # the last position whose mask is 1, whichever side the padding is on
        seq = torch.arange(mask.shape[1], device=mask.device)
        last = (seq * (mask != 0)).amax(1).to(logits.device)
    return logits[rows, last].detach().to("cpu", torch.float32, copy=True)
