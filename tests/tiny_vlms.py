"""Tiny VLMs of each family, built offline from their configs and saved with
save_pretrained (tests load them back with from_pretrained, as a real checkpoint)."""

from __future__ import annotations

import torch
import transformers
from transformers import AutoModel

from interp.organism.tiny_llava import make_tokenizer, save_portable

HIDDEN = 32
TRANSFORMERS_4 = int(transformers.__version__.split(".")[0]) < 5


def _tokenizer(named: dict[str, str] | None, family_class: str):
    """The word-level tokenizer; under transformers 4.x as the class the family's processor
    insists on (5 accepts any fast tokenizer). Returns it and the class name to save."""
    tokenizer = make_tokenizer(named)
    if not TRANSFORMERS_4:
        return tokenizer, "PreTrainedTokenizerFast"
    wrapped = getattr(transformers, family_class)(
        tokenizer_object=tokenizer.backend_tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>", **(named or {})},
    )
    return wrapped, family_class


def _llama(vocab: dict[str, int]) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=512,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )


def _gemma(config_cls: type, vocab: dict[str, int], **extra):
    """A 4-layer Gemma decoder config (``GemmaConfig`` or ``Gemma3TextConfig``)."""
    return config_cls(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=len(vocab),
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        **extra,
    )


def build_llava_next(folder, *, image_size: int = 16, patch_size: int = 4) -> str:
    """LLaVA-NeXT: a 16 px CLIP tower (4x4 patches) and pinpoints up to 32x32 px."""
    tokenizer = make_tokenizer()
    vocab = tokenizer.get_vocab()
    vision = _vision(transformers.CLIPVisionConfig, image_size, patch_size)
    pinpoints = [[image_size, 2 * image_size], [2 * image_size, image_size], [2 * image_size] * 2]
    config = transformers.LlavaNextConfig(
        vision_config=vision,
        text_config=_llama(vocab),
        image_token_id=vocab["<image>"],
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    model = transformers.LlavaNextForConditionalGeneration(config).eval()
    processor_cls = getattr(transformers, "LlavaNextImageProcessorPil", None)
    image_processor = (processor_cls or transformers.LlavaNextImageProcessor)(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = transformers.LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return str(save_portable(model, processor, folder))


def _siglip_processor(image_size: int):
    cls = (
        getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor
    )
    return cls(size={"height": image_size, "width": image_size})


def _vision(config_cls: type, image_size: int, patch_size: int):
    """A 2-layer ViT tower config (CLIP, SigLIP, Idefics3/SmolVLM)."""
    return config_cls(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )


def build_paligemma(folder, *, image_size: int = 16, patch_size: int = 4) -> str:
    """PaliGemma: a SigLIP tower (4x4 patches), a linear projector and a Gemma decoder."""
    image_processor = _siglip_processor(image_size)
    image_processor.image_seq_length = (image_size // patch_size) ** 2
    tokenizer, tokenizer_class = _tokenizer(None, "GemmaTokenizerFast")
    processor = transformers.PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer
    )
    vocab = processor.tokenizer.get_vocab()  # the processor adds <image>, <loc....>, <seg...>
    text = _gemma(transformers.GemmaConfig, vocab)
    config = transformers.PaliGemmaConfig(
        vision_config=_vision(transformers.SiglipVisionConfig, image_size, patch_size),
        text_config=text,
        image_token_id=vocab[processor.image_token],
        projection_dim=HIDDEN,
    )
    config.vision_config.projection_dim = HIDDEN
    torch.manual_seed(0)
    model = transformers.PaliGemmaForConditionalGeneration(config).eval()
    return str(save_portable(model, processor, folder, tokenizer_class=tokenizer_class))


GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}


def build_gemma3(folder, *, image_size: int = 16, patch_size: int = 4) -> str:
    """Gemma 3: a SigLIP tower (4x4 patches) pooled to 2x2 image tokens, a Gemma 3 decoder
    with sliding-window and global layers."""
    tokenizer, tokenizer_class = _tokenizer(GEMMA3_TOKENS, "GemmaTokenizerFast")
    vocab = tokenizer.get_vocab()
    pil = getattr(transformers, "Gemma3ImageProcessorPil", None)
    image_processor = (pil or transformers.Gemma3ImageProcessor)(
        size={"height": image_size, "width": image_size}, do_pan_and_scan=False
    )
    processor = transformers.Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4
    )
    text = _gemma(
        transformers.Gemma3TextConfig,
        vocab,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"] * 2,
    )
    config = transformers.Gemma3Config(
        text_config=text,
        vision_config=_vision(transformers.SiglipVisionConfig, image_size, patch_size),
        mm_tokens_per_image=4,
        boi_token_index=vocab[GEMMA3_TOKENS["boi_token"]],
        eoi_token_index=vocab[GEMMA3_TOKENS["eoi_token"]],
        image_token_index=vocab["<image>"],
    )
    torch.manual_seed(0)
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    projector = model.model.multi_modal_projector
    with torch.no_grad():  # initialised to zeros: every image token would enter as zero
        projector.mm_input_projection_weight.normal_(std=0.2)
    return str(
        save_portable(
            model, processor, folder, named_tokens=GEMMA3_TOKENS, tokenizer_class=tokenizer_class
        )
    )


QWEN_TOKENS = {
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}


def build_qwen2_vl(folder, *, version: str = "2", patch_size: int = 4) -> str:
    """Qwen2-VL (``version="2"``) or Qwen2.5-VL (``"2.5"``, attention windows of 16 px):
    4 px patches merged 2x2, an M-RoPE decoder. ``<|image_pad|>`` is the image token."""
    named = {"image_token": "<|image_pad|>", **QWEN_TOKENS}
    tokenizer, tokenizer_class = _tokenizer(named, "Qwen2TokenizerFast")
    vocab = tokenizer.get_vocab()
    pixels = {"patch_size": patch_size, "merge_size": 2, "temporal_patch_size": 2}
    pil = getattr(transformers, "Qwen2VLImageProcessorPil", None)
    image_processor = (pil or transformers.Qwen2VLImageProcessor)(
        min_pixels=16, max_pixels=64 * 64, **pixels
    )
    processor_cls = transformers.Qwen2VLProcessor
    if version == "2.5":
        processor_cls = transformers.Qwen2_5_VLProcessor
    processor = processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=transformers.Qwen2VLVideoProcessor(**pixels),  # needs torchvision
    )
    vision = {"depth": 2, "num_heads": 2, "patch_size": patch_size, "spatial_merge_size": 2}
    if version == "2.5":
        vision.update(
            hidden_size=HIDDEN, out_hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
            window_size=16, fullatt_block_indexes=[1],
        )  # fmt: skip
        config_cls, model_cls = (
            transformers.Qwen2_5_VLConfig,
            transformers.Qwen2_5_VLForConditionalGeneration,
        )
    else:
        vision.update(embed_dim=HIDDEN, hidden_size=HIDDEN)
        config_cls, model_cls = (
            transformers.Qwen2VLConfig,
            transformers.Qwen2VLForConditionalGeneration,
        )
    text = {
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": len(vocab),
        "pad_token_id": vocab["<pad>"],
        "bos_token_id": vocab["<s>"],
        "eos_token_id": vocab["</s>"],
    }
    if TRANSFORMERS_4:
        text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 2, 4]}
    else:
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 2, 4]}
    config = config_cls(
        vision_config=vision,
        text_config=text,
        image_token_id=vocab[named["image_token"]],
        video_token_id=vocab[named["video_token"]],
        vision_start_token_id=vocab[named["vision_start_token"]],
        vision_end_token_id=vocab[named["vision_end_token"]],
    )
    torch.manual_seed(0)
    model = model_cls(config).eval()
    return str(
        save_portable(model, processor, folder, named_tokens=named, tokenizer_class=tokenizer_class)
    )


IDEFICS3_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
}


def build_idefics3(folder, *, smolvlm: bool = False, tile: int = 16, patch_size: int = 4) -> str:
    """Idefics3 (or SmolVLM): 16 px tiles of 4x4 patches, a 2x2 pixel shuffle, images up to
    32 px split into 2x2 tiles plus the global view."""
    prefix = "SmolVLM" if smolvlm else "Idefics3"
    tokenizer, tokenizer_class = _tokenizer(IDEFICS3_TOKENS, "PreTrainedTokenizerFast")
    pil = getattr(transformers, f"{prefix}ImageProcessorPil", None)
    image_processor = (pil or getattr(transformers, f"{prefix}ImageProcessor"))(
        size={"longest_edge": 2 * tile},
        max_image_size={"longest_edge": tile},
        do_image_splitting=True,
    )
    extra = {}
    if smolvlm:
        extra["video_processor"] = transformers.SmolVLMVideoProcessor()  # needs torchvision
    processor = getattr(transformers, f"{prefix}Processor")(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(tile // patch_size) ** 2 // 4,
        **extra,
    )
    vocab = processor.tokenizer.get_vocab()  # the processor adds its image tokens
    vision = _vision(getattr(transformers, f"{prefix}VisionConfig"), tile, patch_size)
    config = getattr(transformers, f"{prefix}Config")(
        vision_config=vision,
        text_config=_llama(vocab),
        scale_factor=2,
        image_token_id=vocab["<image>"],
    )
    torch.manual_seed(0)
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config).eval()
    return str(
        save_portable(
            model, processor, folder, named_tokens=IDEFICS3_TOKENS, tokenizer_class=tokenizer_class
        )
    )


def _image_processor(name: str, **kwargs):
    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls(**kwargs)


def build_encoder(kind: str, folder, side: int = 32, patch: int = 8) -> str:
    """A 2-layer CLIP, SigLIP or DINOv2 (``dinov2_registers``: 2 registers) encoder of
    ``side`` px inputs cut into ``patch`` px patches, saved with its image processor."""
    common = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    if kind == "clip":
        config = transformers.CLIPVisionConfig(
            **common, intermediate_size=64, image_size=side, patch_size=patch
        )
        model = transformers.CLIPVisionModel(config)
        processor = _image_processor(
            "CLIPImageProcessor",
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
        )
    elif kind == "siglip":
        config = transformers.SiglipVisionConfig(
            **common, intermediate_size=64, image_size=side, patch_size=patch
        )
        model = transformers.SiglipVisionModel(config)
        processor = _image_processor("SiglipImageProcessor", size={"height": side, "width": side})
    else:
        registers = kind == "dinov2_registers"
        config_cls = (
            transformers.Dinov2WithRegistersConfig if registers else transformers.Dinov2Config
        )
        extra = {"num_register_tokens": 2} if registers else {}
        config = config_cls(**common, image_size=side, patch_size=patch, **extra)
        model = AutoModel.from_config(config)
        # Hub DINOv2 processors resize to 256 and crop 224; the adapter resizes to the crop.
        processor = _image_processor(
            "BitImageProcessor",
            size={"shortest_edge": side + 8},
            crop_size={"height": side, "width": side},
        )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)
