"""Tiny random LLaVA-family checkpoints: LLaVA 1.5, LLaVA-NeXT and LLaVA-OneVision.

Each `build_*` function writes a complete checkpoint into an empty folder with
`save_pretrained`; called only by `engine.tiny.ensure_tiny`, which owns caching.
The LLaVA 1.5 / NeXT text side is a tiny Llama with a Llama-3-style byte-level tokenizer
(bos prepended by the tokenizer); OneVision pairs SigLIP with a tiny Qwen2, as the real one does.
"""

from __future__ import annotations

from pathlib import Path

from engine.tiny_common import (
    decoder_config,
    llama_style_tokenizer,
    qwen_style_tokenizer,
    save_checkpoint,
    seed_everything,
)

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"

# LLaVA 1.5 conversation format: "USER: <image>\n... ASSISTANT: ...". Images of a message come
# before its text, as in the llava-hf templates. No thinking.
VICUNA_TEMPLATE = """\
{%- for message in messages -%}
{%- if message.role != 'system' -%}{{ message.role.upper() + ': ' }}{%- endif -%}
{%- if message.content is string -%}{{ message.content + ' ' }}
{%- else -%}
{%- for part in message.content if part.type == 'image' -%}{{ '<image>\\n' }}{%- endfor -%}
{%- for part in message.content if part.type == 'text' -%}{{ part.text + ' ' }}{%- endfor -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}
"""

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

# LLaVA-OneVision (Qwen2) format: ChatML turns, a message's images and videos before its text.
ONEVISION_TEMPLATE = """\
{%- for message in messages -%}
{{ '<|im_start|>' + message.role + '\\n' }}
{%- if message.content is string -%}{{ message.content }}
{%- else -%}
{%- set media = message.content | selectattr('type', 'in', ['image', 'video']) | list -%}
{%- for part in media -%}{{ '<' + part.type + '>' }}{%- endfor -%}
{%- if media -%}{{ '\\n' }}{%- endif -%}
{%- for part in message.content if part.type == 'text' -%}
{{ (' ' if not loop.first else '') + part.text }}
{%- endfor -%}
{%- endif -%}
{{ '<|im_end|>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}
"""


def _clip_vision_config(image_size: int, patch_size: int) -> dict:
    return {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
        "projection_dim": 32,
    }


def build_llava(folder: Path) -> None:
    """LlavaForConditionalGeneration: CLIP ViT (2 layers, 32 px, patch 8) + tiny Llama."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = llama_style_tokenizer([IMAGE_TOKEN], VICUNA_TEMPLATE)
    image_size, patch_size = 32, 8
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = LlavaConfig(
        vision_config=_clip_vision_config(image_size, patch_size),
        text_config=decoder_config("llama", tokenizer),
        image_token_index=image_id,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    seed_everything()
    model = LlavaForConditionalGeneration(config).eval()
    save_checkpoint(folder, model, processor, tokenizer, [tokenizer.eos_token])


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

    tokenizer = qwen_style_tokenizer(
        Qwen2Tokenizer, PRETOKENIZE_REGEX, [IMAGE_TOKEN, VIDEO_TOKEN], ONEVISION_TEMPLATE
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
        chat_template=ONEVISION_TEMPLATE,
    )
    vision_config = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
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
