"""Turning a model reference into a loaded (model, processor) pair.

A reference is `tiny-random` (or `tiny-random:FAMILY`), `tiny-vqa` (the small LLaVA trained on
easy-vqa, shipped in engine/models/tiny-vqa), a local folder, or a hub id. A local folder may
also be what a trainer wrote (a checkpoint-N, an output folder, a LoRA adapter merged into the
base it names; see `engine.checkpoints`). Every reference ends in the same `from_pretrained`
calls on a local folder: the tiny checkpoints are built into a cache folder first, and hub ids
are downloaded first (with byte progress), so a tiny checkpoint exercises exactly the path a
real one takes.

Quantization is chosen here: "auto" is 4-bit NF4 with double quantization and bf16 compute on
CUDA and none on CPU. The family table says which modules stay unquantized. LoRA adapters
named by the caller are attached last (see `engine.adapters`). After loading, a `LoadReport`
says what was quantized (counts of linear layers by module prefix, both quantized and kept),
which adapters are attached, how much memory the model takes and how long loading took;
`LoadReport.summary()` is the one-line version for the log.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from engine.adapters import load_adapters
from engine.checkpoints import resolve
from engine.errors import ModelLoadError
from engine.families import Family, family_for

log = logging.getLogger(__name__)

Quantize = Literal["auto", "4bit", "8bit", "none"]
TINY_PREFIX = "tiny-random"
TINY_VQA = "tiny-vqa"
# Committed with the code (a few MB); `python -m training.tiny_vqa` rebuilds it.
TINY_VQA_DIR = Path(__file__).resolve().parent / "models" / "tiny-vqa"


@dataclass(frozen=True)
class LoadProgress:
    stage: Literal["resolving", "building", "downloading", "loading", "ready", "failed"]
    message: str
    bytes_done: int = 0
    bytes_total: int = 0

    def not_ready_message(self, load_error: str | None) -> str:
        """What a request made before the model is ready is told."""
        if load_error:
            return f"The model could not be loaded: {load_error}"
        if self.stage == "downloading" and self.bytes_total:
            return (f"The model is still loading (downloading {self.bytes_done / 1e9:.2f} of "
                    f"{self.bytes_total / 1e9:.2f} GB). Please ask again in a moment.")
        return f"The model is still loading ({self.message}). Please ask again in a moment."


@dataclass(frozen=True)
class LoadReport:
    model_id: str
    path: str
    family: str
    quantization: str
    quantized_modules: int
    kept_unquantized: tuple[str, ...]
    footprint_bytes: int
    device: str
    load_seconds: float
    cuda_peak_bytes: int | None = None
    revision: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Linear layers by module prefix (the first two parts of their path), e.g.
    # (("model.language_model", 24),): what bitsandbytes quantized, and what it left alone.
    quantized_by_prefix: tuple[tuple[str, int], ...] = ()
    unquantized_by_prefix: tuple[tuple[str, int], ...] = ()
    adapters: tuple[str, ...] = ()

    def summary(self) -> str:
        """One log line: what was loaded, how, how big, how fast."""
        parts = [f"loaded {self.model_id} ({self.family}) on {self.device}", self.quantization]
        if self.quantization != "none":
            parts.append(f"{self.quantized_modules} linear layers quantized "
                         f"({_counts(self.quantized_by_prefix)})")
            kept = sum(count for _, count in self.unquantized_by_prefix)
            parts.append(f"{kept} kept ({_counts(self.unquantized_by_prefix)})")
        if self.adapters:
            parts.append("adapters " + ", ".join(self.adapters))
        parts.append(f"{self.footprint_bytes / 1e6:.1f} MB")
        if self.cuda_peak_bytes is not None:
            parts.append(f"peak {self.cuda_peak_bytes / 1e6:.1f} MB on the GPU")
        parts.append(f"{self.load_seconds:.1f} s")
        return "; ".join(parts)


def _counts(by_prefix: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{prefix}: {count}" for prefix, count in by_prefix) or "none"


ProgressCallback = Callable[[LoadProgress], None]


def default_model_id() -> str:
    """The Qwen3.5 checkpoint sized to the hardware found.

    On a GPU the model runs in 4-bit, so the size follows its memory: 9B's 4-bit weights take
    7.9 GiB (measured), 4B's about 3.5 GB, 2B's 2.2 GiB (measured). On a CPU only the smallest
    is usable interactively.
    """
    try:
        import torch

        if torch.cuda.is_available():
            total_gb = torch.cuda.get_device_properties(0).total_memory / 2**30
            # A "16 GB" card reports about 15 GiB.
            if total_gb >= 14:
                return "Qwen/Qwen3.5-9B"
            if total_gb >= 8:
                return "Qwen/Qwen3.5-4B"
            return "Qwen/Qwen3.5-2B"
    except Exception:  # a broken CUDA setup must not stop the app from starting on CPU
        log.exception("could not inspect the GPU; choosing the CPU default model")
    return "Qwen/Qwen3.5-0.8B"


def resolve_quantization(quantize: Quantize, device: str) -> str:
    if quantize == "auto":
        return "4bit" if device == "cuda" else "none"
    return quantize


def _local_path(model_ref: str, cache_dir: Path | None, progress: ProgressCallback) -> Path:
    if model_ref == TINY_PREFIX or model_ref.startswith(TINY_PREFIX + ":"):
        from engine.tiny import ensure_tiny

        family = model_ref.partition(":")[2] or "qwen3_5"
        progress(LoadProgress("building", f"Preparing the tiny random {family} checkpoint"))
        try:
            return ensure_tiny(family, cache_dir)
        except (FileNotFoundError, ValueError) as exc:  # no real Hub files; unknown name
            raise ModelLoadError(str(exc)) from exc
    if model_ref == TINY_VQA:
        if not (TINY_VQA_DIR / "config.json").is_file():
            raise ModelLoadError(f"The tiny-vqa checkpoint is missing from {TINY_VQA_DIR}; "
                                 "rebuild it with `python -m training.tiny_vqa`.")
        return TINY_VQA_DIR
    path = Path(model_ref).expanduser()
    if path.is_dir():
        return path
    if model_ref.startswith((".", "/", "~")):
        raise ModelLoadError(f"No model folder at {model_ref}.")
    return _download(model_ref, progress)


def _download(repo_id: str, progress: ProgressCallback) -> Path:
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    class _Progress(tqdm):
        """Forwards the aggregated byte counter to the caller instead of drawing a bar."""

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.unit == "B":
                progress(
                    LoadProgress(
                        "downloading",
                        f"Downloading {repo_id}",
                        bytes_done=int(self.n),
                        bytes_total=int(self.total or 0),
                    )
                )
            return shown

    progress(LoadProgress("downloading", f"Downloading {repo_id}"))
    try:
        return Path(snapshot_download(repo_id, tqdm_class=_Progress))
    except Exception as exc:  # offline, unknown repo, gated repo, disk full: all end the same way
        log.warning("download of %s failed: %s", repo_id, exc)
        raise ModelLoadError(
            f"Could not download {repo_id} ({type(exc).__name__}). If this machine is offline, "
            "download the weights elsewhere and start with "
            "`python app.py --model /path/to/folder`, or try the app with "
            "`python app.py --model tiny-random`."
        ) from exc


def _quantization_config(quantization: str, family: Family):
    from transformers import BitsAndBytesConfig

    keep = list(family.keep_unquantized)
    if quantization == "4bit":
        import torch

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=keep,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
    return None


def load_model(
    model_ref: str,
    *,
    quantize: Quantize = "auto",
    device: str | None = None,
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    adapters: Mapping[str, str | Path] | None = None,
):
    """Load (model, processor, family, report). Raises ModelLoadError with an actionable message."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    progress = progress or (lambda p: None)
    started = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    quantization = resolve_quantization(quantize, device)
    if quantization != "none" and device == "cpu":
        log.warning("bitsandbytes %s on CPU is slow; it is meant for GPUs", quantization)
    if quantization == "8bit":
        _quiet_int8_casts()

    progress(LoadProgress("resolving", f"Looking for {model_ref}"))
    path = _local_path(model_ref, cache_dir, progress)
    path, merge_adapter, notes = _weights(model_ref, path, cache_dir, progress)
    family, trust_remote_code = _family(model_ref, path)
    try:
        if family.loader is None:
            AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"{model_ref} is not a transformers model folder ({exc}).") from exc

    progress(LoadProgress("loading", f"Loading {model_ref} ({quantization})"))
    measure_peak = device == "cuda" and _reset_cuda_peak(torch)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    kwargs: dict = {"dtype": dtype}
    quant_config = _quantization_config(quantization, family)
    if quant_config is not None:
        kwargs["quantization_config"] = quant_config
        kwargs["device_map"] = {"": device if device != "cuda" else 0}
    try:
        if family.loader is not None:
            processor, model = _project_loader(family.loader)(path, **kwargs)
        else:
            processor = AutoProcessor.from_pretrained(
                _processor_folder(merge_adapter, path), trust_remote_code=trust_remote_code)
            model = AutoModelForImageTextToText.from_pretrained(
                path, trust_remote_code=trust_remote_code, **kwargs)
        if merge_adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(merge_adapter)).merge_and_unload()
    except ModelLoadError:
        raise
    except Exception as exc:
        log.exception("loading %s failed", model_ref)
        raise ModelLoadError(f"Could not load {model_ref}: {type(exc).__name__}: {exc}") from exc
    if quant_config is None:
        model.to(device)
    model.eval()
    # Counted before adapters are attached, whose own small linears are not the model's.
    quantized, kept = _linear_layers(model) if quant_config is not None else ({}, {})
    if adapters:
        progress(LoadProgress("loading", f"Attaching adapters: {', '.join(adapters)}"))
    adapter_names = load_adapters(model, adapters or {})

    report = LoadReport(
        model_id=model_ref,
        path=str(path),
        family=family.name,
        quantization=quantization,
        quantized_modules=sum(quantized.values()),
        kept_unquantized=family.keep_unquantized if quant_config is not None else (),
        footprint_bytes=int(model.get_memory_footprint()),
        device=device,
        load_seconds=time.perf_counter() - started,
        cuda_peak_bytes=torch.cuda.max_memory_allocated() if measure_peak else None,
        revision=_revision(path),
        notes=notes,
        quantized_by_prefix=tuple(sorted(quantized.items())),
        unquantized_by_prefix=tuple(sorted(kept.items())),
        adapters=adapter_names,
    )
    log.info("%s", report.summary())
    for note in notes:
        log.info("%s", note)
    progress(LoadProgress("ready", f"{model_ref} is ready"))
    return model, processor, family, report


def _weights(model_ref: str, path: Path, cache_dir: Path | None,
             progress: ProgressCallback) -> tuple[Path, Path | None, tuple[str, ...]]:
    """(model folder, LoRA adapter folder to merge into it or None, notes) for what `path`
    holds: a model, a trainer's checkpoint or output folder, or a LoRA adapter (loaded on the
    base its adapter_config.json names, and merged into it)."""
    found = resolve(path)
    notes = (found.note,) if found.note else ()
    if found.kind == "model":
        return found.path, None, notes
    if not found.base_model:
        raise ModelLoadError(
            f"{model_ref} is a LoRA adapter that names no base model (base_model_name_or_path "
            f"in its adapter_config.json): start with --model BASE --adapter NAME={path}.")
    progress(LoadProgress("resolving", f"{model_ref} is a LoRA adapter on {found.base_model}"))
    base = resolve(_local_path(found.base_model, cache_dir, progress))
    if base.kind != "model":
        raise ModelLoadError(f"The base model of {model_ref}, {found.base_model}, is itself an "
                             "adapter; merge it first.")
    merged = f"{found.path} is a LoRA adapter, merged into its base model {found.base_model}"
    return base.path, found.path, (*notes, merged)


def _processor_folder(adapter: Path | None, base: Path) -> Path:
    """Trainers save the processor beside the adapter; without one, the base model's."""
    if adapter is not None and any((adapter / name).is_file() for name in (
            "processor_config.json", "preprocessor_config.json")):
        return adapter
    return base


def _reset_cuda_peak(torch) -> bool:
    """Start measuring the load's peak GPU memory; False where there is no allocator to measure
    (ZeroGPU emulates CUDA in the app's own process and has no peak statistics to reset)."""
    try:
        torch.cuda.reset_peak_memory_stats()
    except RuntimeError as exc:
        log.info("not measuring peak GPU memory: %s", exc)
        return False
    return True


def _family(model_ref: str, path: Path) -> tuple[Family, bool]:
    """The checkpoint's family, and whether its own modeling code must be trusted to load it.

    Read from config.json directly: a model type that needs remote code is unknown to
    AutoConfig until that code runs, and known-broken code must not run at all.
    """
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{model_ref} is not a transformers model folder (no readable config.json)."
        ) from exc
    family = family_for(model_type)
    if not family.trust_remote_code or _native(model_type):
        return family, False
    if family.remote_code_broken:
        raise ModelLoadError(family.remote_code_broken)
    return family, True


def _project_loader(reference: str) -> Callable:
    """The function a family names to load (processor, model) with this project's classes."""
    import importlib

    module_name, function_name = reference.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _native(model_type: str) -> bool:
    """Whether the installed transformers implements this model type itself."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


class _DropInt8CastNotice(logging.Filter):
    """Drops bitsandbytes' notice that 8-bit matmuls cast their inputs to float16.

    The cast is how LLM.int8() works; logged for every linear of every forward, the notice would
    bury the server log. Other messages of that logger still pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def _quiet_int8_casts() -> None:
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropInt8CastNotice) for f in logger.filters):
        logger.addFilter(_DropInt8CastNotice())


def _linear_layers(model) -> tuple[Counter, Counter]:
    """Linear layers by module prefix: (quantized by bitsandbytes, left in full precision)."""
    import bitsandbytes as bnb
    import torch

    quantized: Counter = Counter()
    kept: Counter = Counter()
    for name, module in model.named_modules():
        prefix = ".".join(name.split(".")[:2])
        if isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            quantized[prefix] += 1
        elif type(module) is torch.nn.Linear:
            kept[prefix] += 1
    return quantized, kept


def _revision(path: Path) -> str | None:
    """The hub commit for a downloaded snapshot (its folder name), else None."""
    parts = path.resolve().parts
    if len(parts) >= 2 and parts[-2] == "snapshots":
        return parts[-1]
    return None
