"""Tiny VLMs of each family, built offline from their configs and saved with
save_pretrained (tests load them back with from_pretrained, as a real checkpoint)."""

from __future__ import annotations

import torch
import transformers

from interp.tiny_llava import make_tokenizer, save_portable

HIDDEN = 32


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


def build_llava_next(folder, *, image_size: int = 16, patch_size: int = 4) -> str:
    """LLaVA-NeXT: a 16 px CLIP tower (4x4 patches) and pinpoints up to 32x32 px."""
    tokenizer = make_tokenizer()
    vocab = tokenizer.get_vocab()
    vision = transformers.CLIPVisionConfig(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
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


def _siglip(image_size: int, patch_size: int) -> transformers.SiglipVisionConfig:
    return transformers.SiglipVisionConfig(
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
    processor = transformers.PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=make_tokenizer()
    )
    vocab = processor.tokenizer.get_vocab()  # the processor adds <image>, <loc....>, <seg...>
    text = transformers.GemmaConfig(
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
    )
    config = transformers.PaliGemmaConfig(
        vision_config=_siglip(image_size, patch_size),
        text_config=text,
        image_token_id=vocab[processor.image_token],
        projection_dim=HIDDEN,
    )
    config.vision_config.projection_dim = HIDDEN
    torch.manual_seed(0)
    model = transformers.PaliGemmaForConditionalGeneration(config).eval()
    return str(save_portable(model, processor, folder))


GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}


def build_gemma3(folder, *, image_size: int = 16, patch_size: int = 4) -> str:
    """Gemma 3: a SigLIP tower (4x4 patches) pooled to 2x2 image tokens, a Gemma 3 decoder
    with sliding-window and global layers."""
    tokenizer = make_tokenizer(GEMMA3_TOKENS)
    vocab = tokenizer.get_vocab()
    pil = getattr(transformers, "Gemma3ImageProcessorPil", None)
    image_processor = (pil or transformers.Gemma3ImageProcessor)(
        size={"height": image_size, "width": image_size}, do_pan_and_scan=False
    )
    processor = transformers.Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4
    )
    text = transformers.Gemma3TextConfig(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=len(vocab),
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"] * 2,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )
    config = transformers.Gemma3Config(
        text_config=text,
        vision_config=_siglip(image_size, patch_size),
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
    return str(save_portable(model, processor, folder, named_tokens=GEMMA3_TOKENS))
