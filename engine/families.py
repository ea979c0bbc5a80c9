"""What differs between model families, in one table.

Every loaded model is matched to a `Family` by its config's `model_type`. A family says:
- how its prompt is built ("chat": the processor's chat template; "question_answer": a plain
  "Question: ... Answer:" prompt for models without a template);
- how many images one conversation may hold, and whether it needs one at all;
- which modules stay unquantized under bitsandbytes. Entries use transformers' own matching
  (`llm_int8_skip_modules`): a prefix of the full module path as in `model.named_modules()`
  ("model.visual"; a short name such as "visual" matches nothing there), a regex, or a suffix
  ("linear_attn.in_proj_a"). `lm_head` is listed because a custom list replaces the default;
- how user text is kept from writing control tokens: transformers' sanitizing encoder, or, for
  processors that need token offsets the sanitized encoding lacks, removal of the tokens;
- whether requests can be decoded in batches, and how a batched sequence's positions are given:
  "plain" (one position per token) or "mrope" (Qwen's multimodal rotary positions: the text
  position plus an offset per sequence that its images introduce); None: one at a time;
- whether the checkpoint ships its own modeling code (`trust_remote_code`) and, when that code
  is known not to run on the installed transformers, why (loading then stops with that reason);
- for a family this project implements itself (Ovis2.5), the function that loads it.

Nothing else in the engine branches on the family name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PromptStyle = Literal["chat", "question_answer"]
BatchPositions = Literal["plain", "mrope"]

# How many images a prompt may hold when a family sets no smaller limit: enough for comparing
# a handful of photos or document pages, small enough that the visual tokens fit in context.
DEFAULT_MAX_IMAGES = 8

_LLAVA_KEEP = ("model.vision_tower", "model.multi_modal_projector", "lm_head")
_IDEFICS_KEEP = ("model.vision_model", "model.connector", "lm_head")
_QWEN_VL_KEEP = ("model.visual", "lm_head")


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    keep_unquantized: tuple[str, ...]
    prompt_style: PromptStyle = "chat"
    max_images: int = DEFAULT_MAX_IMAGES
    # True: the model cannot answer without an image (its generate requires pixel values).
    needs_image: bool = False
    # False: the processor reads token offsets that transformers' sanitized encoding does not
    # give, so control tokens are removed from user text before the template sees it.
    sanitize_control_tokens: bool = True
    # How positions are given when its requests are decoded in batches; None: not batched.
    # Only families whose batched answers are tested equal to their answers alone say so.
    batch_positions: BatchPositions | None = None
    trust_remote_code: bool = False
    # Set when the family's own modeling code cannot run on the installed transformers.
    remote_code_broken: str | None = None
    # "module:function" that loads (processor, model) from a folder, for a family implemented
    # in this project rather than by transformers' Auto classes; None: the Auto classes.
    loader: str | None = None


FAMILIES: tuple[Family, ...] = (
    Family(
        "qwen3_5",
        ("qwen3_5", "qwen3_5_moe"),
        # The gate projections are tiny (linear attention: one output per value head; MoE
        # shared-expert gate: one output) and steer every step: quantizing them saves almost
        # nothing. bitsandbytes 4-bit on CPU also needs out_features % 32 == 0.
        (
            "model.visual",
            "linear_attn.in_proj_a",
            "linear_attn.in_proj_b",
            "shared_expert_gate",
            "lm_head",
        ),
        batch_positions="mrope",
    ),
    Family("qwen3_vl", ("qwen3_vl", "qwen3_vl_moe"), _QWEN_VL_KEEP, batch_positions="mrope"),
    Family("qwen2_5_vl", ("qwen2_5_vl", "qwen2_vl"), _QWEN_VL_KEEP, batch_positions="mrope"),
    Family("llava", ("llava",), _LLAVA_KEEP, batch_positions="plain"),
    Family("llava_next", ("llava_next",), _LLAVA_KEEP, batch_positions="plain"),
    Family("llava_onevision", ("llava_onevision",), _LLAVA_KEEP, batch_positions="plain"),
    # The Idefics3 processor maps each image back to its tokens through character offsets.
    Family("idefics3", ("idefics3",), _IDEFICS_KEEP, sanitize_control_tokens=False,
           batch_positions="plain"),
    Family("smolvlm", ("smolvlm",), _IDEFICS_KEEP, batch_positions="plain"),
    Family(
        "ovis2",
        ("ovis2",),
        ("model.vision_tower", "model.visual_embeddings_table", "lm_head"),
        batch_positions="plain",
    ),
    Family(
        "ovis2_5",
        ("ovis2_5",),
        # The published module names: Qwen3 under `llm`, the SigLIP2 NaViT and its visual head
        # under `visual_tokenizer`, the visual embedding table in `vte`.
        ("visual_tokenizer", "vte", "llm.lm_head"),
        batch_positions="plain",
        # Implemented in this project; the checkpoint's own code is never imported.
        loader="engine.ovis25_processing:load_ovis25",
    ),
    Family(
        "blip2",
        ("blip-2",),
        # BLIP-2 keeps its parts at the top level (no "model." prefix).
        ("vision_model", "qformer", "language_projection", "language_model.lm_head"),
        prompt_style="question_answer",
        max_images=1,
        needs_image=True,
        # Its language model's cache sits inside a nested output: decoded one at a time.
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
