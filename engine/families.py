"""What differs between model families, in one table.

Every loaded model is matched to a `Family` by its config's `model_type`. A family says how its
prompt is built ("chat": the processor's chat template; "question_answer": a plain
"Question: ... Answer:" prompt for models without a template), how many images one prompt may
hold, and which modules must stay unquantized under bitsandbytes. Module paths are full paths
as they appear in `model.named_modules()` in transformers 5 (short names such as "visual"
match nothing there), and `lm_head` is listed because a custom skip list replaces the default.

Nothing else in the engine branches on the family name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PromptStyle = Literal["chat", "question_answer"]

# How many images a prompt may hold when a family sets no smaller limit: enough for comparing
# a handful of photos or document pages, small enough that the visual tokens fit in context.
DEFAULT_MAX_IMAGES = 8


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    keep_unquantized: tuple[str, ...]
    prompt_style: PromptStyle = "chat"
    max_images: int = DEFAULT_MAX_IMAGES


FAMILIES: tuple[Family, ...] = (
    Family("qwen3_5", ("qwen3_5", "qwen3_5_moe"), ("model.visual", "lm_head")),
    Family("qwen3_vl", ("qwen3_vl", "qwen3_vl_moe"), ("model.visual", "lm_head")),
    Family("qwen2_5_vl", ("qwen2_5_vl", "qwen2_vl"), ("model.visual", "lm_head")),
    Family(
        "llava",
        ("llava", "llava_next", "llava_onevision"),
        ("model.vision_tower", "model.multi_modal_projector", "lm_head"),
    ),
    Family(
        "idefics3",
        ("idefics3", "smolvlm"),
        ("model.vision_model", "model.connector", "lm_head"),
    ),
    Family(
        "ovis2",
        ("ovis2",),
        ("model.vision_tower", "model.visual_embeddings_table", "lm_head"),
    ),
    Family(
        "blip2",
        ("blip-2",),
        # BLIP-2 keeps its parts at the top level (no "model." prefix).
        ("vision_model", "qformer", "language_projection", "language_model.lm_head"),
        prompt_style="question_answer",
        max_images=1,
    ),
)

# A model type not in the table still loads; the vision parts are kept unquantized by the
# names most transformers vision-language models use.
GENERIC = Family(
    "generic",
    (),
    (
        "model.visual",
        "model.vision_tower",
        "model.vision_model",
        "model.multi_modal_projector",
        "lm_head",
    ),
)


def family_for(model_type: str) -> Family:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return GENERIC
