"""Tiny random checkpoints of real vision-language architectures, built offline and cached.

`ensure_tiny(family)` returns a folder that loads exactly like a hub checkpoint:
`AutoProcessor.from_pretrained(path)` and the family's model class (see `TINY_NOTES`), with
random seeded weights, a locally trained byte-level BPE tokenizer, the family's real processor
class and a chat template in the family's format. Folders are a few MB, built in seconds, and
rebuilt only when missing or incomplete: a build goes to a temporary sibling folder, gets a
marker file last, and is then renamed into place.

The default cache is $VQA_STUDIO_CACHE or ~/.cache/vqa-studio, subfolder tiny/<family>-v<N>.
"tiny-random" is the app's alias for ensure_tiny("qwen3_5"); this module does not resolve it.

`python -m engine.tiny [FAMILY ...]` builds the named families (all by default) and prints paths.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER = "tiny-complete.txt"


@dataclass(frozen=True)
class TinyNote:
    """What the engine needs to know about one tiny family."""

    model_class: str  # transformers class that loads the folder
    processor_class: str  # what AutoProcessor returns
    thinking: bool  # the chat template honours enable_thinking (default on)
    chat_template: bool  # False: no template; prompt with "Question: ... Answer:"
    # The placeholder the processor repeats in input_ids where image features go.
    image_token: str
    # Full module-path prefixes, as in model.named_modules(), to leave out of bitsandbytes
    # quantization: vision tower, projector, lm_head. Every other linear of the tiny models
    # has the widths 4-bit kernels need on CPU.
    keep_unquantized: tuple[str, ...]


@dataclass(frozen=True)
class _Recipe:
    version: int
    builder: str  # "module:function", imported only when a build is needed
    note: TinyNote


_RECIPES: dict[str, _Recipe] = {
    "qwen3_5": _Recipe(
        2,
        "engine.tiny_qwen:build_qwen3_5",
        TinyNote(
            model_class="Qwen3_5ForConditionalGeneration",
            processor_class="Qwen3VLProcessor",
            thinking=True,
            chat_template=True,
            image_token="<|image_pad|>",
            keep_unquantized=("model.visual", "lm_head"),
        ),
    ),
    "llava": _Recipe(
        2,
        "engine.tiny_llava:build_llava",
        TinyNote(
            model_class="LlavaForConditionalGeneration",
            processor_class="LlavaProcessor",
            thinking=False,
            chat_template=True,
            image_token="<image>",
            keep_unquantized=("model.vision_tower", "model.multi_modal_projector", "lm_head"),
        ),
    ),
    "qwen3_vl": _Recipe(
        1,
        "engine.tiny_qwen:build_qwen3_vl",
        TinyNote(
            model_class="Qwen3VLForConditionalGeneration",
            processor_class="Qwen3VLProcessor",
            thinking=True,
            chat_template=True,
            image_token="<|image_pad|>",
            keep_unquantized=("model.visual", "lm_head"),
        ),
    ),
    "qwen2_5_vl": _Recipe(
        1,
        "engine.tiny_qwen:build_qwen2_5_vl",
        TinyNote(
            model_class="Qwen2_5_VLForConditionalGeneration",
            processor_class="Qwen2_5_VLProcessor",
            thinking=False,
            chat_template=True,
            image_token="<|image_pad|>",
            keep_unquantized=("model.visual", "lm_head"),
        ),
    ),
    "llava_next": _Recipe(
        1,
        "engine.tiny_llava:build_llava_next",
        TinyNote(
            model_class="LlavaNextForConditionalGeneration",
            processor_class="LlavaNextProcessor",
            thinking=False,
            chat_template=True,
            image_token="<image>",
            keep_unquantized=("model.vision_tower", "model.multi_modal_projector", "lm_head"),
        ),
    ),
    "llava_onevision": _Recipe(
        1,
        "engine.tiny_llava:build_llava_onevision",
        TinyNote(
            model_class="LlavaOnevisionForConditionalGeneration",
            processor_class="LlavaOnevisionProcessor",
            thinking=False,
            chat_template=True,
            image_token="<image>",
            keep_unquantized=("model.vision_tower", "model.multi_modal_projector", "lm_head"),
        ),
    ),
    "idefics3": _Recipe(
        1,
        "engine.tiny_idefics:build_idefics3",
        TinyNote(
            model_class="Idefics3ForConditionalGeneration",
            processor_class="Idefics3Processor",
            thinking=False,
            chat_template=True,
            image_token="<image>",
            keep_unquantized=("model.vision_model", "model.connector", "lm_head"),
        ),
    ),
    "smolvlm": _Recipe(
        1,
        "engine.tiny_idefics:build_smolvlm",
        TinyNote(
            model_class="SmolVLMForConditionalGeneration",
            processor_class="SmolVLMProcessor",
            thinking=False,
            chat_template=True,
            image_token="<image>",
            keep_unquantized=("model.vision_model", "model.connector", "lm_head"),
        ),
    ),
    "ovis2": _Recipe(
        1,
        "engine.tiny_ovis2:build_ovis2",
        TinyNote(
            model_class="Ovis2ForConditionalGeneration",
            processor_class="Ovis2Processor",
            thinking=False,
            chat_template=True,
            image_token="<IMG_ATOM>",
            keep_unquantized=("model.vision_tower", "model.visual_embeddings_table", "lm_head"),
        ),
    ),
    "ovis2_5": _Recipe(
        1,
        "engine.tiny_ovis25:build_ovis2_5",
        TinyNote(
            model_class="Ovis25ForConditionalGeneration",
            processor_class="Ovis25Processor",
            thinking=True,
            chat_template=True,
            image_token="<|image_pad|>",
            keep_unquantized=("visual_tokenizer", "vte", "llm.lm_head"),
        ),
    ),
    "blip2": _Recipe(
        1,
        "engine.tiny_blip2:build_blip2",
        TinyNote(
            model_class="Blip2ForConditionalGeneration",
            processor_class="Blip2Processor",
            thinking=False,
            chat_template=False,
            image_token="<image>",
            keep_unquantized=(
                "vision_model",
                "qformer",
                "language_projection",
                "language_model.lm_head",
            ),
        ),
    ),
}

TINY_FAMILIES: tuple[str, ...] = tuple(_RECIPES)
TINY_NOTES: dict[str, TinyNote] = {name: recipe.note for name, recipe in _RECIPES.items()}


def default_cache_dir() -> Path:
    root = os.environ.get("VQA_STUDIO_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "vqa-studio"


def tiny_path(family: str, cache_dir: Path | None = None) -> Path:
    """Where the family's checkpoint lives (built or not)."""
    recipe = _recipe(family)
    return (cache_dir or default_cache_dir()) / "tiny" / f"{family}-v{recipe.version}"


def ensure_tiny(family: str, cache_dir: Path | None = None) -> Path:
    """Return the folder of the family's tiny checkpoint, building it first if needed."""
    target = tiny_path(family, cache_dir)
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model cache
    try:
        _build(family, staging)
        (staging / MARKER).write_text(f"{family} v{_recipe(family).version}\n")
        if target.exists() and not (target / MARKER).is_file():
            # Left behind by an interrupted build (or being cleared by a concurrent one).
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            # Another process finished the same build first; its folder is as good as ours.
            if not (target / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _recipe(family: str) -> _Recipe:
    try:
        return _RECIPES[family]
    except KeyError:
        known = ", ".join(TINY_FAMILIES)
        raise ValueError(f"Unknown tiny family {family!r}; choose one of: {known}.") from None


def _build(family: str, folder: Path) -> None:
    module_name, function_name = _recipe(family).builder.split(":")
    builder = getattr(importlib.import_module(module_name), function_name)
    builder(folder)


def main(argv: list[str] | None = None) -> int:
    families = (argv if argv is not None else sys.argv[1:]) or list(TINY_FAMILIES)
    for family in families:
        try:
            print(f"{family}\t{ensure_tiny(family)}")
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
