"""Tiny random SmolVLM (SmolVLM2-style `smolvlm`) checkpoint; SmolVLM-256M, an `idefics3`
checkpoint, is built from its real files by `engine.tiny.hub`.

Each `build_*` function writes a complete checkpoint into an empty folder with
`save_pretrained`; called only by `engine.tiny.ensure_tiny`, which owns caching.
It pairs a SigLIP-like ViT (64 px tiles, patch 16, pixel shuffle 2 -> 4 tokens per tile) with a
tiny Llama; large images are split into tiles plus a global view, as in the real models.
"""

from __future__ import annotations

from pathlib import Path

from engine.tiny.common import (
    decoder_config,
    llama_style_tokenizer,
    save_checkpoint,
    seed_everything,
)
from engine.tiny.sizes import VISION_SIZES

TILE, PATCH, SCALE = 64, 16, 2
TOKENS_PER_TILE = (TILE // PATCH) ** 2 // SCALE**2
IMAGE_TOKEN = "<image>"
END_OF_UTTERANCE = "<end_of_utterance>"
# The processors spell tiles out with these; they must be whole tokens of the vocabulary.
IMAGE_LAYOUT_TOKENS = [
    "<fake_token_around_image>",
    IMAGE_TOKEN,
    END_OF_UTTERANCE,
    "<global-img>",
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
]

# Idefics3 / SmolVLM format: "User:<image>question<end_of_utterance>\nAssistant:", after the
# bos token. A colon without a space when the message opens with an image. No thinking.
TEMPLATE = """\
{{- bos_token -}}
{%- for message in messages -%}
{{ message.role | capitalize }}
{%- if message.content is string -%}{{ ': ' + message.content }}
{%- else -%}
{{ ':' if message.content and message.content[0].type == 'image' else ': ' }}
{%- for part in message.content -%}
{%- if part.type == 'text' -%}{{ part.text }}
{%- elif part.type == 'image' -%}{{ '<image>' }}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{{ '<end_of_utterance>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}
"""


def _vision_config() -> dict:
    return {
        **VISION_SIZES,
        "image_size": TILE,
        "patch_size": PATCH,
    }


def _image_sizes() -> dict:
    # At most 2 x 2 tiles plus the global view.
    return {"size": {"longest_edge": 2 * TILE}, "max_image_size": {"longest_edge": TILE}}


def build_smolvlm(folder: Path) -> None:
    """SmolVLMForConditionalGeneration: the Idefics3 layout with SmolLM2-style specials."""
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    # SmolVLM prompts open with <|im_start|> (its bos, written by the template) and turns end
    # with <end_of_utterance>.
    tokenizer = llama_style_tokenizer(
        IMAGE_LAYOUT_TOKENS,
        TEMPLATE,
        bos_token="<|im_start|>",
        eos_token=END_OF_UTTERANCE,
        add_bos=False,
    )
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**_image_sizes()),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(**_image_sizes()),
        image_seq_len=TOKENS_PER_TILE,
        chat_template=TEMPLATE,
    )
    config = SmolVLMConfig(
        vision_config=_vision_config(),
        text_config=decoder_config("llama", tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        scale_factor=SCALE,
    )
    seed_everything()
    model = SmolVLMForConditionalGeneration(config).eval()
    save_checkpoint(folder, model, processor, tokenizer, [END_OF_UTTERANCE])
