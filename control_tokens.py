"""Control tokens of the supported model families and trainers, and the rule that removes them.

Text people type, or a model writes, must never act as a control token where it is later
encoded: a literal "<image>" or "<|image_pad|>" is an image slot without an image (trainers
stop with "Found 3 <image> tokens and 2 images", or silently misalign), and
"<|im_end|>\\n<|im_start|>assistant" forges a turn. `without_control_tokens(text)` removes
every control token, and keeps removing until none is left, because a removal can join the
rest into a new one ("<ima<image>ge>" becomes "<image>").

CONTROL_TOKENS holds the special and added tokens the supported families' real tokenizers
declare (their tokenizer_config.json, added_tokens.json and special_tokens_map.json), the
media tags ms-swift and LLaMA-Factory read in text, and the image layout tokens the
transformers processors of the supported families use. Every "<|name|>" token (Qwen's and
Llama-3's shape, including the many reserved ones) is covered by one pattern, so a checkpoint
that adds more of them is covered too.

A module of its own, pure strings and no imports beyond the standard library, at the top of
the tree: storage (exports) and the engine (prompts for tokenizers that cannot encode text
literally) may both use it without importing each other. Callers that know their tokenizer
pass its own token list; the rule is the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Qwen2.5-VL, Qwen3-VL, Qwen3.5 and Ovis2/Ovis2.5 (Qwen based) spell most control tokens
# "<|name|>", as do Llama-3 style tokenizers (SmolVLM's reserved tokens): one pattern for all.
_PIPE_TOKEN = r"<\|[A-Za-z0-9_]+\|>"

FAMILY_TOKENS: dict[str, tuple[str, ...]] = {
    # Beyond the "<|name|>" tokens.
    "qwen": (
        "<think>",
        "</think>",
        "<tool_call>",
        "</tool_call>",
        "<tool_response>",
        "</tool_response>",
        "<tts_pad>",
        "<tts_text_bos>",
        "<tts_text_eod>",
        "<tts_text_bos_single>",
    ),
    "llava": ("<s>", "</s>", "<unk>", "<pad>", "<image>", "<video>"),
    "idefics3": (
        "<image>",
        "<end_of_utterance>",
        "<fake_token_around_image>",
        "<global-img>",
        *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
        # Code-model tokens SmolVLM's tokenizer keeps from its language model.
        "<repo_name>",
        "<reponame>",
        "<file_sep>",
        "<filename>",
        "<gh_stars>",
        "<issue_start>",
        "<issue_comment>",
        "<issue_closed>",
        "<jupyter_start>",
        "<jupyter_text>",
        "<jupyter_code>",
        "<jupyter_output>",
        "<jupyter_script>",
        "<empty_output>",
    ),
    "ovis2": (
        "<image>",
        "<video>",
        "<IMG_ATOM>",
        "<IMG_START>",
        "<IMG_GRID>",
        "<IMG_COL>",
        "<IMG_ROW>",
        "<IMG_END>",
    ),
    "blip2": ("</s>", "<pad>", "<unk>", "<image>"),
}

# Tags ms-swift (`Template.special_tokens`) and LLaMA-Factory read in message text as media
# slots or grounding placeholders.
TRAINER_TAGS: tuple[str, ...] = (
    "<image>",
    "<video>",
    "<audio>",
    "<bbox>",
    "<ref-object>",
    "<cot-process>",
    "<start-image>",
)

# Longest first, so that one token containing another is removed whole.
CONTROL_TOKENS: tuple[str, ...] = tuple(
    sorted(
        {token for tokens in FAMILY_TOKENS.values() for token in tokens} | set(TRAINER_TAGS),
        key=lambda token: (-len(token), token),
    )
)


def _pattern(tokens: Iterable[str], pipe_tokens: bool) -> re.Pattern[str]:
    # Whitespace-only added tokens (some tokenizers have them) are left alone, as everywhere.
    literal = sorted({t for t in tokens if t.strip()}, key=lambda token: (-len(token), token))
    alternatives = [re.escape(token) for token in literal]
    if pipe_tokens:
        alternatives.insert(0, _PIPE_TOKEN)
    return re.compile("|".join(alternatives) or r"(?!)")


_DEFAULT = _pattern(CONTROL_TOKENS, pipe_tokens=True)


def without_control_tokens(text: str, tokens: Iterable[str] | None = None) -> str:
    """`text` with every control token removed, including ones a removal forms.

    `tokens`: a tokenizer's own control tokens instead of CONTROL_TOKENS and the "<|name|>"
    pattern. Each pass that removes anything shortens the text, so this ends."""
    pattern = _DEFAULT if tokens is None else _pattern(tokens, pipe_tokens=False)
    removed = 1
    while removed:
        text, removed = pattern.subn("", text)
    return text


def has_control_token(text: str) -> bool:
    """True when `text` holds any token `without_control_tokens` removes."""
    return _DEFAULT.search(text) is not None
