"""Training sparse autoencoders from a cache: a site's patch tokens streamed from the HDF5
file in sequential blocks of images through a shuffle buffer (never the whole site in
memory), several SAEs (widths, k, architectures) trained from one read, checkpoints that
resume, and a training log.

The images split once: the last ``held_out`` share of the written images is kept out of
training and measured (:func:`sae_metrics`). Tokens are scaled by one factor, measured on
the first block, so that their mean norm is ``sqrt(d_in)``; the factor is folded into the
saved weights (:meth:`SparseAutoencoder.fold_scale`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from caches.reader import CacheReader
from interp.errors import ConfigError
from interp.models.sae import ARCHITECTURES, SparseAutoencoder
from interp.options import Settings, option
from interp.ranks import Part

__all__ = [
    "SaeSpec",
    "SaeTraining",
    "encoded_blocks",
    "rank_blocks",
    "sae_metrics",
    "token_blocks",
    "train_saes",
]

# A feature is dense when it fires on more than this share of held-out tokens.
DENSE_SHARE = 0.1
# The auxiliary loss of Gao et al. for dead features (every architecture): its weight.
AUX_WEIGHT = 1 / 32
_CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class SaeSpec:
    """One SAE to train: its architecture, width (``expansion`` x the site's width), ``k``
    (topk, batchtopk) or L1 weight (relu)."""

    architecture: str = "topk"
    expansion: int = 8
    k: int = 16
    l1: float = 1.0

    @property
    def name(self) -> str:
        sparsity = f"l1-{self.l1:g}" if self.architecture == "relu" else f"k{self.k}"
        return f"{self.architecture}-x{self.expansion}-{sparsity}"


@dataclass
class SaeTraining(Settings):
    """How the SAEs are trained (the same for every SAE of one read); the rules of its
    fields are declared with them (:func:`interp.options.check_options`)."""

    epochs: int = option("passes over the training images", default=1, minimum=1)
    batch_size: int = option("tokens per step", default=512, minimum=1)
    lr: float = option("Adam's learning rate", default=1e-3)
    buffer_tokens: int = option("tokens shuffled together", default=16384, minimum=1)
    block_images: int = option("images per sequential read", default=64, minimum=1)
    held_out: float = option("share of the images kept out of training", default=0.1)
    dead_tokens: int = option(
        "tokens without firing that make a feature dead", default=20000, minimum=1
    )
    checkpoint_every: int = option("steps between checkpoints", default=200, minimum=1)
    seed: int = option("seed of the weights and the shuffling", default=0, minimum=0)

    def check(self) -> None:
        if not 0 < self.held_out < 1:
            raise ConfigError(f"held_out must lie in (0, 1), got {self.held_out}")


def _split(n_images: int, held_out: float) -> tuple[range, range]:
    n_held = max(1, int(round(n_images * held_out)))
    if n_images - n_held < 1:
        raise ConfigError(
            f"the cache holds {n_images} images: too few to keep {held_out:.0%} out of "
            f"training; extract more images"
        )
    return range(0, n_images - n_held), range(n_images - n_held, n_images)


def token_blocks(
    reader: CacheReader, site: str, condition: str, images: range, block_images: int
) -> Iterator[np.ndarray]:
    """``(tokens, d)`` float32 of ``block_images`` images at a time, read in order (one
    sequential slice of the dataset each, dense or ragged)."""
    dataset = reader.acts(site, condition)
    offsets = reader.offsets(site)
    for start in range(images.start, images.stop, block_images):
        stop = min(images.stop, start + block_images)
        if dataset.ndim == 3:
            block = np.asarray(dataset[start:stop], dtype=np.float32)  # (images, tokens, d)
            yield block.reshape(-1, block.shape[-1])
        else:
            yield np.asarray(dataset[offsets[start] : offsets[stop]], dtype=np.float32)


def rank_blocks(images: range, block_images: int, rank: int = 0, ranks: int = 1) -> list[range]:
    """The blocks of ``block_images`` images that rank ``rank`` of ``ranks`` reads: every
    ``ranks``-th block from its own (disjoint parts of the cache; all of them for one)."""
    starts = range(images.start, images.stop, block_images)
    blocks = [range(s, min(images.stop, s + block_images)) for s in starts]
    return blocks[rank::ranks]


def encoded_blocks(
    sae: SparseAutoencoder,
    reader: CacheReader,
    site: str,
    condition: str,
    images: range,
    block_images: int = 64,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Each block of tokens ``(tokens, d_in)`` of ``images`` and the SAE's features of it
    ``(tokens, d_sae)`` (inference: batchtopk through its threshold)."""
    with torch.no_grad():
        for block in token_blocks(reader, site, condition, images, block_images):
            yield block, sae.encode(torch.from_numpy(block))


def _batches(
    reader: CacheReader,
    site: str,
    condition: str,
    blocks: list[range],
    size: int,
    training: SaeTraining,
    rng: np.random.Generator,
    steps: int | None = None,
) -> Iterator[np.ndarray]:
    """Shuffled batches of ``size`` tokens: the ``blocks`` fill a buffer of about
    ``buffer_tokens`` tokens, which is shuffled and handed out a batch at a time (the
    last, partial batch included); with ``steps``, exactly that many whole batches."""
    buffer: list[np.ndarray] = []
    held = given = 0
    for images in blocks:
        buffer.append(next(token_blocks(reader, site, condition, images, len(images))))
        held += len(buffer[-1])
        if held >= training.buffer_tokens:
            tokens = np.concatenate(buffer)
            tokens = tokens[rng.permutation(len(tokens))]
            cut = len(tokens) - len(tokens) % size
            for batch in np.split(tokens[:cut], cut // size):
                if steps is not None and given == steps:
                    return
                given += 1
                yield batch
            buffer, held = [tokens[cut:]], len(tokens) - cut
    if held:
        tokens = np.concatenate(buffer)
        tokens = tokens[rng.permutation(len(tokens))]
        for i in range(0, len(tokens), size):
            if steps is not None and (given == steps or len(tokens) - i < size):
                return
            given += 1
            yield tokens[i : i + size]


def _steps(reader: CacheReader, site: str, blocks: list[range], size: int, part: Part) -> int:
    """Whole batches every rank can make in an epoch: the fewest over the ranks (each
    counts its own tokens; they agree on the minimum)."""
    import torch.distributed as dist

    offsets = reader.offsets(site)
    tokens = sum(int(offsets[b.stop] - offsets[b.start]) for b in blocks)
    found = torch.tensor([tokens // size])
    dist.all_reduce(found, op=dist.ReduceOp.MIN)
    return int(found)


def _input_scale(tokens: np.ndarray) -> float:
    """``sqrt(d) / mean token norm`` of ``tokens`` ``(tokens, d)``."""
    return float(math.sqrt(tokens.shape[1]) / max(np.linalg.norm(tokens, axis=1).mean(), 1e-12))


def _losses(
    sae: SparseAutoencoder, spec: SaeSpec, x: torch.Tensor, dead: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """The training loss of one batch ``x`` ``(tokens, d_in)``, what is logged, and which
    features fired on it ``(d_sae,)``."""
    pre = sae.pre_activations(x)  # (tokens, d_sae)
    features = sae.activate(pre, batch=True)
    x_hat = sae.decode(features)
    variance = (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    fvu = (x_hat - x).pow(2).sum(-1).mean() / variance
    loss = fvu
    logged = {"fvu": fvu.item(), "l0": (features > 0).sum(-1).float().mean().item()}
    if spec.architecture == "relu":
        l1 = (features * sae.W_dec.norm(dim=1)).sum(-1).mean() / math.sqrt(sae.d_in)
        loss = loss + spec.l1 * l1
        logged["l1"] = l1.item()
    if dead.any():  # the auxiliary loss of Gao et al.: the dead features model the residual
        residual = (x - x_hat).detach()
        dead_pre = pre[:, dead]  # (tokens, dead)
        k_aux = min(int(dead.sum()), max(1, sae.d_in // 2))
        top = torch.topk(dead_pre, k_aux, dim=-1)
        aux = torch.zeros_like(dead_pre).scatter(-1, top.indices, torch.relu(top.values))
        aux_hat = aux @ sae.W_dec[dead]
        aux_fvu = (aux_hat - residual).pow(2).sum(-1).mean() / (
            (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        )
        loss = loss + AUX_WEIGHT * aux_fvu
        logged["aux"] = aux_fvu.item()
    if spec.architecture == "batchtopk":
        kept = features[features > 0]
        if len(kept):
            with torch.no_grad():  # the inference threshold: a running mean of the least kept
                sae.threshold.mul_(0.99).add_(0.01 * kept.min())
    return loss, logged, (features > 0).any(0).detach()


def train_saes(
    reader: CacheReader,
    site: str,
    specs: list[SaeSpec],
    out: str | os.PathLike,
    *,
    condition: str = "baseline",
    training: SaeTraining | None = None,
    device: str | None = None,
    progress: bool = True,
    part: Part | None = None,
) -> pd.DataFrame:
    """Train every SAE of ``specs`` on ``site``'s tokens (one read of the cache feeds them
    all), write each into ``out/<site>/<spec.name>/`` (SAELens's format) and the log into
    ``out/<site>/training_log.csv``; returns the held-out metrics (:func:`sae_metrics`),
    one row per SAE. An interrupted training resumes from ``out/<site>/checkpoint.pt``.

    Under ``torchrun`` (``part``: default from its environment) the ranks train together,
    data-parallel as DistributedDataParallel does: each reads its own blocks of images
    (:func:`rank_blocks`), takes ``batch_size / ranks`` tokens per step, and the ranks
    average their gradients (all-reduce) before each step, so every rank holds the same
    weights; rank 0 writes the files and returns the metrics (the others an empty table)."""
    from tqdm.auto import tqdm

    training = training or SaeTraining()
    if not specs:
        raise ConfigError("specs must name at least one SAE to train")
    for spec in specs:
        if spec.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, got {spec.architecture!r}"
            )
    part = part or Part.from_env()
    if training.batch_size % part.ranks:
        raise ConfigError(
            f"batch_size ({training.batch_size}) must split evenly over the {part.ranks} ranks"
        )
    folder = Path(out) / site
    folder.mkdir(parents=True, exist_ok=True)
    if device is None and part.parallel and torch.cuda.is_available():
        device = part.device()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = _join(part, device)
    d_in = int(reader.acts(site, condition).shape[-1])
    train_images, held = _split(reader.n_written, training.held_out)
    settings = {
        "site": site,
        "condition": condition,
        "cache": str(reader.path),
        "n_images": reader.n_written,
        "specs": [dataclasses.asdict(s) for s in specs],
        "training": dataclasses.asdict(training),
        "ranks": part.ranks,
    }
    torch.manual_seed(training.seed)
    saes = [
        SparseAutoencoder(d_in, s.expansion * d_in, s.architecture, s.k, seed=training.seed + i)
        for i, s in enumerate(specs)
    ]
    optimisers = [torch.optim.Adam(sae.parameters(), lr=training.lr) for sae in saes]
    step, rows, since_fired = 0, [], []
    checkpoint = folder / _CHECKPOINT
    if checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False)
        if saved["settings"] == settings:  # the same training: go on from its step
            for sae, optimiser, state in zip(saes, optimisers, saved["saes"], strict=True):
                sae.load_state_dict(state["model"])
                optimiser.load_state_dict(state["optimiser"])
            step, rows, scale = saved["step"], saved["rows"], saved["scale"]
            since_fired = [s.to(device) for s in saved["since_fired"]]
    for sae in saes:
        sae.to(device)
    if step == 0:  # the first block of training images: the input scale and b_dec's start
        first = next(token_blocks(reader, site, condition, train_images, training.block_images))
        scale = _input_scale(first)
        with torch.no_grad():
            centre = torch.from_numpy(first.mean(0) * scale).to(device)
            for sae in saes:
                sae.b_dec.copy_(centre)
        since_fired = [torch.zeros(sae.d_sae, device=device) for sae in saes]
    done = 0
    blocks = rank_blocks(train_images, training.block_images, part.rank, part.ranks)
    size = training.batch_size // part.ranks
    steps = _steps(reader, site, blocks, size, part) if part.parallel else None
    bar = tqdm(desc=f"SAEs at {site}", unit="batch", disable=not progress or part.rank > 0)
    for epoch in range(training.epochs):
        rng = np.random.default_rng([training.seed, epoch, part.rank])
        for batch in _batches(reader, site, condition, blocks, size, training, rng, steps):
            done += 1
            if done <= step:  # resumed: these batches were trained on before
                continue
            x = torch.from_numpy(batch * scale).to(device)  # (batch, d_in)
            logged: dict[str, Any] = {"step": done, "epoch": epoch, "tokens": len(x)}
            for i, (sae, spec, optimiser) in enumerate(zip(saes, specs, optimisers, strict=True)):
                dead = since_fired[i] >= training.dead_tokens
                loss, parts, fired = _losses(sae, spec, x, dead)
                optimiser.zero_grad()
                loss.backward()
                if part.parallel:
                    fired = _average(sae, fired, part.ranks)
                optimiser.step()
                sae.normalize_decoder()
                since_fired[i] = torch.where(fired, 0, since_fired[i] + len(x) * part.ranks)
                rows.append({**logged, "sae": spec.name, "loss": loss.item(), **parts})
            bar.update()
            if done % training.checkpoint_every == 0 and part.rank == 0:
                state = {"step": done, "rows": rows, "scale": scale, "since_fired": since_fired}
                _save_checkpoint(checkpoint, settings, saes, optimisers, state)
    bar.close()
    if part.rank > 0:  # rank 0 writes what every rank holds
        _leave(part, started)
        return pd.DataFrame()
    pd.DataFrame(rows).to_csv(folder / "training_log.csv", index=False)
    metrics = []
    for sae, spec in zip(saes, specs, strict=True):
        sae.to("cpu").fold_scale(scale)
        sae.metadata |= {
            "model_name": reader.attrs.get("model"),
            "hook_name": site,
            "condition": condition,
            "cache": str(reader.path),
            "held_out_images": [held.start, held.stop],
            "training": dataclasses.asdict(training),
        }
        sae.save(folder / spec.name)
        found = sae_metrics(sae, reader, site, condition, held)
        row = {"site": site, "condition": condition, "sae": spec.name}
        metrics.append({**row, **dataclasses.asdict(spec), **found})
    checkpoint.unlink(missing_ok=True)
    table = pd.DataFrame(metrics)
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    _leave(part, started)
    return table


def _join(part: Part, device: torch.device) -> bool:
    """Join (or start) the ranks' process group; whether this call started it."""
    import torch.distributed as dist

    if not part.parallel or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def _leave(part: Part, started: bool) -> None:
    """Wait for every rank, and end the group where this training started it."""
    import torch.distributed as dist

    if part.parallel:
        dist.barrier()
        if started:
            dist.destroy_process_group()


def _average(sae: SparseAutoencoder, fired: torch.Tensor, ranks: int) -> torch.Tensor:
    """Every rank's gradients averaged (as DistributedDataParallel does), the batchtopk
    threshold averaged, and the features that fired on any rank's batch."""
    import torch.distributed as dist

    for parameter in sae.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= ranks
    dist.all_reduce(sae.threshold)
    sae.threshold /= ranks
    anywhere = fired.to(torch.int32)
    dist.all_reduce(anywhere, op=dist.ReduceOp.MAX)
    return anywhere.bool()


def _save_checkpoint(
    path: Path,
    settings: dict[str, Any],
    saes: list[SparseAutoencoder],
    optimisers: list[torch.optim.Optimizer],
    state: dict[str, Any],
) -> None:
    """Everything a resumed training needs, written whole or not at all."""
    saved = {
        "settings": settings,
        "saes": [
            {"model": sae.state_dict(), "optimiser": opt.state_dict()}
            for sae, opt in zip(saes, optimisers, strict=True)
        ],
        **state,
    }
    partial = path.with_suffix(".partial")
    torch.save(saved, partial)
    partial.replace(path)


@torch.no_grad()
def sae_metrics(
    sae: SparseAutoencoder,
    reader: CacheReader,
    site: str,
    condition: str,
    images: range,
    block_images: int = 64,
) -> dict[str, float]:
    """On ``images`` of the cache: the fraction of variance unexplained (summed squared
    error over summed squared deviation from the tokens' mean), L0 (features firing per
    token), and the shares of dead features (never firing) and dense ones (firing on more
    than :data:`DENSE_SHARE` of the tokens)."""
    error = active = 0.0
    count = 0
    sums = np.zeros(sae.d_in)
    squares = 0.0
    fired = torch.zeros(sae.d_sae)
    for block, features in encoded_blocks(sae, reader, site, condition, images, block_images):
        error += float((sae.decode(features) - torch.from_numpy(block)).pow(2).sum())
        sums += block.sum(0, dtype=np.float64)
        squares += float((block.astype(np.float64) ** 2).sum())
        active += float((features > 0).sum())
        fired += (features > 0).sum(0)
        count += len(block)
    total = squares - float((sums**2).sum()) / count  # summed squared deviation
    share = (fired / count).numpy()
    return {
        "fvu": error / total,
        "l0": active / count,
        "dead": float((share == 0).mean()),
        "dense": float((share > DENSE_SHARE).mean()),
        "tokens": count,
    }
