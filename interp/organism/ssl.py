"""A self-supervised vision encoder for the organism's world: the reference encoder of
blind-pair mining (MMVP uses DINOv2 against CLIP).

A ``Dinov2Model`` (so the DINOv2 adapter reaches it: sites ``vision.<i>``, its normed
CLS as the image embedding) of the organism encoder's size, trained from scratch with
SimCLR on fresh stimuli every step: two augmented views of each image (a random crop
resized back, a small shift in brightness, pixel noise; no flips and no colour changes,
so position and colour stay worth encoding), the normed CLS through a small projection
head (discarded), the NT-Xent loss over the batch. Nothing but the pixels supervises it,
unlike the organism's CLIP tower, trained against captions.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp.errors import ConfigError
from interp.options import Settings, option, renamed_options
from interp.organism.folders import check_model_folder, staged_folder
from interp.stimuli import StimulusSpec, generate

__all__ = ["SslTrainConfig", "train_ssl", "make_ssl_encoder", "augment"]

IMAGE_SIZE, PATCH_SIZE = 64, 8
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # DINOv2's processor


@renamed_options(batch="batch_size", layers="vision_layers")
@dataclass
class SslTrainConfig(Settings):
    """``interp organism train-ssl`` options: the recipe."""

    out: str = option("folder to save_pretrained the encoder into", default="organism-ssl")
    seed: int = option("seed of weights and training stimuli", default=0, minimum=0)
    hidden_size: int = option("width", default=128, minimum=32)
    vision_layers: int = option("transformer layers of the encoder", default=4, minimum=1)
    steps: int = option("training steps", default=800, minimum=1)
    batch_size: int = option(
        "images per step (two views each); at least 2: a contrastive batch of one image has "
        "no negatives",
        default=128,
        minimum=2,
    )
    lr: float = option("peak learning rate", default=1e-3)
    temperature: float = option("NT-Xent temperature", default=0.2)
    warmup: int = option("linear warm-up steps", default=50, minimum=0)
    threads: int | None = option("torch CPU threads (default: torch's)", default=None, minimum=1)
    overwrite: bool = option("replace an existing folder", default=False)
    progress: bool = option("show progress bars", default=True)

    def check(self) -> None:
        if self.hidden_size % 32:
            raise ConfigError(f"hidden_size must be a multiple of 32, got {self.hidden_size}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")


def make_ssl_encoder(hidden_size: int = 128, layers: int = 4) -> tuple[Any, Any]:
    """A fresh ``Dinov2Model`` for 64 px images in 8 px patches and its processor."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=hidden_size // 32,
        mlp_ratio=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    processor = BitImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(MEAN),
        image_std=list(STD),
    )
    return Dinov2Model(config), processor


def augment(images: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """One random view of each of ``images`` ``(batch, 64, 64, 3)`` uint8, normalised as
    the processor does: ``(batch, 3, 64, 64)``. A crop of 60-100% of the side at a random
    place, resized back (bilinear), brightness times 0.9-1.1, Gaussian noise of 0.03."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32) / 255  # (b, 3, H, W)
    b = len(x)
    scale = 0.6 + 0.4 * torch.rand(b, generator=generator)  # side kept
    shift = (1 - scale)[:, None] * (2 * torch.rand(b, 2, generator=generator) - 1)  # (b, 2)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x * (0.9 + 0.2 * torch.rand(b, 1, 1, 1, generator=generator))
    x = (x + 0.03 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (x - mean) / std


def _nt_xent(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's loss of ``z`` ``(2b, d)`` (rows ``k`` and ``k + b`` are views of one
    image), and how often each view's nearest other row is its twin."""
    z = F.normalize(z, dim=1)
    n = len(z) // 2
    logits = z @ z.T / temperature  # (2b, 2b)
    logits.fill_diagonal_(float("-inf"))
    twins = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, twins), (logits.argmax(1) == twins).float().mean()


def train_ssl(config: SslTrainConfig, into: Path | None = None) -> tuple[Path, pd.DataFrame, float]:
    """Train, then ``save_pretrained`` the encoder and its processor into ``config.out``
    (written beside it and moved there when done), or into the folder ``into`` as it is.
    Returns the folder, the history (step, loss, twin retrieval) and the seconds taken."""
    if into is None:
        folder = check_model_folder(config.out, config.overwrite)
        with staged_folder(folder) as tmp:
            _, history, seconds = train_ssl(config, into=tmp)
        return folder, history, seconds
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model, processor = make_ssl_encoder(config.hidden_size, config.vision_layers)
    width = config.hidden_size
    head = torch.nn.Sequential(
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width // 2)
    )
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.05)

    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    start = time.perf_counter()
    model.train()
    with tqdm(range(config.steps), disable=not config.progress, unit="step") as bar:
        for step in bar:
            seed = (config.seed * 10 + 7) * 1_000_000 + step  # apart from evaluation seeds
            images = generate(
                StimulusSpec(n_images=config.batch_size, image_size=IMAGE_SIZE, seed=seed)
            ).images
            views = torch.cat([augment(images, generator), augment(images, generator)])
            z = head(model(pixel_values=views).pooler_output)  # (2b, width / 2)
            loss, hits = _nt_xent(z, config.temperature)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            history.append(
                {"step": step, "loss": float(loss.detach()), "twin_retrieval": float(hits)}
            )
            if step % 20 == 0:
                recent = pd.DataFrame(history[-50:]).mean()
                bar.set_postfix(loss=f"{recent.loss:.3f}", retrieval=f"{recent.twin_retrieval:.2f}")
    seconds = time.perf_counter() - start
    model.eval()
    tmp = into
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    pd.DataFrame(history).to_csv(tmp / "training_log.csv", index=False)
    (tmp / "recipe.json").write_text(
        pd.Series(
            {
                **{
                    k: v
                    for k, v in asdict(config).items()
                    if k not in ("out", "overwrite", "progress")
                },
                "seconds": round(seconds, 1),
                "machine": f"{platform.platform()}; {torch.get_num_threads()} torch threads; "
                f"torch {torch.__version__}",
            }
        ).to_json(indent=1)
    )
    return tmp, pd.DataFrame(history), seconds
