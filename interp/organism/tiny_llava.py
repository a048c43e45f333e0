"""A tiny random-weight LLaVA built offline from configs: the default model for now.

It has exactly the classes of a real LLaVA-1.5 checkpoint (``LlavaForConditionalGeneration``
with a CLIP vision tower, an MLP projector and a Llama decoder; a ``LlavaProcessor`` with a
CLIP image processor and a word-level tokenizer), is saved with ``save_pretrained`` and is
always loaded back with ``from_pretrained(folder)``: the path a real checkpoint takes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from interp.stimuli import CELL_NAMES, COLORS, COUNT_NAMES, SHAPES, SIZES

__all__ = [
    "CHAT_TEMPLATE",
    "TINY_LLAVA_NAME",
    "build_tiny_llava",
    "default_model_dir",
    "make_tiny_llava",
    "make_processor",
    "make_tokenizer",
    "save_portable",
]

TINY_LLAVA_NAME = "tiny-llava"
_IMAGE_TOKEN = "<image>"
_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", _IMAGE_TOKEN]
_WORDS = (
    "user assistant : ? . , what is the of in on at or image picture describe color shape "
    "size how many objects object are there where first left right top bottom middle center "
    "yes no a an one two three four"
).split()

# LLaVA-1.5 style: "USER: <image>\n{text} ASSISTANT:"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _vocabulary() -> list[str]:
    words = list(_SPECIALS) + _WORDS + list(COLORS) + list(SHAPES) + list(SIZES) + list(COUNT_NAMES)
    words += [w for name in CELL_NAMES for w in name.split("-")]
    return list(dict.fromkeys(words))  # de-duplicated, order kept


def make_tokenizer(named: dict[str, str] | None = None, words: list[str] | None = None):
    """The word-level tokenizer over the stimuli's vocabulary (``<image>`` is special).

    ``named`` adds special tokens the processor reads by name (e.g. Gemma 3's
    ``{"boi_token": "<start_of_image>"}``); ``image_token`` is always ``<image>``.
    ``words`` replaces the vocabulary (e.g. one without the answer words: a model that
    cannot answer the stimuli's questions).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    named = {"image_token": _IMAGE_TOKEN, **(named or {})}
    specials = list(dict.fromkeys([*_SPECIALS, *named.values()]))
    vocabulary = _vocabulary() if words is None else list(words)
    vocab = {w: i for i, w in enumerate(list(dict.fromkeys(specials + vocabulary)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Matched whole before pre-tokenisation (transformers 4.x would split "</s>" otherwise).
    tok.add_special_tokens(specials)
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=named,
    )


def _image_processor(image_size: int):
    try:  # transformers >= 5: the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers 4.x: CLIPImageProcessor is PIL-based
        from transformers import CLIPImageProcessor as ImageProcessor
    return ImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def make_tiny_llava(
    *,
    seed: int = 0,
    image_size: int = 64,
    patch_size: int = 8,
    vision_layers: int = 4,
    lm_layers: int = 8,
    hidden_size: int = 64,
    lm_hidden_size: int | None = None,
    chat_template: bool = True,
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str = "default",
    words: list[str] | None = None,
) -> Path:
    """A seeded tiny LLaVA and its processor, in memory: ``(model, processor)``.
    ``hidden_size`` is the vision tower's width, ``lm_hidden_size`` the LM's (default:
    the same); ``words``, the tokenizer's vocabulary (default: the stimuli's words)."""
    lm_hidden = lm_hidden_size or hidden_size
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    tokenizer = make_tokenizer(words=words)
    vocab = tokenizer.get_vocab()
    vision = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=vision_layers,
        num_attention_heads=max(1, hidden_size // 32),
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden_size,
    )
    text = LlamaConfig(
        hidden_size=lm_hidden,
        intermediate_size=lm_hidden * 4,
        num_hidden_layers=lm_layers,
        num_attention_heads=max(1, lm_hidden // 32),
        num_key_value_heads=max(1, lm_hidden // 32),
        vocab_size=len(vocab),
        max_position_embeddings=512,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=vocab[_IMAGE_TOKEN],
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    processor = make_processor(
        image_size, patch_size, vision_feature_select_strategy, chat_template, tokenizer
    )
    return model, processor


def make_processor(
    image_size: int,
    patch_size: int,
    vision_feature_select_strategy: str = "default",
    chat_template: bool = True,
    tokenizer: Any = None,
) -> Any:
    """A ``LlavaProcessor`` for a LLaVA of this image and patch size: CLIP preprocessing
    and the word-level tokenizer (whose ids a model of any vocabulary size accepts)."""
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=_image_processor(image_size),
        tokenizer=tokenizer if tokenizer is not None else make_tokenizer(),
        patch_size=patch_size,
        vision_feature_select_strategy=vision_feature_select_strategy,
        num_additional_image_tokens=1,  # the CLS token the vision tower adds
        chat_template=CHAT_TEMPLATE if chat_template else None,
    )


def save_portable(
    model: torch.nn.Module,
    processor: Any,
    folder: str | os.PathLike,
    named_tokens: dict[str, str] | None = None,
    tokenizer_class: str = "PreTrainedTokenizerFast",
) -> Path:
    """``save_pretrained`` model and processor so that transformers 4.57 and 5 both load them.

    transformers 5 records its tokenizer class as ``TokenizersBackend``, unknown to 4.x;
    ``PreTrainedTokenizerFast`` names the same fast tokenizer in both. It also writes
    ``extra_special_tokens`` as a list, which 4.x reads as a name -> token mapping; both
    read ``{"image_token": "<image>"}`` (plus ``named_tokens``); ``tokenizer_class`` names
    another class where a processor insists on one (transformers 4.x). And it saves the CLIP
    tower's weights as ``vision_tower.<name>``, where 4.x expects
    ``vision_tower.vision_model.<name>`` (the hub layout, which transformers 5 converts on
    load).
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for weights in folder.glob("*.safetensors"):
        state = load_file(weights)
        save_file({_hub_key(k): v for k, v in state.items()}, weights, metadata={"format": "pt"})
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = tokenizer_class
    config["extra_special_tokens"] = {"image_token": _IMAGE_TOKEN, **(named_tokens or {})}
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _hub_key(key: str) -> str:
    prefix, legacy = "vision_tower.", "vision_tower.vision_model."
    if key.startswith(prefix) and not key.startswith(legacy):
        return legacy + key[len(prefix) :]
    return key


def build_tiny_llava(folder: str | os.PathLike, **kwargs) -> Path:
    """``make_tiny_llava(**kwargs)`` saved with ``save_pretrained`` into ``folder``."""
    model, processor = make_tiny_llava(**kwargs)
    return save_portable(model, processor, folder)


def default_model_dir() -> Path:
    """Where the built-in model is materialised (``$VLM_INTERP_HOME`` or the user cache)."""
    root = os.environ.get("VLM_INTERP_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vlm-interp"
    )
    return Path(root) / f"{TINY_LLAVA_NAME}-seed0"
