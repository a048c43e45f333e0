"""The model's answers under experimental conditions: what it *uses*, beside what the
probes say is decodable.

Each question of a data set (:meth:`interp.sources.ImageSet.questions`: the built-in
model's question types on the stimuli, the ``question`` / ``answer`` columns of a label
table) is put to the model with its image, under every condition, in one forward pass
per batch; the next-token logits after the prompt give the model's answer (greedy, over
the whole vocabulary), the log-probability of the right answer and its margin over the
best wrong option of the same question type. An answer is scored by its first token
(every answer of the built-in model is one token; for a real model, options whose first
tokens coincide are refused).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.errors import ConfigError
from interp.experiments.interventions import (
    BatchContext,
    check_conditions,
    make_intervention,
    prepare,
)
from interp.models.loading import LoadedModel
from interp.models.tracing import capture_tokens
from interp.names import as_names
from interp.sources import ImageSet, Question

__all__ = ["ANSWER_COLUMNS", "answer_token_ids", "answerable", "scorable", "score_answers"]

# One row per question and condition.
ANSWER_COLUMNS: tuple[str, ...] = (
    "condition",
    "image",
    "question_type",
    "question",
    "answer",
    "predicted",
    "correct",
    "logprob",
    "margin",
)


def answer_token_ids(tokenizer, words: Sequence[str], what: str = "answers") -> dict[str, int]:
    """The first token id of each answer word, as the model would write it after the
    prompt; a ConfigError when two words start with the same token (no margin between
    them could be read off one next-token distribution). ``what`` names the words in
    messages."""
    ids: dict[str, int] = {}
    unknown = getattr(tokenizer, "unk_token_id", None)
    for word in dict.fromkeys(words):
        found = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not found or (unknown is not None and found[0] == unknown):
            raise ConfigError(
                f"{what}: {word!r} is no word of this model's tokenizer, so it cannot be "
                f"scored; ask questions whose answers the model knows (a built-in model "
                f"learns new answer words with interp organism finetune)"
            )
        ids[word] = int(found[0])
    first: dict[int, str] = {}
    for word, token in ids.items():
        if token in first:
            raise ConfigError(
                f"the {what} {first[token]!r} and {word!r} start with the same token "
                f"({token}); they are scored by their first token, so they must differ in "
                f"their first word piece"
            )
        first[token] = word
    return ids


def answerable(tokenizer, questions: Sequence[Question]) -> list[Question]:
    """The questions whose right answer is a word of the model's tokenizer, each with the
    options it knows; the others are left out with a warning that says how many (e.g. the
    organism has no count words above four for the complexity dial's busier levels)."""
    words = list(dict.fromkeys(w for q in questions for w in (q.answer, *q.options)))
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    if unknown_id is None:
        return list(questions)
    unknown = {
        w for w in words if tokenizer(w, add_special_tokens=False)["input_ids"][:1] == [unknown_id]
    }
    if not unknown:
        return list(questions)
    kept = [
        dataclasses.replace(q, options=tuple(w for w in q.options if w not in unknown))
        for q in questions
        if q.answer not in unknown
    ]
    if not kept:
        raise ConfigError(
            f"no question can be scored: their answers {sorted(unknown)} are no words of this "
            f"model's tokenizer (a built-in model learns them with interp organism finetune)"
        )
    warnings.warn(
        f"{len(questions) - len(kept)} of {len(questions)} questions left out: their answers "
        f"({', '.join(sorted(unknown))}) are no words of this model's tokenizer, so it cannot "
        f"give them (interp organism finetune teaches a built-in model the words)",
        stacklevel=3,
    )
    return kept


def scorable(loaded: LoadedModel, questions: Sequence[Question]) -> list[Question]:
    """The ``questions`` this model can be scored on (:func:`answerable`); a ConfigError
    saying why when there are none: an encoder without a language model, a data set
    without questions, answers that are no words of its tokenizer, or options whose first
    tokens coincide. Checked before any work (``interp run`` skips its answers with
    this reason)."""
    adapter = loaded.adapter
    if not adapter.has_language_model:
        raise ConfigError(f"a {adapter.family} encoder gives no answers; use a VLM")
    if not questions:
        raise ConfigError(
            "the data set has no questions: the built-in stimuli have the organism's "
            "question types; a label table needs 'question' and 'answer' columns"
        )
    tokenizer = loaded.processor.tokenizer
    kept = answerable(tokenizer, questions)
    answer_token_ids(tokenizer, [w for q in kept for w in (q.answer, *q.options)])
    return kept


def score_answers(
    loaded: LoadedModel,
    data: ImageSet,
    *,
    conditions: str | Sequence[str] | None = None,
    questions: Sequence[Question] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Every question of ``data`` (or ``questions``) answered under every condition
    (default: the baseline only): one row per question and condition, columns
    :data:`ANSWER_COLUMNS`. ``logprob`` is the log-probability of the right answer's
    first token; ``margin`` its logit minus the largest logit of the type's other
    options (NaN where a type has one option); ``correct``, whether the most likely next
    token of the whole vocabulary is the right answer's."""
    adapter = loaded.adapter
    questions = scorable(loaded, list(questions) if questions is not None else data.questions())
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    names = list(dict.fromkeys(["baseline", *(as_names(conditions, "conditions") or [])]))
    names = check_conditions(names, adapter, data.distinct_sizes)
    tokenizer = loaded.processor.tokenizer
    ids = answer_token_ids(tokenizer, [w for q in questions for w in (q.answer, *q.options)])
    options = {q.kind: [ids[w] for w in q.options] for q in questions}
    interventions = {c: make_intervention(c, seed=seed) for c in names}
    prepare(interventions, loaded, data, adapter.default_prompt(questions[0].question), batch_size)

    order = sorted(range(len(questions)), key=lambda k: questions[k].image)
    sizes = data.sizes
    rows: list[dict] = []
    bar = tqdm(total=len(order) * len(names), unit="answer", disable=not progress)
    with bar:
        for start in range(0, len(order), batch_size):
            chunk = [questions[k] for k in order[start : start + batch_size]]
            passes = adapter.batch_groups(sizes[[q.image for q in chunk]])
            for group in ([chunk[k] for k in members] for members in passes):
                index = [q.image for q in group]
                images = data.crops(index)
                prompts = [adapter.default_prompt(q.question) for q in group]
                context = BatchContext(
                    object_maps=data.crop_maps(index), indices=np.asarray(index), prompt=prompts
                )
                for name, intervention in interventions.items():
                    logits = capture_tokens(
                        loaded,
                        images,
                        [],
                        prompt=prompts,
                        intervention=intervention,
                        context=context,
                        logits=True,
                    ).logits  # (group, vocab)
                    rows += _scored(name, group, logits, ids, options, tokenizer)
                    bar.update(len(group))
    return pd.DataFrame(rows, columns=list(ANSWER_COLUMNS))


def _scored(
    condition: str,
    group: list[Question],
    logits: torch.Tensor,
    ids: dict[str, int],
    options: dict[str, list[int]],
    tokenizer,
) -> list[dict]:
    """The rows of one batch's answers: ``logits`` ``(batch, vocab)``."""
    logprobs = torch.log_softmax(logits.double(), dim=-1)  # (batch, vocab)
    best = logits.argmax(-1).tolist()
    out = []
    for row, (q, top) in enumerate(zip(group, best, strict=True)):
        right = ids[q.answer]
        wrong = [t for t in options[q.kind] if t != right]
        margin = float(logits[row, right] - logits[row, wrong].max()) if wrong else float("nan")
        out.append(
            {
                "condition": condition,
                "image": q.image,
                "question_type": q.kind,
                "question": q.question,
                "answer": q.answer,
                "predicted": tokenizer.decode([top]).strip(),
                "correct": top == right,
                "logprob": float(logprobs[row, right]),
                "margin": margin,
            }
        )
    return out
