"""The organism's model card: written beside the weights from measured numbers only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from interp.organism.evaluation import EVAL_IMAGES, EVAL_SEED
from interp.stimuli.questions import POSITION_MARGIN

__all__ = ["TARGETS", "write_card", "write_finetune_card", "read_card_metrics", "METRICS_FILE"]

# Held-out accuracy each question type must reach (the quality bar).
TARGETS: dict[str, float] = {
    "color": 0.95,
    "shape": 0.90,
    "left_right": 0.90,
    "top_bottom": 0.90,
    "size": 0.80,
    "count": 0.80,
}
METRICS_FILE = "eval_metrics.json"


def _table(metrics: pd.DataFrame) -> str:
    lines = [
        "| question | accuracy | chance | target | met | n |",
        "|---|---|---|---|---|---|",
    ]
    for row in metrics.itertuples():
        target = TARGETS.get(row.question)
        met = "yes" if target is not None and row.accuracy >= target else "no"
        lines.append(
            f"| {row.question} | {row.accuracy:.3f} | {row.chance:.3f} | "
            f"{target:.2f} | {met} | {row.n} |"
        )
    return "\n".join(lines)


def _layer_words(layer: int) -> str:
    return {-1: "the last layer", -2: "the penultimate layer"}.get(layer, f"layer {layer}")


def write_card(
    folder: Path,
    *,
    recipe: dict[str, Any],
    seconds: dict[str, float],
    machine: dict[str, Any],
    metrics: pd.DataFrame,
    single_object_metrics: pd.DataFrame,
    n_parameters: int,
    feature_layer: int = -1,
    notes: str = "",
) -> Path:
    """Write ``README.md`` (the card) and ``eval_metrics.json`` into ``folder``."""
    folder = Path(folder)
    (folder / METRICS_FILE).write_text(
        json.dumps(
            {
                "eval_seed": EVAL_SEED,
                "eval_images": EVAL_IMAGES,
                "metrics": metrics.to_dict(orient="records"),
                "single_object_metrics": single_object_metrics.to_dict(orient="records"),
                "recipe": recipe,
                "seconds": seconds,
                "machine": machine,
                "n_parameters": n_parameters,
            },
            indent=2,
        )
    )
    total_min = sum(seconds.values()) / 60
    missed = [q for q, t in TARGETS.items() if float(metrics.set_index("question").accuracy[q]) < t]
    card = f"""# vlm-interp organism: a tiny LLaVA trained on synthetic shapes

A model organism for interpretability: small enough to run in seconds on a laptop,
trained so that its internals mean something, with answers that can be scored.

## Architecture
Exactly the classes of `llava-hf/llava-1.5-7b-hf`, so the toolkit reaches it through the
same code path: `LlavaForConditionalGeneration` with a CLIP vision encoder
({recipe["vision_layers"]} layers, width {recipe["hidden_size"]}, 64x64 px input,
8x8 px patches -> 64 image tokens, features from {_layer_words(feature_layer)}, CLS
dropped),
LLaVA's two-layer MLP projector, and a Llama decoder ({recipe["lm_layers"]} layers,
width {recipe["hidden_size"]}); a word-level tokenizer and a `LlavaProcessor` with a
LLaVA-1.5 chat template (`USER: <image>\\n{{question}} ASSISTANT:`).
{n_parameters / 1e6:.2f} M parameters, float32.

## Training data
Synthetic images from `interp.stimuli` (1-4 flat shapes on white; 5 shapes, 7 colors,
3 sizes), drawn fresh at every step from seeds `(seed * 10 + stage) * 1e6 + step`.
Stage 1 captions name the object count and each object's size, color, shape and
quadrant; each fresh image in a batch is followed by a *twin* that differs in one fact
(one object's shape, the image mirrored left to right, or two objects' colors swapped),
with its caption changed to match, so that telling captions apart needs exactly the
facts a random batch lets an encoder ignore (`interp.organism.twins`).
Stage 2 asks, of each image, every question type that can be asked, each about a
random object referred to by a description no other object in the image fits:
color, shape, size, count (1-4), left or right, top or bottom (position questions only
for objects at least {POSITION_MARGIN:.4g} of the image side off the midline). The
questions of one image form one multi-turn conversation, as in LLaVA's instruction data
(`USER: <image>\\n{{q1}} ASSISTANT: {{a1}} USER: {{q2}} ...`); answers are one word.

## Recipe (seed {recipe["seed"]})
1. Vision encoder alone, CLIP-style contrastive loss against the captions (a 2-layer
   CLIP text encoder, discarded afterwards), the image embedded as the mean of its patch
   tokens (CLS left out: the tokens LLaVA passes on must carry the caption's facts):
   {recipe["clip_steps"]} steps, batch
   {recipe["clip_batch"]}, AdamW, peak lr {recipe["clip_lr"]}, {recipe["warmup"]} warm-up
   steps then cosine decay.
2. Encoder frozen; projector and language model (from scratch) on the VQA data, loss on
   every answer token: {recipe["vqa_steps"]} steps, {recipe["vqa_batch"]} images
   (conversations) per batch, peak lr {recipe["vqa_lr"]}.

Reproduce: `interp organism train --out DIR --seed {recipe["seed"]}` (CPU).
Training took {total_min:.1f} min ({seconds.get("contrastive", 0) / 60:.1f} + \
{seconds.get("vqa", 0) / 60:.1f}) on {machine.get("cpu_count")} CPU cores
({machine.get("torch_threads")} torch threads; {machine.get("platform")};
torch {machine.get("torch")}).

## Held-out accuracy
From `interp organism eval` on {EVAL_IMAGES} new images (seed {EVAL_SEED}), one
question of each type per image where it can be asked; greedy next word over the whole
vocabulary. Chance = always giving the most frequent right answer of that type.

{_table(metrics)}

{"All targets met." if not missed else "Targets missed: " + ", ".join(missed) + "."}

The same on {EVAL_IMAGES} images holding one object each
(`interp organism eval --max-objects 1`): no description has to be bound to one of
several objects, so what fails here is perception, not binding.

{_table(single_object_metrics)}
{notes}
"""
    path = folder / "README.md"
    path.write_text(card)
    return path


def read_card_metrics(folder: Path, key: str = "metrics") -> pd.DataFrame:
    """The card's recorded table: ``metrics`` or ``single_object_metrics``."""
    data = json.loads((Path(folder) / METRICS_FILE).read_text())
    return pd.DataFrame(data[key])


def write_finetune_card(
    folder: Path,
    recipe: dict,
    seconds: float,
    machine: dict,
    metrics: pd.DataFrame,
) -> None:
    """``README.md`` and ``eval_metrics.json`` of a fine-tuned model: where it started,
    the recipe, time and machine, and held-out accuracy."""
    folder = Path(folder)
    (folder / METRICS_FILE).write_text(
        json.dumps(
            {
                "eval_seed": EVAL_SEED,
                "metrics": metrics.to_dict(orient="records"),
                "recipe": recipe,
                "seconds": seconds,
                "machine": machine,
            },
            indent=2,
            default=float,
        )
    )
    encoder = "adapted (trained)" if recipe["train_encoder"] else "frozen"
    pixel = ", with the pixel-value task" if recipe["pixel_task"] else ""
    flags = " --train-encoder" if recipe["train_encoder"] else ""
    flags += " --pixel-task" if recipe["pixel_task"] else ""
    where = machine.get("gpu") or f"{machine['cpu_count']} CPU cores"
    rows = ["| images | question | accuracy | chance | n |", "|---|---|---|---|---|"]
    rows += [
        f"| {r.images} | {r.question} | {r.accuracy:.3f} | {r.chance:.3f} | {r.n} |"
        for r in metrics.itertuples()
    ]
    table = "\n".join(rows)
    (folder / "README.md").write_text(
        f"""# vlm-interp organism, fine-tuned from `{recipe["start"]}`

VQA on stimuli of complexity {recipe["complexity"]}, the vision encoder {encoder}{pixel}:
{recipe["steps"]} steps of {recipe["batch_size"]} images, AdamW, peak lr {recipe["lr"]},
{recipe["warmup"]} warm-up steps then cosine decay, seed {recipe["seed"]}.

Reproduce: `interp organism finetune --from {recipe["start"]} --out DIR --complexity \
{recipe["complexity"]} --steps {recipe["steps"]}{flags}`.
Took {seconds / 60:.1f} min on {where} ({machine["torch_threads"]} torch threads,
torch {machine["torch"]}).

## Held-out accuracy
Seed {EVAL_SEED}; greedy next word over the whole vocabulary; chance = the most frequent
right answer's share. The pixel task's answer is a channel's value in eighths (0..7).

{table}
"""
    )
