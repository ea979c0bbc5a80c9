"""Tiny random Ovis2.5 checkpoint in the published folder layout.

`build_ovis2_5` writes what AIDC-AI/Ovis2.5-9B publishes, shrunk: config.json with the Qwen3
language model under `llm_config`, the SigLIP2 NaViT under `vit_config`, and an `auto_map` to
remote-code files that are absent (nothing may try to run them); weights by the published names
(`llm.*`, `visual_tokenizer.*`, `vte.*`); a SigLIP `preprocessor_config.json`; a Qwen-style
tokenizer with the Qwen vision and think tokens and the published chat template (opening the
think block itself, see `TINY_TEMPLATE`). Called only by `engine.tiny.ensure_tiny`, which owns
caching.

`published_config(...)` and `save_published(...)` are shared with `bench.ovis25`, which writes
the full published sizes with random weights the same way.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from engine.tiny.common import (
    qwen_style_tokenizer,
    seed_everything,
    silence_tokens,
    unprintable_ids,
)
from engine.tiny.sizes import OVIS2_5_VISION_SIZES, TEXT_SIZES

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                 "<|video_pad|>")
EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")

# The chat template of AIDC-AI/Ovis2.5-2B and -9B, byte for byte (its faults are the
# processor's to work around, see engine.ovis25_processing).
PUBLISHED_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\n'}}"
    "{%- if message.role == 'system' or message.role == 'user' %}"
    "{%- if message.content is string %}{{- message.content | replace('<image>', '') "
    "| replace('<video>', '') }}{%- else %}{%- for item in message.content %}"
    "{%- if item.type == 'text' and 'text' in item %}{{- item.text | replace('<image>', '') "
    "| replace('<video>', '') }}{%- elif item.type == 'image' %}{{- '<image>'}}"
    "{%- elif item.type == 'video' %}{{- '<video>'}}{%- else %}"
    "{{- raise_exception('Invalid content type."
    " Supported types for system and user are text, image, video.')}}{%- endif %}"
    "{%- if not loop.last %}{{- '\n'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- elif message.role == 'assistant' %}{%- set content = '' %}"
    '{%- if message.content is string %}{%- set content = message.content '
    "| replace('<image>', '') | replace('<video>', '') %}{%- else %}"
    "{%- for item in message.content %}{%- if item.type == 'text' and 'text' in item %}"
    "{%- set content = content ~ (item.text | replace('<image>', '') "
    "| replace('<video>', '')) %}{%- else %}{{- raise_exception('Invalid content type."
    " Supported type for assistant is text.')}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\n') %}{{- content }}{%- else %}"
    "{{- raise_exception('Invalid role. Supported roles are system, user, assistant.')}}"
    "{%- endif %}{{- '<|im_end|>\n'}}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\n' }}"
    '{%- if enable_thinking is defined and enable_thinking is false %}'
    "{{- '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}"
)
# The tiny checkpoint's template differs in one place: with thinking on it opens the think
# block itself, where the real model writes "<think>" as its first token; a random model never
# would, and its answers could then not show reasoning.
_NO_THINKING = "{{- '<think>\n\n</think>\n\n' }}"
TINY_TEMPLATE = PUBLISHED_TEMPLATE.replace(
    _NO_THINKING + "{%- endif %}", _NO_THINKING + "{%- else %}{{- '<think>\n' }}{%- endif %}")

# config.json of AIDC-AI/Ovis2.5-9B without its sizes (those come from `published_config`).
_AUTO_MAP = {
    "AutoConfig": "configuration_ovis2_5.Ovis2_5_Config",
    "AutoModelForCausalLM": "modeling_ovis2_5.Ovis2_5",
}
_LLM = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "model_type": "qwen3",
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "torch_dtype": "float32",
    "use_cache": True,
    "use_sliding_window": False,
}
_VIT = {
    "attention_dropout": 0.0,
    "fullatt_block_indexes": None,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_stride": 2,
    "layer_norm_eps": 1e-06,
    "model_type": "siglip2_navit",
    "num_channels": 3,
    "num_patches": -1,
    "patch_size": 16,
    "preserve_original_pe": True,
    "temporal_patch_size": 1,
    "torch_dtype": "float32",
    "use_rope": True,
    "window_size": 112,
}
PREPROCESSOR = {
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "SiglipProcessor",
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 512, "width": 512},
}


def published_config(llm: dict, vit: dict, *, visual_vocab_size: int = 65536,
                     dtype: str = "bfloat16") -> dict:
    """A config.json in the published layout: `llm` and `vit` give the sizes (and token ids)."""
    llm_config = {**_LLM, **llm, "max_window_layers": llm["num_hidden_layers"]}
    return {
        "architectures": ["Ovis2_5"],
        "auto_map": dict(_AUTO_MAP),
        "conversation_formatter_class": "Qwen3ConversationFormatter",
        "hidden_size": llm_config["hidden_size"],
        "vocab_size": llm_config["vocab_size"],
        "num_attention_heads": llm_config["num_attention_heads"],
        "max_position_embeddings": llm_config["max_position_embeddings"],
        "llm_config": llm_config,
        "model_type": "ovis2_5",
        "torch_dtype": dtype,
        "transformers_version": "4.51.3",
        "use_cache": True,
        "visual_vocab_size": visual_vocab_size,
        "vit_config": {**_VIT, **vit},
    }


def save_published(folder: Path, model, config: dict, **save_kwargs) -> None:
    """Weights by their published names, then config.json (and the preprocessor config) as
    published: `save_pretrained` would write the project's own config layout."""
    model.save_pretrained(folder, **save_kwargs)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")


def build_ovis2_5(folder: Path) -> None:
    """Ovis2.5 with a 2-layer Qwen3 (width 64) and a 2-layer NaViT with a 64-entry visual
    vocabulary; the processor's published image bounds (448x448 and up)."""
    from transformers import GenerationConfig, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from engine.ovis25_config import Ovis25Config
    from engine.ovis25_model import Ovis25ForConditionalGeneration
    from engine.ovis25_processing import PLACEHOLDERS

    tokenizer = qwen_style_tokenizer(Qwen2Tokenizer, PRETOKENIZE_REGEX, VISION_TOKENS,
                                     TINY_TEMPLATE)
    # The processor registers the template's image and video placeholders as two more tokens
    # at load: rows for them keep the vocabulary equal to the loaded tokenizer's.
    vocab_size = len(tokenizer) + len(PLACEHOLDERS)
    llm = {
        "vocab_size": vocab_size,
        **TEXT_SIZES,
        "max_position_embeddings": 40960,
        "bos_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        # The real 2B ties, but a random tied model mostly repeats its last input token.
        "tie_word_embeddings": False,
    }
    vit = {**OVIS2_5_VISION_SIZES, "image_size": 64}
    config = published_config(llm, vit, visual_vocab_size=68, dtype="float32")
    seed_everything()
    model = Ovis25ForConditionalGeneration(Ovis25Config(**copy.deepcopy(config))).eval()
    silent = list(tokenizer.added_tokens_decoder)
    silent += [tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens]
    placeholders = list(range(len(tokenizer), vocab_size))
    silence_tokens(model, silent + placeholders + unprintable_ids(tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(list(EOS_TOKENS)),
        pad_token_id=tokenizer.pad_token_id,
    )
    save_published(folder, model, config)
    tokenizer.save_pretrained(folder)
