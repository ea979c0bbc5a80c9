"""Ovis2.5 on transformers 5.23 parts, loading the published checkpoints by their own names.

Module tree (the published weight names, so the Hub folders load with plain `from_pretrained`,
LoRA adapters trained on them keep matching, and `save_pretrained` writes the same layout):

    llm                 transformers' Qwen3ForCausalLM
    visual_tokenizer
      vit               SigLIP2 NaViT (a PreTrainedModel of its own, so it gets sdpa/flash)
        vision_model    embeddings, encoder.layers[i], post_layernorm (loaded, not used)
      head              Linear(4 * vision width -> visual vocab - 4, no bias), LayerNorm
    vte                 visual embedding table (visual vocab x text width)

An image goes: patches (2x2-block-major rows from `engine.ovis25_processing`) -> Conv2d patch
embedding + the learned 32x32 position table resized bicubically to the image's grid -> layers
with 2-D rotary positions (whole-image attention, or windows where the config says so) ->
each 2x2 block of the last layer's output (before `post_layernorm`, as published) -> head ->
float32 softmax over the visual vocabulary -> a probability-weighted sum of `vte` rows: one
embedding per block. Those fill the prompt's `<|image_pad|>` positions; `<|vision_start|>` and
`<|vision_end|>` positions take the table's two indicator rows. The language model then runs
with ordinary causal attention and one position per token.

The head's softmax over the visual vocabulary (65,532 entries) runs on `HEAD_CHUNK` blocks at a
time, so a large image never holds all its probabilities at once. Nothing is kept in buffers:
rotary frequencies and indicator rows are computed in `forward` (transformers builds models on
the meta device, where buffers would stay uninitialised).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel, Qwen3ForCausalLM
from transformers.models.video_llama_3.modeling_video_llama_3 import (
    VideoLlama3VisionEncoderLayer,
)
from transformers.vision_utils import (
    get_vision_cu_seqlens,
    get_vision_position_ids,
    get_vision_window_index,
)

from engine.ovis25_config import INDICATOR_ROWS, MODEL_TYPE, Ovis25Config, Ovis25VisionConfig

# Visual tokens whose head output and softmax are computed together: 1024 x 65,532 float32
# probabilities are 0.27 GB, where a whole 1-megapixel image at once would be about as much
# again per image of a conversation.
HEAD_CHUNK = 1024
ROPE_THETA = 10000.0


class Ovis25VisionEmbeddings(nn.Module):
    """Patch embedding plus the learned position table resized to each image's grid."""

    def __init__(self, config: Ovis25VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size,
                                         kernel_size=config.patch_size, stride=config.patch_size)
        self.position_side = config.image_size // config.patch_size
        self.position_embedding = nn.Embedding(self.position_side**2, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        config = self.config
        weight = self.patch_embedding.weight
        patches = pixel_values.to(weight.dtype).view(
            -1, config.num_channels, config.patch_size, config.patch_size)
        embeddings = self.patch_embedding(patches).view(-1, config.hidden_size)
        stride = config.hidden_stride
        table = self.position_embedding.weight.reshape(self.position_side, self.position_side, -1)
        # Resized in the weights' own dtype, as published (bfloat16 matches it bit for bit).
        table = table.permute(2, 0, 1).unsqueeze(0)
        positions = []
        for t, h, w in grid_thw.tolist():
            resized = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
            resized = resized[0].permute(1, 2, 0)
            # The same 2x2-block-major order as the patch rows.
            resized = resized.reshape(h // stride, stride, w // stride, stride, -1)
            resized = resized.permute(0, 2, 1, 3, 4).reshape(h * w, -1)
            positions.append(resized.repeat(t, 1))
        return embeddings + torch.cat(positions)


def _rotary(grid_thw: torch.Tensor, config: Ovis25VisionConfig, device) -> tuple:
    """cos, sin of the 2-D rotary positions (row, column), in the patch rows' order."""
    head_dim = config.hidden_size // config.num_attention_heads
    dim = head_dim // 2
    # On the CPU, as the published code builds it, then moved: the same float32 values anywhere.
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    position_ids = get_vision_position_ids(grid_thw.cpu(), config.hidden_stride)
    freqs = (position_ids[..., None].float() * inv_freq).flatten(1).to(device)
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


class Ovis25VisionEncoder(nn.Module):
    def __init__(self, config: Ovis25VisionConfig) -> None:
        super().__init__()
        self.config = config
        # transformers' VideoLLaMA3 vision layer: pre-LN attention (q/k/v/out_proj with biases,
        # 2-D rotary positions in float32, one attention per `cu_seqlens` segment) and fc1/fc2
        # MLP, with the published parameter names.
        self.layers = nn.ModuleList(
            [VideoLlama3VisionEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        config = self.config
        device = hidden_states.device
        unit = config.hidden_stride**2
        cos, sin = _rotary(grid_thw, config, device)
        # Windows are whole 2x2 blocks; tokens are permuted so each window is contiguous, as
        # the published model does even when every layer attends over whole images.
        window_index, cu_window_seqlens = get_vision_window_index(
            grid_thw.cpu(), config.hidden_stride, config.window_size, config.patch_size)
        window_index = window_index.to(device)
        cu_window_seqlens = cu_window_seqlens.to(device)
        cu_seqlens = get_vision_cu_seqlens(grid_thw).to(device)

        def permuted(tensor: torch.Tensor) -> torch.Tensor:
            n = tensor.shape[0]
            return tensor.reshape(n // unit, unit, -1)[window_index].reshape(n, -1)

        hidden_states = permuted(hidden_states)
        position_embeddings = (permuted(cos), permuted(sin))
        full = config.full_attention_layers()
        for index, layer in enumerate(self.layers):
            segments = cu_seqlens if full is None or index in full else cu_window_seqlens
            hidden_states = layer(hidden_states, cu_seqlens=segments,
                                  position_embeddings=position_embeddings)
        n = hidden_states.shape[0]
        restore = torch.argsort(window_index)
        return hidden_states.reshape(n // unit, unit, -1)[restore].reshape(n, -1)


class Ovis25VisionTransformer(nn.Module):
    def __init__(self, config: Ovis25VisionConfig) -> None:
        super().__init__()
        self.embeddings = Ovis25VisionEmbeddings(config)
        self.encoder = Ovis25VisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class Ovis25PreTrainedModel(PreTrainedModel):
    config_class = Ovis25Config
    base_model_prefix = "ovis2_5"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["VideoLlama3VisionEncoderLayer", "Qwen3DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True


class Ovis25VisionModel(Ovis25PreTrainedModel):
    """The SigLIP2 NaViT tower. A model of its own so that transformers sets its attention
    implementation (sdpa by default) instead of leaving the eager fallback."""

    config_class = Ovis25VisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: Ovis25VisionConfig) -> None:
        super().__init__(config)
        if not (config.use_rope and config.preserve_original_pe
                and config.temporal_patch_size == 1):
            raise ValueError("This Ovis2.5 implementation expects the published vision tower: "
                             "use_rope, preserve_original_pe and temporal_patch_size 1.")
        self.vision_model = Ovis25VisionTransformer(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """(last layer's output, the same after post_layernorm), rows in patch order."""
        hidden = self.vision_model.embeddings(pixel_values, grid_thw)
        hidden = self.vision_model.encoder(hidden, grid_thw)
        return hidden, self.vision_model.post_layernorm(hidden)


class Ovis25VisualTokenizer(nn.Module):
    def __init__(self, config: Ovis25Config) -> None:
        super().__init__()
        vision = config.vision_config
        self.vit = Ovis25VisionModel(vision)
        head_in = vision.hidden_size * vision.hidden_stride**2
        head_out = config.visual_vocab_size - INDICATOR_ROWS
        self.head = nn.Sequential(nn.Linear(head_in, head_out, bias=False),
                                  nn.LayerNorm(head_out))
        self.block = vision.hidden_stride**2

    def features(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """One row per 2x2 block: the four patches' last-layer outputs side by side."""
        hidden, _ = self.vit(pixel_values, grid_thw)
        return hidden.reshape(-1, hidden.shape[-1] * self.block)

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """Probabilities over the visual vocabulary (indicator columns zero), in float32."""
        logits = self.head(features)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(logits.dtype)
        return F.pad(probs, (0, INDICATOR_ROWS))


class Ovis25ForConditionalGeneration(Ovis25PreTrainedModel, GenerationMixin):
    """Ovis2.5 for generation: `forward` and `generate` take `input_ids` with image
    placeholders, `pixel_values` and `image_grid_thw` from `Ovis25Processor`."""

    def __init__(self, config: Ovis25Config) -> None:
        super().__init__(config)
        self.llm = Qwen3ForCausalLM(config.text_config)
        self.visual_tokenizer = Ovis25VisualTokenizer(config)
        self.vte = nn.Embedding(config.visual_vocab_size, config.text_config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.llm.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.llm.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.llm.set_output_embeddings(value)

    def visual_embeddings(self, pixel_values: torch.Tensor,
                          image_grid_thw: torch.Tensor) -> torch.Tensor:
        """One text-width embedding per 2x2 block of every image, in order."""
        features = self.visual_tokenizer.features(pixel_values, image_grid_thw)
        table = self.vte.weight
        chunks = []
        for start in range(0, features.shape[0], HEAD_CHUNK):
            probs = self.visual_tokenizer.probabilities(features[start:start + HEAD_CHUNK])
            chunks.append(torch.matmul(probs.to(table.dtype), table))
        return torch.cat(chunks)

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
              image_grid_thw: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt embeddings: text tokens, with image placeholders filled when images come."""
        embeddings = self.get_input_embeddings()(input_ids)
        if pixel_values is None:
            return embeddings
        config = self.config
        ids = (config.image_token_id, config.image_start_token_id, config.image_end_token_id)
        if None in ids:
            raise ValueError("The image token ids are not set on the config: load Ovis2.5 "
                             "through engine.ovis25_processing.load_ovis25.")
        atom_id, start_id, end_id = ids
        visual = self.visual_embeddings(pixel_values, image_grid_thw).to(embeddings.dtype)
        atoms = input_ids == atom_id
        if int(atoms.sum()) != visual.shape[0]:
            raise ValueError(f"The prompt has {int(atoms.sum())} image token positions but the "
                             f"images give {visual.shape[0]} visual tokens.")
        embeddings = embeddings.masked_scatter(atoms.unsqueeze(-1), visual)
        rows = self.vte.weight.shape[0] - INDICATOR_ROWS
        start_row = self.vte.weight[rows].to(embeddings.dtype)
        end_row = self.vte.weight[rows + 1].to(embeddings.dtype)
        embeddings = torch.where((input_ids == start_id).unsqueeze(-1), start_row, embeddings)
        return torch.where((input_ids == end_id).unsqueeze(-1), end_row, embeddings)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, image_grid_thw)
        return self.llm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )


def register() -> None:
    """Make transformers' Auto classes resolve `ovis2_5` to the project classes (idempotent)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    AutoConfig.register(MODEL_TYPE, Ovis25Config, exist_ok=True)
    AutoModelForImageTextToText.register(Ovis25Config, Ovis25ForConditionalGeneration,
                                         exist_ok=True)
