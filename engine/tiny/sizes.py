"""The sizes of the tiny models, in one place.

Every tiny checkpoint, whether shrunk from real Hub files or written by hand, takes its widths,
depths and head counts from here; the builders spread these into their family's config (Qwen
vision towers name them differently, hence `QWEN_VISION_SIZES`). Changing a number here changes
the weights of every checkpoint built with it, so the recipe versions in `engine.tiny` must move
with it.
"""

from __future__ import annotations

# Text decoders: linears whose widths suit bitsandbytes 4-bit on CPU (in_features % 64 == 0,
# out_features % 32 == 0), so the quantized paths run in tests without a GPU.
TEXT_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
}

# Vision towers: every family keeps them out of quantization (`engine.families`), so no width
# rule applies and they stay narrower than the text side.
VISION_SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}

# The same tower in the Qwen vision configs' own key names.
QWEN_VISION_SIZES = {
    "depth": VISION_SIZES["num_hidden_layers"],
    "hidden_size": VISION_SIZES["hidden_size"],
    "intermediate_size": VISION_SIZES["intermediate_size"],
    "num_heads": VISION_SIZES["num_attention_heads"],
}

# Qwen3.5's linear-attention layers. 32 narrow value heads: in_proj_a / in_proj_b have one
# output per value head, and 4-bit kernels on CPU need out_features % 32 == 0, as the real
# widths have.
LINEAR_ATTENTION_SIZES = {
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 32,
    "linear_key_head_dim": 32,
    "linear_value_head_dim": 4,
}

# The Ovis2.5 NaViT is twice as wide as the other towers, with four heads: the width of the
# reference folders the native Ovis2.5 code is checked against (tests/engine/fixtures/ovis2_5).
OVIS2_5_VISION_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
