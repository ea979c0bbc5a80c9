"""Tiny random LLaVA-family checkpoints: LLaVA 1.5, LLaVA-NeXT and LLaVA-OneVision.

Each `build_*` function writes a complete checkpoint into an empty folder with
`save_pretrained`; called only by `engine.tiny.ensure_tiny`, which owns caching.
The LLaVA 1.5 / NeXT text side is a tiny Llama with a Llama-3-style byte-level tokenizer
(bos prepended by the tokenizer); OneVision pairs SigLIP with a tiny Qwen2, as the real one does.
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

VOCAB_SIZE = 640
IMAGE_TOKEN = "<image>"

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


def _llama_style_tokenizer(chat_template: str):
    """Byte-level BPE with <s> prepended on encode, <image> and <pad> as added specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab, merges = train_byte_level_bpe(VOCAB_SIZE, specials)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tokenizer.add_special_tokens({"pad_token": "<pad>", "extra_special_tokens": [IMAGE_TOKEN]})
    tokenizer.add_tokens(list(THINK_TOKENS))
    tokenizer.chat_template = chat_template
    return tokenizer


def _silent_ids(tokenizer) -> list[int]:
    control = [tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens]
    control += tokenizer.convert_tokens_to_ids(list(THINK_TOKENS))
    return control + unprintable_ids(tokenizer)


def _llama_text_config(tokenizer) -> dict:
    return {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


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


def _save(folder: Path, model, processor, tokenizer) -> None:
    from transformers import GenerationConfig

    silence_tokens(model, _silent_ids(tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_llava(folder: Path) -> None:
    """LlavaForConditionalGeneration: CLIP ViT (2 layers, 32 px, patch 8) + tiny Llama."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _llama_style_tokenizer(VICUNA_TEMPLATE)
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
        text_config=_llama_text_config(tokenizer),
        image_token_index=image_id,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    seed_everything()
    model = LlavaForConditionalGeneration(config).eval()
    _save(folder, model, processor, tokenizer)
