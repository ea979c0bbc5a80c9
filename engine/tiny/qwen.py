"""Hand-written Qwen-family checkpoints (small trained vocabulary, Qwen-style template).

The tiny checkpoints the app and tests use are built from the real Hub files by
`engine.tiny.hub`; the benchmarks (`bench/models.py`) still size their checkpoints from the
vocabulary, template and token names here. Each `build_*` function writes a complete
checkpoint into an empty folder with `save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

from engine.tiny.common import qwen_style_tokenizer, save_checkpoint, seed_everything
from engine.tiny.sizes import LINEAR_ATTENTION_SIZES, QWEN_VISION_SIZES, TEXT_SIZES

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")

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


def _processor(processor_class, video_processor_class, tokenizer, patch_size: int):
    """The family's processor with image and video sides sized for a few dozen tokens."""
    from transformers import Qwen2VLImageProcessor

    merge_size = 2
    unit = (patch_size * merge_size) ** 2
    sizes = {
        "size": {"shortest_edge": unit * _MIN_TOKENS, "longest_edge": unit * _MAX_TOKENS},
        "patch_size": patch_size,
        "temporal_patch_size": 2,
        "merge_size": merge_size,
    }
    return processor_class(
        image_processor=Qwen2VLImageProcessor(**sizes),
        tokenizer=tokenizer,
        video_processor=video_processor_class(**sizes),
        chat_template=tokenizer.chat_template,
    )


def _token_ids(tokenizer) -> dict[str, int]:
    start, end, image, video = tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    return {
        "vision_start_token_id": start,
        "vision_end_token_id": end,
        "image_token_id": image,
        "video_token_id": video,
    }


def build_qwen3_5(folder: Path) -> None:
    """Qwen3_5ForConditionalGeneration: 3 linear-attention layers + 1 full attention, ViT depth 2.

    Every text linear has in_features % 64 == 0 and out_features % 32 == 0, so bitsandbytes
    4-bit runs on CPU with only the vision tower and lm_head kept unquantized, as for the real
    checkpoints.
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

    tokenizer = qwen_style_tokenizer(
        Qwen3_5Tokenizer, PRETOKENIZE_REGEX, VISION_TOKENS, THINKING_TEMPLATE
    )
    processor = _processor(Qwen3VLProcessor, Qwen3VLVideoProcessor, tokenizer, patch_size=16)
    text_config = {
        "vocab_size": len(tokenizer),
        **TEXT_SIZES,
        "num_hidden_layers": 4,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        **LINEAR_ATTENTION_SIZES,
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
        **QWEN_VISION_SIZES,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": TEXT_SIZES["hidden_size"],
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
    save_checkpoint(folder, model, processor, tokenizer, EOS_TOKENS)


def build_qwen3_vl(folder: Path) -> None:
    """Qwen3VLForConditionalGeneration (thinking variant): 2 text layers, ViT depth 2, DeepStack."""
    from transformers import (
        Qwen2Tokenizer,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = qwen_style_tokenizer(
        Qwen2Tokenizer, PRETOKENIZE_REGEX, VISION_TOKENS, THINKING_TEMPLATE
    )
    processor = _processor(Qwen3VLProcessor, Qwen3VLVideoProcessor, tokenizer, patch_size=16)
    text_config = {
        "vocab_size": len(tokenizer),
        **TEXT_SIZES,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            # Must sum to head_dim / 2.
            "mrope_section": [6, 5, 5],
            "mrope_interleaved": True,
        },
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        **QWEN_VISION_SIZES,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": TEXT_SIZES["hidden_size"],
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [0],
    }
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        tie_word_embeddings=False,
        **_token_ids(tokenizer),
    )
    seed_everything()
    model = Qwen3VLForConditionalGeneration(config).eval()
    save_checkpoint(folder, model, processor, tokenizer, EOS_TOKENS)


def build_qwen2_5_vl(folder: Path) -> None:
    """Qwen2_5_VLForConditionalGeneration: 2 text layers, windowed ViT of depth 2, no thinking."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLVideoProcessor,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = qwen_style_tokenizer(
        Qwen2Tokenizer, PRETOKENIZE_REGEX, VISION_TOKENS, PLAIN_TEMPLATE
    )
    processor = _processor(Qwen2_5_VLProcessor, Qwen2VLVideoProcessor, tokenizer, patch_size=14)
    text_config = {
        "vocab_size": len(tokenizer),
        # No head_dim: Qwen2.5-VL derives it from the width and head count.
        **{k: v for k, v in TEXT_SIZES.items() if k != "head_dim"},
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            # Must sum to head_dim / 2 (head_dim = hidden / heads = 32).
            "mrope_section": [4, 6, 6],
        },
        "bos_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        **QWEN_VISION_SIZES,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "out_hidden_size": TEXT_SIZES["hidden_size"],
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        tie_word_embeddings=False,
        **_token_ids(tokenizer),
    )
    seed_everything()
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    save_checkpoint(folder, model, processor, tokenizer, EOS_TOKENS)
