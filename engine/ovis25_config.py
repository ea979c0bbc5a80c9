"""Configuration of Ovis2.5 (AIDC-AI/Ovis2.5-2B and -9B), read from the published config.json.

The published file nests the Qwen3 language model under `llm_config` and the SigLIP2 NaViT
vision tower under `vit_config`, and names remote code in `auto_map`. `Ovis25Config` accepts it
unchanged: the two nested dicts become `text_config` (a transformers `Qwen3Config`, so
generation builds its cache from the right config) and `vision_config`
(`Ovis25VisionConfig`); every other published key stays a plain attribute, `auto_map` included,
and nothing it names is ever imported.

The three placeholder token ids (image atom, image start, image end) are not in the published
file: the loader reads them from the tokenizer (`<|image_pad|>`, `<|vision_start|>`,
`<|vision_end|>`) and sets them here before the model runs.

`engine.ovis25_model.register()` makes `AutoConfig` and `AutoModelForImageTextToText` know
the model type, so transformers' own loading paths (PEFT adapters among them) resolve it to the
project classes. Importing this module is cheap; it loads no model.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODEL_TYPE = "ovis2_5"
# The last rows of the visual embedding table embed image start, image end, video start and
# video end; the visual head gives probabilities over the rows before them.
INDICATOR_ROWS = 4
IMAGE_ATOM_TOKEN = "<|image_pad|>"
IMAGE_START_TOKEN = "<|vision_start|>"
IMAGE_END_TOKEN = "<|vision_end|>"


@strict
class Ovis25VisionConfig(PreTrainedConfig):
    """The published `vit_config`: a SigLIP2 NaViT with 2-D rotary positions."""

    model_type = "siglip2_navit"
    base_config_key = "vision_config"

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    num_channels: int = 3
    num_patches: int = -1
    image_size: int = 512
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float | int = 0.0
    hidden_stride: int = 2
    window_size: int = 112
    # None: every layer attends over the whole image; else "0|8|16"-style layer indexes that
    # do, the others attend within windows.
    fullatt_block_indexes: str | list[int] | None = None
    temporal_patch_size: int = 1
    preserve_original_pe: bool = True
    use_rope: bool = True
    initializer_range: float = 0.02

    def full_attention_layers(self) -> set[int] | None:
        """Indexes of the layers that attend over whole images; None: all of them."""
        indexes = self.fullatt_block_indexes
        if indexes is None:
            return None
        if isinstance(indexes, str):
            return {int(part) for part in indexes.split("|") if part.strip()}
        return {int(index) for index in indexes}


@strict
class Ovis25Config(PreTrainedConfig):
    """The published Ovis2.5 config.json: `llm_config` and `vit_config` nested."""

    model_type = MODEL_TYPE
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3"),
        "vision_config": SubConfigSpec(config_class=Ovis25VisionConfig),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    visual_vocab_size: int = 65536
    # Set from the tokenizer at load (see the module docstring).
    image_token_id: int | None = None
    image_start_token_id: int | None = None
    image_end_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        # The published names of the two parts; the project's classes read the standard ones.
        if self.text_config is None and "llm_config" in kwargs:
            self.text_config = kwargs.pop("llm_config")
        if self.vision_config is None and "vit_config" in kwargs:
            self.vision_config = kwargs.pop("vit_config")
        kwargs.pop("llm_config", None)
        kwargs.pop("vit_config", None)
        super().__post_init__(**kwargs)
