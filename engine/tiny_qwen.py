"""Tiny random Qwen-family checkpoints: Qwen3.5, Qwen3-VL and Qwen2.5-VL.

Each `build_*` function writes a complete checkpoint (config, weights, tokenizer, processor,
chat template, generation config) into an empty folder with `save_pretrained`, so it loads
through the same `AutoProcessor` / model-class path as the hub checkpoints. Called only by
`engine.tiny.ensure_tiny`, which owns caching.
"""

from __future__ import annotations

from pathlib import Path

from engine.tiny_common import (
    THINK_TOKENS,
    seed_everything,
    silence_tokens,
    train_byte_level_bpe,
    unprintable_ids,
)

VOCAB_SIZE = 640  # trained part; the special tokens come on top
SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
IMAGE_TOKEN = "<|image_pad|>"

# Qwen chat format. Images become vision_start/image_pad/vision_end; earlier assistant turns lose
# their reasoning, as in the Qwen templates. With thinking (Qwen3.5 and the Qwen3-VL thinking
# models) the generation prompt opens a think block, or writes an empty one when
# enable_thinking is false.
_CONTENT_MACRO = """\
{%- macro render_content(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}\
<|vision_start|><|image_pad|><|vision_end|>
{%- elif part.type == 'video' or 'video' in part -%}<|vision_start|><|video_pad|><|vision_end|>
{%- elif part.type == 'text' -%}{{ part.text }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
"""
_TURNS = """\
{%- for message in messages -%}
{%- if message.role == 'assistant' -%}
{%- set text = render_content(message.content) -%}
{%- if '</think>' in text -%}
{%- set text = text.split('</think>')[-1].lstrip('\\n') -%}
{%- endif -%}
{{ '<|im_start|>assistant\\n' + text + '<|im_end|>\\n' }}
{%- else -%}
{{ '<|im_start|>' + message.role + '\\n' }}
{{- render_content(message.content) -}}
{{ '<|im_end|>\\n' }}
{%- endif -%}
{%- endfor -%}
"""
THINKING_TEMPLATE = (
    _CONTENT_MACRO
    + _TURNS
    + """\
{%- if add_generation_prompt -%}
{{ '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false -%}
{{ '<think>\\n\\n</think>\\n\\n' }}
{%- else -%}
{{ '<think>\\n' }}
{%- endif -%}
{%- endif -%}
"""
)
PLAIN_TEMPLATE = (
    _CONTENT_MACRO
    + """\
{%- if messages[0].role != 'system' -%}
{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
{%- endif -%}
"""
    + _TURNS
    + """\
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}
"""
)

# One merged vision token covers (patch * merge)^2 pixels; these bounds keep an image between
# 4 and 64 tokens so tests stay fast whatever the upload size.
_MIN_TOKENS, _MAX_TOKENS = 4, 64


def _qwen_tokenizer(tokenizer_class, split_pattern: str, chat_template: str):
    vocab, merges = train_byte_level_bpe(VOCAB_SIZE, ["<|endoftext|>"], split_pattern)
    tokenizer = tokenizer_class(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens(
        {
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "extra_special_tokens": list(SPECIAL_TOKENS),
        }
    )
    # Not special, as in the Qwen vocabularies: decoding with skip_special_tokens keeps them, so
    # reasoning can be told apart from the answer.
    tokenizer.add_tokens(list(THINK_TOKENS))
    tokenizer.chat_template = chat_template
    return tokenizer


def _image_processors(patch_size: int, merge_size: int):
    from transformers import Qwen2VLImageProcessor

    unit = (patch_size * merge_size) ** 2
    size = {"shortest_edge": unit * _MIN_TOKENS, "longest_edge": unit * _MAX_TOKENS}
    image_processor = Qwen2VLImageProcessor(
        size=size, patch_size=patch_size, temporal_patch_size=2, merge_size=merge_size
    )
    return image_processor, size


def _token_ids(tokenizer) -> dict[str, int]:
    names = ("<|vision_start|>", "<|vision_end|>", IMAGE_TOKEN, "<|video_pad|>")
    start, end, image, video = tokenizer.convert_tokens_to_ids(list(names))
    return {
        "vision_start_token_id": start,
        "vision_end_token_id": end,
        "image_token_id": image,
        "video_token_id": video,
    }


def _silent_ids(tokenizer) -> list[int]:
    """Tokens a random model should not pick when decoding greedily."""
    control = tokenizer.convert_tokens_to_ids(["<|endoftext|>", *SPECIAL_TOKENS, *THINK_TOKENS])
    return control + unprintable_ids(tokenizer)


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    return GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]),
        pad_token_id=tokenizer.pad_token_id,
    )


def _save(folder: Path, model, processor, tokenizer) -> None:
    silence_tokens(model, _silent_ids(tokenizer))
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_qwen3_5(folder: Path) -> None:
    """Qwen3_5ForConditionalGeneration: 3 linear-attention layers + 1 full attention, ViT depth 2.

    Text linears have in_features % 64 == 0 and out_features % 32 == 0 so bitsandbytes 4-bit
    runs on CPU, except linear_attn.in_proj_a / in_proj_b whose width is the number of value
    heads (keep those unquantized).
    """
    from transformers import (
        Qwen3_5Config,
        Qwen3_5ForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )
    from transformers.models.qwen3_5.tokenization_qwen3_5 import (
        PRETOKENIZE_REGEX,
        Qwen3_5Tokenizer,
    )

    tokenizer = _qwen_tokenizer(Qwen3_5Tokenizer, PRETOKENIZE_REGEX, THINKING_TEMPLATE)
    patch_size, merge_size = 16, 2
    image_processor, size = _image_processors(patch_size, merge_size)
    video_processor = Qwen3VLVideoProcessor(
        size=size, patch_size=patch_size, temporal_patch_size=2, merge_size=merge_size
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=THINKING_TEMPLATE,
    )
    hidden = 64
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 2,
        "linear_key_head_dim": 32,
        "linear_value_head_dim": 32,
        "linear_conv_kernel_dim": 4,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10_000_000.0,
            "partial_rotary_factor": 0.25,
            # Must sum to head_dim * partial_rotary_factor / 2.
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
        },
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": patch_size,
        "spatial_merge_size": merge_size,
        "temporal_patch_size": 2,
        "out_hidden_size": hidden,
        "num_position_embeddings": 256,
    }
    config = Qwen3_5Config(
        text_config=text_config,
        vision_config=vision_config,
        tie_word_embeddings=False,
        **_token_ids(tokenizer),
    )
    seed_everything()
    model = Qwen3_5ForConditionalGeneration(config).eval()
    _save(folder, model, processor, tokenizer)
