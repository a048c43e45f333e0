"""Score a LLaVA-style model's one-word answers on held-out stimuli, per question type."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from interp.models.loading import LoadedModel
from interp.stimuli import StimulusSpec, generate
from interp.stimuli.questions import QUESTION_TYPES, questions_for

__all__ = ["EVAL_SEED", "EVAL_IMAGES", "evaluate", "answer"]

# Held-out: training stimuli use seeds (seed * 10 + stage) * 1e6 + step, never this one.
EVAL_SEED = 7_777
EVAL_IMAGES = 500


def answer(loaded: LoadedModel, images: np.ndarray, questions: list[str]) -> list[str]:
    """The model's next word after each prompt (greedy, over the whole vocabulary).

    Inputs go through the model's own processor with its default prompt, exactly as a
    user's question would.
    """
    adapter = loaded.adapter
    prompts = [adapter.default_prompt(q) for q in questions]
    for prompt in prompts:
        adapter.check_prompt(prompt)
    inputs = loaded.processor(images=list(images), text=prompts, padding=True, return_tensors="pt")
    inputs = loaded.move_inputs(inputs)
    mask = inputs["attention_mask"]  # (batch, seq)
    with torch.no_grad():
        logits = loaded.model(**inputs).logits  # (batch, seq, vocab)
    rows = torch.arange(len(prompts))
    if loaded.processor.tokenizer.padding_side == "left":  # every prompt ends at the end
        last = torch.full((len(prompts),), mask.shape[1] - 1)
    else:
        last = mask.sum(1).cpu() - 1
    ids = logits[rows, last].argmax(-1).tolist()
    return loaded.processor.tokenizer.convert_ids_to_tokens(ids)


def evaluate(
    loaded: LoadedModel,
    *,
    n_images: int = EVAL_IMAGES,
    seed: int = EVAL_SEED,
    max_objects: int = 4,
    complexity: int | None = None,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Accuracy per question type on ``n_images`` held-out images.

    ``max_objects=1`` asks about lone objects only: no description has to be bound to one
    of several objects, which separates perception from binding. ``complexity`` draws
    the images at that level of the dial instead (its own object counts).

    Columns: ``question, accuracy, chance, n``; ``chance`` is the share of the most
    frequent right answer of that type (what always giving one answer would score).
    """
    size = loaded.adapter.native_image_size
    counts = {"max_objects": max_objects} if complexity is None else {"complexity": complexity}
    spec = StimulusSpec(n_images=n_images, image_size=size, seed=seed, **counts)
    stimuli = generate(spec)
    qas = questions_for(stimuli, np.random.default_rng(seed))
    predicted: list[str] = []
    for start in range(0, len(qas), batch_size):
        chunk = qas[start : start + batch_size]
        images = stimuli.images[[qa.image for qa in chunk]]
        predicted += answer(loaded, images, [qa.question for qa in chunk])
    table = pd.DataFrame(
        {
            "question": [qa.kind for qa in qas],
            "answer": [qa.answer for qa in qas],
            "predicted": predicted,
        }
    )
    rows = []
    for kind in QUESTION_TYPES:
        part = table[table["question"] == kind]
        rows.append(
            {
                "question": kind,
                "accuracy": float((part["answer"] == part["predicted"]).mean()),
                "chance": float(part["answer"].value_counts(normalize=True).iloc[0]),
                "n": len(part),
            }
        )
    return pd.DataFrame(rows)
