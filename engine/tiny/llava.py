"""Tiny random LLaVA-NeXT and LLaVA-OneVision checkpoints (LLaVA 1.5 is built from its real
files by `engine.tiny.hub`).

Each `build_*` function writes a complete checkpoint into an empty folder with
`save_pretrained`; called only by `engine.tiny.ensure_tiny`, which owns caching.
The NeXT text side is a tiny Mistral with a Llama-3-style byte-level tokenizer (bos prepended
by the tokenizer); OneVision pairs SigLIP with a tiny Qwen2, as the real one does, and uses the
chat template transformers' conversion script writes (from the real hub files' folder).
"""

from __future__ import annotations

from pathlib import Path

from engine.tiny.common import (
    decoder_config,
    llama_style_tokenizer,
    qwen_style_tokenizer,
    save_checkpoint,
    seed_everything,
)
from engine.tiny.hub import LLAVA_ONEVISION_TEMPLATE, reconstructed_template
from engine.tiny.sizes import VISION_SIZES

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"

# LLaVA-NeXT (Mistral) format: "[INST] <image>\n... [/INST]"; the prompt ends at [/INST].
MISTRAL_TEMPLATE = """\
{%- macro render(message) -%}
{%- if message.content is string -%}{{ message.content }}
{%- else -%}
{%- for part in message.content if part.type == 'image' -%}{{ '<image>\\n' }}{%- endfor -%}
{%- for part in message.content if part.type == 'text' -%}
{{ (' ' if not loop.first else '') + part.text }}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
{%- if message.role == 'user' -%}{{ '[INST] ' + render(message) + ' [/INST]' }}
{%- elif message.role == 'assistant' -%}{{ ' ' + render(message) + '</s>' }}
{%- else -%}{{ render(message) + '\\n\\n' }}
{%- endif -%}
{%- endfor -%}
"""

def _clip_vision_config(image_size: int, patch_size: int) -> dict:
    return {
        "model_type": "clip_vision_model",
        **VISION_SIZES,
        "image_size": image_size,
        "patch_size": patch_size,
        "projection_dim": 32,
    }


def build_llava_next(folder: Path) -> None:
    """LlavaNextForConditionalGeneration: CLIP ViT + tiny Mistral, any-resolution tiling."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = llama_style_tokenizer([IMAGE_TOKEN], MISTRAL_TEMPLATE)
    image_size, patch_size = 32, 8
    # Tiles of the base resolution, as the real grid is built from 336 px tiles.
    pinpoints = [[32, 64], [64, 32], [64, 64]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=MISTRAL_TEMPLATE,
    )
    text_config = decoder_config("mistral", tokenizer)
    text_config["sliding_window"] = None
    config = LlavaNextConfig(
        vision_config=_clip_vision_config(image_size, patch_size),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=pinpoints,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    seed_everything()
    model = LlavaNextForConditionalGeneration(config).eval()
    save_checkpoint(folder, model, processor, tokenizer, [tokenizer.eos_token])


def build_llava_onevision(folder: Path) -> None:
    """LlavaOnevisionForConditionalGeneration: SigLIP ViT + tiny Qwen2, any-resolution tiling."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Tokenizer,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    template = reconstructed_template(LLAVA_ONEVISION_TEMPLATE)
    tokenizer = qwen_style_tokenizer(
        Qwen2Tokenizer, PRETOKENIZE_REGEX, [IMAGE_TOKEN, VIDEO_TOKEN], template
    )
    image_size, patch_size = 32, 8
    # Every tiling up to 3 x 3 tiles, as the real grid goes up to 6 x 6 tiles of 384 px.
    pinpoints = [[image_size * h, image_size * w] for h in range(1, 4) for w in range(1, 4)]
    size = {"height": image_size, "width": image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=template,
    )
    vision_config = {
        "model_type": "siglip_vision_model",
        **VISION_SIZES,
        "image_size": image_size,
        "patch_size": patch_size,
        "vision_use_head": False,
    }
    config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=decoder_config("qwen2", tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_index=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    seed_everything()
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    save_checkpoint(folder, model, processor, tokenizer, ["<|im_end|>", "<|endoftext|>"])
