"""Tiny random checkpoints of real vision-language architectures, built offline and cached.

`ensure_tiny(name)` returns a folder that loads exactly like a hub checkpoint:
`AutoProcessor.from_pretrained(path)` and the family's model class (see `TINY_NOTES`), with
random seeded weights. Where the real Hub files of a target checkpoint are at hand
(`engine.tiny.hub`: the files in engine/hub), the tiny checkpoint is built from
them: the real config with its sizes shrunk, the real chat template, tokenizer, special token
ids, processor and generation configs. The other families (LLaVA-NeXT, SmolVLM2, and the
language sides of LLaVA-OneVision and Ovis2) get a locally trained byte-level BPE tokenizer
and configs in the family's format. Where real checkpoints of one family behave differently,
each behaviour has its own tiny checkpoint (Qwen3-VL Instruct / Thinking, Qwen3.5 small /
large). Folders are built in seconds and rebuilt only when missing or incomplete: a build goes
to a temporary sibling folder, gets a marker file last, and is then renamed into place.

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
from dataclasses import dataclass, replace
from pathlib import Path

MARKER = "tiny-complete.txt"


@dataclass(frozen=True)
class TinyNote:
    """What the engine needs to know about one tiny checkpoint."""

    model_class: str  # transformers class that loads the folder
    processor_class: str  # what AutoProcessor returns
    # What its chat template does with enable_thinking: "never" thinks (the switch is
    # ignored), "switchable" (thinking_default: what it does when not told), "always" thinks.
    thinking: str
    chat_template: bool  # False: no template; prompt with "Question: ... Answer:"
    # The placeholder the processor repeats in input_ids where image features go.
    image_token: str
    thinking_default: bool = False
    # The real checkpoint's files it is built from (a folder of the hub files), if any.
    real_source: str | None = None
    # The engine family it belongs to (engine.families); empty: the same as its name.
    family: str = ""

    @property
    def keep_unquantized(self) -> tuple[str, ...]:
        """Modules left out of bitsandbytes quantization: its family's list in
        `engine.families`, the one the loader uses. Every other linear of the tiny models has
        the widths 4-bit kernels need on CPU."""
        from engine.families import FAMILIES

        return next(f.keep_unquantized for f in FAMILIES if f.name == self.family)


@dataclass(frozen=True)
class _Recipe:
    version: int
    builder: str  # "module:function", imported only when a build is needed
    note: TinyNote


def _qwen3_5(version: int, builder: str, default: bool) -> _Recipe:
    return _Recipe(version, builder, TinyNote(
        family="qwen3_5",
        model_class="Qwen3_5ForConditionalGeneration",
        processor_class="Qwen3VLProcessor",
        thinking="switchable",
        thinking_default=default,
        chat_template=True,
        image_token="<|image_pad|>",
        real_source="Qwen__Qwen3.5-0.8B",
    ))


def _qwen3_vl(version: int, builder: str, thinking: str) -> _Recipe:
    return _Recipe(version, builder, TinyNote(
        family="qwen3_vl",
        model_class="Qwen3VLForConditionalGeneration",
        processor_class="Qwen3VLProcessor",
        thinking=thinking,
        thinking_default=thinking == "always",
        chat_template=True,
        image_token="<|image_pad|>",
        real_source="Qwen__Qwen3-VL-4B-Instruct",
    ))


_RECIPES: dict[str, _Recipe] = {
    # Qwen3.5 0.8B / 2B (what --model auto picks on a CPU or a small GPU): thinks when asked.
    "qwen3_5": _qwen3_5(3, "engine.tiny.hub:build_qwen3_5", default=False),
    # Qwen3.5 4B / 9B: thinks unless told not to.
    "qwen3_5_large": _qwen3_5(1, "engine.tiny.hub:build_qwen3_5_large", default=True),
    "llava": _Recipe(
        3,
        "engine.tiny.hub:build_llava",
        TinyNote(
            family="llava",
            model_class="LlavaForConditionalGeneration",
            processor_class="LlavaProcessor",
            thinking="never",
            chat_template=True,
            image_token="<image>",
            real_source="llava-hf__llava-1.5-7b-hf",
        ),
    ),
    "qwen3_vl": _qwen3_vl(2, "engine.tiny.hub:build_qwen3_vl", "never"),
    "qwen3_vl_thinking": _qwen3_vl(1, "engine.tiny.hub:build_qwen3_vl_thinking", "always"),
    "qwen2_5_vl": _Recipe(
        2,
        "engine.tiny.hub:build_qwen2_5_vl",
        TinyNote(
            family="qwen2_5_vl",
            model_class="Qwen2_5_VLForConditionalGeneration",
            processor_class="Qwen2_5_VLProcessor",
            thinking="never",
            chat_template=True,
            image_token="<|image_pad|>",
            real_source="Qwen__Qwen2.5-VL-3B-Instruct",
        ),
    ),
    "llava_next": _Recipe(
        1,
        "engine.tiny.llava:build_llava_next",
        TinyNote(
            family="llava_next",
            model_class="LlavaNextForConditionalGeneration",
            processor_class="LlavaNextProcessor",
            thinking="never",
            chat_template=True,
            image_token="<image>",
        ),
    ),
    "llava_onevision": _Recipe(
        2,
        "engine.tiny.llava:build_llava_onevision",
        TinyNote(
            family="llava_onevision",
            model_class="LlavaOnevisionForConditionalGeneration",
            processor_class="LlavaOnevisionProcessor",
            thinking="never",
            chat_template=True,
            image_token="<image>",
        ),
    ),
    # SmolVLM-256M-Instruct is an idefics3 checkpoint.
    "idefics3": _Recipe(
        2,
        "engine.tiny.hub:build_idefics3",
        TinyNote(
            family="idefics3",
            model_class="Idefics3ForConditionalGeneration",
            processor_class="Idefics3Processor",
            thinking="never",
            chat_template=True,
            image_token="<image>",
            real_source="HuggingFaceTB__SmolVLM-256M-Instruct",
        ),
    ),
    "smolvlm": _Recipe(
        1,
        "engine.tiny.idefics:build_smolvlm",
        TinyNote(
            family="smolvlm",
            model_class="SmolVLMForConditionalGeneration",
            processor_class="SmolVLMProcessor",
            thinking="never",
            chat_template=True,
            image_token="<image>",
        ),
    ),
    "ovis2": _Recipe(
        2,
        "engine.tiny.ovis2:build_ovis2",
        TinyNote(
            family="ovis2",
            model_class="Ovis2ForConditionalGeneration",
            processor_class="Ovis2Processor",
            thinking="never",
            chat_template=True,
            image_token="<IMG_ATOM>",
        ),
    ),
    "ovis2_5": _Recipe(
        1,
        "engine.tiny.ovis25:build_ovis2_5",
        TinyNote(
            model_class="Ovis25ForConditionalGeneration",
            processor_class="Ovis25Processor",
            thinking=True,
            chat_template=True,
            image_token="<|image_pad|>",
        ),
    ),
    "blip2": _Recipe(
        2,
        "engine.tiny.hub:build_blip2",
        TinyNote(
            family="blip2",
            model_class="Blip2ForConditionalGeneration",
            processor_class="Blip2Processor",
            thinking="never",
            chat_template=False,
            image_token="<image>",
            real_source="Salesforce__blip2-opt-2.7b",
        ),
    ),
}

TINY_FAMILIES: tuple[str, ...] = tuple(_RECIPES)


def _settled(name: str, note: TinyNote) -> TinyNote:
    """The note with its family named and its thinking spelled as a mode."""
    thinking, default = note.thinking, note.thinking_default
    if isinstance(thinking, bool):  # True: honours enable_thinking, thinking by default
        thinking, default = ("switchable", True) if thinking else ("never", False)
    return replace(note, family=note.family or name, thinking=thinking,
                   thinking_default=default)


TINY_NOTES: dict[str, TinyNote] = {
    name: _settled(name, recipe.note) for name, recipe in _RECIPES.items()}


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

