"""Train the organism the way LLaVA is trained, on fresh synthetic stimuli every step.

Stage 1: the CLIP vision encoder alone, contrastively against captions (with a small CLIP
text encoder that is discarded afterwards). Stage 2: the projector and the language model
on one-word visual question answering, with the encoder frozen.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.errors import ConfigError
from interp.options import Settings, option
from interp.organism.folders import check_model_folder, staged_folder
from interp.organism.tiny_llava import make_tiny_llava, save_portable
from interp.organism.twins import contrastive_batch
from interp.stimuli import StimulusSpec, generate
from interp.stimuli.questions import QA, QUESTION_TYPES, ask, caption

__all__ = [
    "OrganismTrainConfig",
    "TrainResult",
    "encode_dialogues",
    "image_questions",
    "machine_record",
    "model_folder",
    "optimise",
    "pixels_to_tensor",
    "record",
    "schedule",
    "stage_seed",
    "train",
]


@dataclass
class OrganismTrainConfig(Settings):
    """The recipe; ``interp organism train`` options are these fields."""

    out: str = option("folder to save_pretrained the model into", default="organism")
    seed: int = option("seed of weights and training stimuli", default=0, minimum=0)
    hidden_size: int = option("width of vision encoder and LM", default=128, minimum=32)
    vision_layers: int = option("vision encoder layers", default=4, minimum=1)
    lm_layers: int = option("language model layers", default=6, minimum=1)
    clip_steps: int = option("stage 1 (contrastive) steps", default=1500, minimum=0)
    clip_batch: int = option("stage 1 images per batch", default=128, minimum=1)
    clip_lr: float = option("stage 1 peak learning rate", default=1e-3)
    vqa_steps: int = option("stage 2 (VQA) steps", default=2000, minimum=1)
    vqa_batch: int = option("stage 2 images per batch, all questions each", default=32, minimum=1)
    vqa_lr: float = option("stage 2 peak learning rate", default=1e-3)
    warmup: int = option("linear warm-up steps of each stage", default=100, minimum=0)
    threads: int | None = option("torch CPU threads (default: torch's)", default=None, minimum=1)
    overwrite: bool = option("replace an existing model folder", default=False)
    progress: bool = option("show progress bars", default=True)

    def check(self) -> None:
        if self.hidden_size % 32:
            raise ConfigError(f"hidden_size must be a multiple of 32, got {self.hidden_size}")


@dataclass
class TrainResult:
    folder: Path
    history: pd.DataFrame  # stage, step, loss, accuracy
    seconds: dict[str, float]
    machine: dict[str, Any]


IMAGE_SIZE, PATCH_SIZE = 64, 8


def stage_seed(seed: int, stage: int, step: int) -> int:
    """Stimulus seed of one training step; evaluation seeds lie outside these ranges."""
    return (seed * 10 + stage) * 1_000_000 + step


def pixels_to_tensor(images: np.ndarray, processor: Any) -> torch.Tensor:
    """``(batch, H, W, 3)`` uint8 at the native size -> normalised ``(batch, 3, H, W)``.

    Equal to the processor's own output at the native size (tested), without PIL.
    """
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(ip.image_std, dtype=torch.float32)[:, None, None]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32) * ip.rescale_factor
    return (x - mean) / std


def schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _clip_model(llava_config: Any, tokenizer: Any, hidden: int):
    from transformers import CLIPConfig, CLIPModel

    vocab = tokenizer.get_vocab()
    text = {
        "vocab_size": len(vocab),
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": hidden // 32,
        "max_position_embeddings": 64,
        "pad_token_id": vocab["<pad>"],
        "bos_token_id": vocab["<s>"],
        "eos_token_id": vocab["</s>"],  # pooled at the first </s>
        "projection_dim": hidden,
    }
    config = CLIPConfig(
        text_config=text,
        vision_config=llava_config.vision_config.to_dict(),
        projection_dim=hidden,
    )
    return CLIPModel(config)


def _copy_vision(source: torch.nn.Module, tower: torch.nn.Module) -> None:
    """Load a CLIP vision transformer's weights into LLaVA's vision tower."""
    state = source.state_dict()
    target = tower.state_dict()
    if all(k.startswith("vision_model.") for k in target):  # transformers 4.x layout
        state = {f"vision_model.{k}": v for k, v in state.items()}
    tower.load_state_dict(state, strict=True)


def image_questions(objects: list[dict[str, float]], rng: np.random.Generator) -> list[QA]:
    """Every question type that can be asked of this image, about random objects."""
    out = []
    for kind in rng.permutation(QUESTION_TYPES):
        for target in rng.permutation(len(objects)):
            qa = ask(objects, int(target), str(kind), IMAGE_SIZE)
            if qa is not None:
                out.append(qa)
                break
    return out


def _vqa_batch(
    step_seed: int, batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[list[QA]]]:
    """Images and, per image, its questions in random order (a multi-turn conversation)."""
    stimuli = generate(StimulusSpec(n_images=batch, image_size=IMAGE_SIZE, seed=step_seed))
    return stimuli.images, [image_questions(objects, rng) for objects in stimuli.objects]


def encode_dialogues(
    processor: Any, prompt_of: Any, dialogues: list[list[QA]], n_image_tokens: int
) -> dict[str, torch.Tensor]:
    """LLaVA-style multi-turn sequences, right-padded, with labels on every answer token.

    ``USER: <image>\\n{q1} ASSISTANT: {a1} USER: {q2} ASSISTANT: {a2} ...`` (as the chat
    template renders a conversation): the first turn is exactly the evaluation prompt.
    """
    tokenizer = processor.tokenizer
    image_token = processor.image_token
    texts = []
    for turns in dialogues:
        first, *rest = turns
        text = prompt_of(first.question).replace(image_token, image_token * n_image_tokens)
        text += f" {first.answer}"
        text += "".join(f" USER: {qa.question} ASSISTANT: {qa.answer}" for qa in rest)
        texts.append(text)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    ids = enc["input_ids"]  # (batch, seq)
    vocab = tokenizer.get_vocab()
    is_answer = torch.zeros_like(ids, dtype=torch.bool)
    is_answer[:, 2:] = (ids[:, :-2] == vocab["assistant"]) & (ids[:, 1:-1] == vocab[":"])
    if int(is_answer.sum()) != sum(len(turns) for turns in dialogues):
        raise AssertionError("answer positions do not match the dialogues")
    labels = torch.where(is_answer, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": enc["attention_mask"], "labels": labels}


def optimise(loss: torch.Tensor, params: list, opt: Any, sched: Any) -> None:
    """One update: backward, clip the gradient norm to 1, step, advance the schedule."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def record(
    history: list[dict[str, Any]],
    bar: Any,
    stage: str,
    step: int,
    loss: torch.Tensor,
    hits: torch.Tensor,
) -> None:
    """Log one step and show the running means of the last 50 on the progress bar."""
    history.append(
        {"stage": stage, "step": step, "loss": loss.item(), "accuracy": hits.float().mean().item()}
    )
    recent = history[-50:]
    bar.set_postfix(
        loss=f"{np.mean([h['loss'] for h in recent]):.3f}",
        acc=f"{np.mean([h['accuracy'] for h in recent]):.3f}",
    )


def contrastive_loss(
    clip: Any, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE loss with the image embedded as the mean of its *patch*
    tokens (CLS left out): every patch token must carry what the caption says about the
    image, position included, since a mean forgets where tokens were. These are the tokens
    LLaVA passes on. Returns ``(loss, logits_per_image (batch, batch))``.
    """
    vision = clip.vision_model(pixel_values=pixel_values)
    patches = vision.last_hidden_state[:, 1:]  # (batch, tokens, d) without CLS
    image = clip.visual_projection(clip.vision_model.post_layernorm(patches.mean(1)))
    text = clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    text = clip.text_projection(text)
    image = torch.nn.functional.normalize(image, dim=-1)  # (batch, d)
    text = torch.nn.functional.normalize(text, dim=-1)  # (batch, d)
    logits = clip.logit_scale.exp() * image @ text.T  # (batch images, batch captions)
    target = torch.arange(len(logits))
    loss = (
        torch.nn.functional.cross_entropy(logits, target)
        + torch.nn.functional.cross_entropy(logits.T, target)
    ) / 2
    return loss, logits


def train_contrastive(
    config: OrganismTrainConfig, model: Any, processor: Any, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Stage 1: a CLIP vision encoder alone, contrastively against captions, with twins as
    hard negatives; its weights then go into ``model``'s vision tower. Returns the log.
    """
    history: list[dict[str, Any]] = []
    clip = _clip_model(model.config, processor.tokenizer, config.hidden_size).train()
    opt = torch.optim.AdamW(clip.parameters(), lr=config.clip_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(config.warmup, config.clip_steps))
    bar = tqdm(range(config.clip_steps), desc="stage 1 (contrastive)", disable=not config.progress)
    for step in bar:
        seed = stage_seed(config.seed, 1, step)
        images, objects = contrastive_batch(seed, config.clip_batch, IMAGE_SIZE, rng)
        texts = [caption(objs, IMAGE_SIZE) + " </s>" for objs in objects]
        enc = processor.tokenizer(texts, padding=True, return_tensors="pt")
        loss, logits = contrastive_loss(
            clip, pixels_to_tensor(images, processor), enc["input_ids"], enc["attention_mask"]
        )
        optimise(loss, list(clip.parameters()), opt, sched)
        with torch.no_grad():  # image -> caption retrieval within the batch, twins included
            hits = logits.argmax(1) == torch.arange(len(texts))
        record(history, bar, "contrastive", step, loss, hits)
    if config.clip_steps:
        _copy_vision(clip.vision_model, model.model.vision_tower)
    return history


def train_vqa(
    config: OrganismTrainConfig, model: Any, processor: Any, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Stage 2: projector and language model on multi-turn VQA, encoder frozen."""
    from interp.adapters import adapter_for

    adapter = adapter_for(model, processor)
    n_tokens = adapter.patch_grid[0] * adapter.patch_grid[1]
    history: list[dict[str, Any]] = []
    model.train()
    tower = model.model.vision_tower
    tower.eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.vqa_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(config.warmup, config.vqa_steps))
    bar = tqdm(range(config.vqa_steps), desc="stage 2 (VQA)", disable=not config.progress)
    for step in bar:
        images, dialogues = _vqa_batch(stage_seed(config.seed, 2, step), config.vqa_batch, rng)
        batch = encode_dialogues(processor, adapter.default_prompt, dialogues, n_tokens)
        out = model(**batch, pixel_values=pixels_to_tensor(images, processor))
        optimise(out.loss, params, opt, sched)
        with torch.no_grad():  # answers right, over every turn
            answered = batch["labels"][:, 1:] != -100
            hits = (out.logits[:, :-1].argmax(-1) == batch["labels"][:, 1:])[answered]
        record(history, bar, "vqa", step, out.loss, hits)
    model.eval()
    return history


def new_organism(config: OrganismTrainConfig) -> tuple[Any, Any]:
    """The untrained model and processor of a recipe (seeded)."""
    torch.manual_seed(config.seed)
    return make_tiny_llava(
        seed=config.seed,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        vision_layers=config.vision_layers,
        lm_layers=config.lm_layers,
        hidden_size=config.hidden_size,
        vision_feature_layer=-1,  # the layer the contrastive loss pools
    )


def model_folder(out: str, overwrite: bool, start: str | None = None) -> Path:
    """The folder a training run saves into, checked before any work
    (:func:`interp.organism.folders.check_model_folder`)."""
    return check_model_folder(out, overwrite, start)


def train(config: OrganismTrainConfig, into: Path | None = None) -> TrainResult:
    """Train from scratch and ``save_pretrained`` model + processor into ``config.out``
    (written apart and moved there when done), or into the folder ``into`` as it is."""
    if into is None:
        folder = model_folder(config.out, config.overwrite)
        with staged_folder(folder) as tmp:
            result = train(config, into=tmp)
        return dataclasses.replace(result, folder=folder)
    folder = into
    if config.threads:
        torch.set_num_threads(config.threads)
    model, processor = new_organism(config)
    rng = np.random.default_rng(config.seed)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    history = train_contrastive(config, model, processor, rng)
    seconds["contrastive"] = time.perf_counter() - start
    start = time.perf_counter()
    history += train_vqa(config, model, processor, rng)
    seconds["vqa"] = time.perf_counter() - start

    save_portable(model, processor, folder)
    result = TrainResult(folder, pd.DataFrame(history), seconds, machine_record("cpu"))
    result.history.to_csv(folder / "training_log.csv", index=False)
    return result


def machine_record(device: str | torch.device) -> dict[str, Any]:
    """Where a model was trained, for its card."""
    out = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def config_dict(config: OrganismTrainConfig) -> dict[str, Any]:
    """The recipe fields that determine the weights (for the model card)."""
    skip = {"out", "overwrite", "progress", "threads"}
    return {k: v for k, v in asdict(config).items() if k not in skip}
