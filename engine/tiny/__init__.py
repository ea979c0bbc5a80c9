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
to a temporary sibling folder, gets a marker file last, and is then renamed into place
(`build_once(folder, build, label)`, which the benchmarks' larger checkpoints use too).

The default cache is $VQA_STUDIO_CACHE or ~/.cache/vqa-studio, subfolder tiny/<family>-v<N>.
"tiny-random" is the app's alias for ensure_tiny("qwen3_5"); this module does not resolve it.

`python -m engine.tiny [FAMILY ...]` builds the named families (all by default) and prints paths.

The builders live in this package's submodules, which import torch and transformers only
when a build runs: `hub` (from the real Hub files), `llava`, `idefics`, `ovis2` and `ovis25`
(written by hand), on `common` (corpus, tokenizers, seeding, saving) and `sizes` (the one
home of the tiny widths, depths and head counts); `qwen` holds the benchmarks' Qwen template.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from engine.tiny import hub

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


def _recipe(
    version: int,
    builder: str,
    architecture: str,
    processor_class: str,
    image_token: str,
    real_source: str | None = None,
    *,
    family: str = "",
    thinking: str = "never",
    thinking_default: bool = False,
    chat_template: bool = True,
) -> _Recipe:
    """One row of the table below. `builder` is "module:function" within this package;
    `architecture` names the model class, <architecture>ForConditionalGeneration."""
    return _Recipe(version, f"{__name__}.{builder}", TinyNote(
        model_class=f"{architecture}ForConditionalGeneration",
        processor_class=processor_class,
        thinking=thinking,
        # A template that always thinks thinks when not told, too.
        thinking_default=thinking_default or thinking == "always",
        chat_template=chat_template,
        image_token=image_token,
        real_source=real_source,
        family=family,
    ))


# The image placeholders of the Qwen processors and of the LLaVA-like ones.
_QWEN_IMAGE, _IMAGE = "<|image_pad|>", "<image>"

# A recipe's version is part of its folder name: move it whenever what the builder writes
# changes, so caches built by older code are not reused.
_RECIPES: dict[str, _Recipe] = {
    # Qwen3.5 0.8B / 2B (what --model auto picks on a CPU or a small GPU): thinks when asked.
    "qwen3_5": _recipe(3, "hub:build_qwen3_5", "Qwen3_5", "Qwen3VLProcessor", _QWEN_IMAGE,
                       hub.QWEN3_5, thinking="switchable"),
    # Qwen3.5 4B / 9B: thinks unless told not to.
    "qwen3_5_large": _recipe(1, "hub:build_qwen3_5_large", "Qwen3_5", "Qwen3VLProcessor",
                             _QWEN_IMAGE, hub.QWEN3_5, family="qwen3_5", thinking="switchable",
                             thinking_default=True),
    "llava": _recipe(3, "hub:build_llava", "Llava", "LlavaProcessor", _IMAGE, hub.LLAVA),
    "qwen3_vl": _recipe(2, "hub:build_qwen3_vl", "Qwen3VL", "Qwen3VLProcessor", _QWEN_IMAGE,
                        hub.QWEN3_VL),
    "qwen3_vl_thinking": _recipe(1, "hub:build_qwen3_vl_thinking", "Qwen3VL",
                                 "Qwen3VLProcessor", _QWEN_IMAGE, hub.QWEN3_VL,
                                 family="qwen3_vl", thinking="always"),
    "qwen2_5_vl": _recipe(2, "hub:build_qwen2_5_vl", "Qwen2_5_VL", "Qwen2_5_VLProcessor",
                          _QWEN_IMAGE, hub.QWEN2_5_VL),
    "llava_next": _recipe(1, "llava:build_llava_next", "LlavaNext", "LlavaNextProcessor",
                          _IMAGE),
    "llava_onevision": _recipe(2, "llava:build_llava_onevision", "LlavaOnevision",
                               "LlavaOnevisionProcessor", _IMAGE),
    # SmolVLM-256M-Instruct is an idefics3 checkpoint.
    "idefics3": _recipe(2, "hub:build_idefics3", "Idefics3", "Idefics3Processor", _IMAGE,
                        hub.SMOLVLM_256M),
    "smolvlm": _recipe(1, "idefics:build_smolvlm", "SmolVLM", "SmolVLMProcessor", _IMAGE),
    "ovis2": _recipe(2, "ovis2:build_ovis2", "Ovis2", "Ovis2Processor", "<IMG_ATOM>"),
    "ovis2_5": _recipe(1, "ovis25:build_ovis2_5", "Ovis25", "Ovis25Processor", _QWEN_IMAGE,
                       thinking="switchable", thinking_default=True),
    "blip2": _recipe(2, "hub:build_blip2", "Blip2", "Blip2Processor", _IMAGE, hub.BLIP2,
                     chat_template=False),
}

TINY_FAMILIES: tuple[str, ...] = tuple(_RECIPES)


# A note without a family belongs to the engine family of its own name.
TINY_NOTES: dict[str, TinyNote] = {
    name: replace(recipe.note, family=recipe.note.family or name)
    for name, recipe in _RECIPES.items()}


def default_cache_dir() -> Path:
    root = os.environ.get("VQA_STUDIO_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "vqa-studio"


def tiny_path(family: str, cache_dir: Path | None = None) -> Path:
    """Where the family's checkpoint lives (built or not)."""
    recipe = _recipe(family)
    return (cache_dir or default_cache_dir()) / "tiny" / f"{family}-v{recipe.version}"


def ensure_tiny(family: str, cache_dir: Path | None = None) -> Path:
    """Return the folder of the family's tiny checkpoint, building it first if needed."""
    return build_once(tiny_path(family, cache_dir), partial(_build, family),
                      f"{family} v{_recipe(family).version}")


def build_once(target: Path, build: Callable[[Path], None], label: str) -> Path:
    """Return `target` once it holds a finished build, running `build(folder)` first if not.

    The build fills a temporary sibling folder, which gets `MARKER` (saying `label`) last and
    is then renamed into place, so a folder with the marker is always whole; one without it
    (an interrupted build) is replaced, and a folder another process finished first is kept.
    """
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model cache
    try:
        build(staging)
        (staging / MARKER).write_text(f"{label}\n")
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

