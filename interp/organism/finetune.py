"""Continue training a built-in-style model: VQA at a complexity level, the vision
encoder frozen or adapted, optionally with the pixel-value-prediction task.

The pixel task (after the PVP study) asks, as a question in the conversation, the value of
one colour channel at one pixel: ``what is the red value at x 37 y 12 ?`` -> ``"4"``, the
channel's value in eighths (0..7, ``value // 32``). Half the locations lie on objects,
half anywhere. Answer words the model's tokenizer lacks (counts above four, the pixel
task's numbers) are added to its word-level vocabulary first, the embeddings grown to match.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.errors import ConfigError
from interp.options import Settings, option, renamed_options
from interp.organism import ORGANISM_NAME
from interp.organism.folders import staged_folder
from interp.organism.training import (
    IMAGE_SIZE,
    encode_dialogues,
    image_questions,
    machine_record,
    model_folder,
    optimise,
    pixels_to_tensor,
    record,
    schedule,
    stage_seed,
)
from interp.stimuli import COMPLEXITY_LEVELS, COUNT_NAMES, StimulusSpec, generate
from interp.stimuli.questions import QA

__all__ = [
    "CHANNELS",
    "FinetuneConfig",
    "FinetuneResult",
    "PIXEL_LEVELS",
    "extend_vocabulary",
    "finetune",
    "pixel_questions",
]

CHANNELS: tuple[str, ...] = ("red", "green", "blue")
PIXEL_LEVELS = 8  # answers "0".."7": a channel's value // 32
_PIXEL_TEMPLATE = "what is the {channel} value at x {x} y {y} ?"
FINETUNE_STAGE = 3  # training stimuli's seeds: stage_seed(seed, 3, step)


@renamed_options(batch="batch_size", device="device_map")
@dataclass
class FinetuneConfig(Settings):
    """``interp organism finetune`` options."""

    out: str = option("folder to save_pretrained the fine-tuned model into", default="finetuned")
    start: str = option(
        "built-in name or save_pretrained folder to start from",
        aliases=("--from",),
        default=ORGANISM_NAME,
    )
    complexity: int = option(
        "complexity level of the training stimuli (1..5)", default=2, choices=COMPLEXITY_LEVELS
    )
    steps: int = option("training steps", default=300, minimum=1)
    batch_size: int = option("images (conversations) per step", default=32, minimum=1)
    lr: float = option("peak learning rate", default=3e-4)
    warmup: int = option("linear warm-up steps", default=30, minimum=0)
    train_encoder: bool = option(
        "adapt the vision encoder too (default: frozen, as in LLaVA's stage 2)", default=False
    )
    pixel_task: bool = option(
        "add pixel-value questions (a channel's value in eighths at an x, y location)",
        default=False,
    )
    pixel_questions: int = option("pixel questions per image with pixel_task", default=4, minimum=1)
    seed: int = option("seed of the training stimuli and questions", default=0, minimum=0)
    eval_images: int = option("held-out images of the card's evaluation", default=500, minimum=1)
    device_map: str = option(
        "where training runs: cpu, cuda or cuda:N (one device: training does not spread a "
        "model over several)",
        default="cpu",
    )
    threads: int | None = option("torch CPU threads (default: torch's)", default=None, minimum=1)
    overwrite: bool = option("replace an existing model folder", default=False)
    progress: bool = option("show a progress bar", default=True)

    def check(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.device_map not in ("cpu", "cuda") and not self.device_map.startswith("cuda:"):
            raise ConfigError(f"device_map must be cpu, cuda or cuda:N, got {self.device_map!r}")

    def recipe(self) -> dict[str, Any]:
        """The fields that determine the weights (for the card)."""
        skip = {"out", "overwrite", "progress", "threads", "device_map", "eval_images"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass
class FinetuneResult:
    folder: Path
    history: pd.DataFrame  # step, loss, accuracy
    seconds: float
    machine: dict[str, Any]


def check_finetune(config: FinetuneConfig) -> Path:
    """The folder ``config.out``, checked before any work with the device: a GPU asked
    for must be there."""
    from interp.models.loading import check_device_map, resolve_model_source

    check_device_map(config.device_map)
    return model_folder(config.out, config.overwrite, resolve_model_source(config.start))


def pixel_questions(
    image: np.ndarray, object_map: np.ndarray, rng: np.random.Generator, n: int
) -> list[QA]:
    """``n`` pixel-value questions about one ``(H, W, 3)`` uint8 image: half at pixels of
    objects (where it has some), half anywhere."""
    height, width = object_map.shape
    on_object = np.argwhere(object_map >= 0)  # (pixels, 2) row, col
    out = []
    for k in range(n):
        if k % 2 == 0 and len(on_object):
            y, x = on_object[rng.integers(len(on_object))]
        else:
            y, x = rng.integers(height), rng.integers(width)
        channel = int(rng.integers(len(CHANNELS)))
        value = int(image[y, x, channel]) * PIXEL_LEVELS // 256
        question = _PIXEL_TEMPLATE.format(channel=CHANNELS[channel], x=int(x), y=int(y))
        out.append(QA(-1, "pixel", question, str(value)))
    return out


def pixel_words(image_size: int) -> list[str]:
    """Every word the pixel questions and answers use."""
    numbers = [str(i) for i in range(max(image_size, PIXEL_LEVELS))]
    return ["value", "x", "y", *CHANNELS, *numbers]


def _unknown(tokenizer: Any, words: list[str]) -> list[str]:
    """The words the tokenizer reads as its unknown token (or as more than one token)."""
    out = []
    for word in dict.fromkeys(words):
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
            out.append(word)
    return out


def extend_vocabulary(model: torch.nn.Module, processor: Any, words: list[str]) -> list[str]:
    """Add the ``words`` the model's word-level tokenizer lacks, at new ids after the
    existing ones (every old id keeps its word), and grow the input and output embeddings
    to match. Returns the words added."""
    tokenizer = processor.tokenizer
    missing = _unknown(tokenizer, words)
    if not missing:
        return []
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"]["type"] != "WordLevel":
        raise ConfigError(
            f"the words {missing} are not in this model's tokenizer, and only a word-level "
            f"tokenizer (the built-in models') can be extended here; start from a built-in-"
            f"style model"
        )
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        path = Path(folder) / "tokenizer.json"
        saved = json.loads(path.read_text())
        vocab = saved["model"]["vocab"]
        first = max(len(tokenizer), max(vocab.values()) + 1)
        for offset, word in enumerate(missing):
            vocab[word] = first + offset
        path.write_text(json.dumps(saved))
        processor.tokenizer = type(tokenizer).from_pretrained(folder)
    still = _unknown(processor.tokenizer, missing)
    if still:
        raise AssertionError(f"the words {still} were not added")
    model.resize_token_embeddings(len(processor.tokenizer))
    return missing


def _dialogues(
    config: FinetuneConfig, step: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[list[QA]]]:
    """One step's images and, per image, its questions in random order."""
    spec = StimulusSpec(
        n_images=config.batch_size,
        image_size=IMAGE_SIZE,
        seed=stage_seed(config.seed, FINETUNE_STAGE, step),
        complexity=config.complexity,
    )
    stimuli = generate(spec)
    dialogues = []
    for i, objects in enumerate(stimuli.objects):
        turns = image_questions(objects, rng)
        if config.pixel_task:
            turns += pixel_questions(
                stimuli.images[i], stimuli.object_map[i], rng, config.pixel_questions
            )
            turns = [turns[k] for k in rng.permutation(len(turns))]
        dialogues.append(turns)
    return stimuli.images, dialogues


def finetune(config: FinetuneConfig, into: Path | None = None) -> FinetuneResult:
    """Continue training ``config.start`` and ``save_pretrained`` it into ``config.out``
    (written apart and moved there when done), or into the folder ``into`` as it is."""
    from interp.adapters import adapter_for
    from interp.models.loading import load_model
    from interp.organism.tiny_llava import save_portable

    if into is None:
        folder = check_finetune(config)
        with staged_folder(folder) as tmp:
            result = finetune(config, into=tmp)
        return dataclasses.replace(result, folder=folder)
    folder = into
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # the new words' embeddings are drawn at random
    loaded = load_model(config.start)
    model, processor = loaded.model.float(), loaded.processor
    if not hasattr(getattr(model, "model", None), "vision_tower"):
        raise ConfigError(
            f"{config.start!r} is a {loaded.adapter.family} model; fine-tuning needs a "
            f"LLaVA-style model with a vision tower (a built-in organism)"
        )
    words = list(COUNT_NAMES[: COMPLEXITY_LEVELS[config.complexity].objects[1]])
    if config.pixel_task:
        words += pixel_words(IMAGE_SIZE)
    added = extend_vocabulary(model, processor, words)
    device = torch.device(config.device_map)
    model.to(device).train()
    tower = model.model.vision_tower
    if config.train_encoder:
        tower.train().requires_grad_(True)
    else:
        tower.eval().requires_grad_(False)
    adapter = adapter_for(model, processor)
    n_tokens = adapter.patch_grid[0] * adapter.patch_grid[1]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(config.warmup, config.steps))
    rng = np.random.default_rng(config.seed)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="fine-tune", disable=not config.progress)
    for step in bar:
        images, dialogues = _dialogues(config, step, rng)
        batch = encode_dialogues(processor, adapter.default_prompt, dialogues, n_tokens)
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch, pixel_values=pixels_to_tensor(images, processor).to(device))
        optimise(out.loss, params, opt, sched)
        with torch.no_grad():  # answers right, over every turn
            answered = batch["labels"][:, 1:] != -100
            hits = (out.logits[:, :-1].argmax(-1) == batch["labels"][:, 1:])[answered]
        record(history, bar, "finetune", step, out.loss, hits)
    seconds = time.perf_counter() - start
    model.eval().requires_grad_(True).to("cpu")
    save_portable(model, processor, folder)
    machine = machine_record(device)
    result = FinetuneResult(folder, pd.DataFrame(history), seconds, machine)
    result.history.to_csv(folder / "training_log.csv", index=False)
    (folder / "finetune.json").write_text(
        json.dumps(
            {
                "recipe": config.recipe(),
                "added_words": added,
                "seconds": seconds,
                "machine": machine,
            },
            indent=2,
        )
    )
    return result


def evaluate_pixels(
    loaded: Any,
    *,
    n_images: int = 250,
    seed: int = 7_777,
    complexity: int = 2,
    batch_size: int = 64,
) -> dict[str, Any]:
    """The pixel task's held-out accuracy (two questions per image, one on an object),
    as a row of :func:`interp.organism.evaluation.evaluate`'s table; ``mean_error`` is
    the mean distance in eighths where the answer is a number."""
    from interp.organism.evaluation import answer

    spec = StimulusSpec(n_images=n_images, image_size=IMAGE_SIZE, seed=seed, complexity=complexity)
    stimuli = generate(spec)
    rng = np.random.default_rng(seed)
    qas = [
        QA(i, qa.kind, qa.question, qa.answer)
        for i in range(len(stimuli))
        for qa in pixel_questions(stimuli.images[i], stimuli.object_map[i], rng, 2)
    ]
    predicted: list[str] = []
    for start in range(0, len(qas), batch_size):
        chunk = qas[start : start + batch_size]
        images = stimuli.images[[qa.image for qa in chunk]]
        predicted += answer(loaded, images, [qa.question for qa in chunk])
    truth = np.array([int(qa.answer) for qa in qas])
    said = np.array([int(p) if p.isdigit() else -100 for p in predicted])
    numeric = said >= 0
    return {
        "question": "pixel",
        "accuracy": float((said == truth).mean()),
        "chance": float(np.bincount(truth).max() / len(truth)),
        "n": len(qas),
        "mean_error": float(np.abs(said - truth)[numeric].mean()) if numeric.any() else np.nan,
    }
