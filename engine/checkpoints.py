"""What a trainer's folder holds, and where the loadable weights are in it.

`resolve(path)` reads a local folder given as `--model` or `--adapter` and returns a `Found`:
- a model folder (config.json plus weights): a base or merged model, or a Hugging Face
  Trainer `checkpoint-N` of a full fine-tune, whose optimizer, scheduler and RNG state files
  are simply not read;
- a PEFT adapter folder (adapter_config.json plus adapter weights), as PEFT, TRL, ms-swift
  and LLaMA-Factory write it, at the top of their output folder or in a `checkpoint-N`;
- a trainer's output folder holding no weights of its own but `checkpoint-N` folders, directly
  (TRL, LLaMA-Factory, Trainer) or one level down (ms-swift's `output/vN-DATE/checkpoint-N`):
  the checkpoint with the highest step is used, and a note says which.
A DeepSpeed ZeRO checkpoint that holds only sharded optimizer states (a `latest` file, a
`global_stepN/` folder and `zero_to_fp32.py`, no consolidated weights) raises `ModelLoadError`
with the exact command that consolidates it, to run in that folder. Nothing is loaded here.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.errors import ModelLoadError

MODEL_CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                  "pytorch_model.bin.index.json")
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class Found:
    kind: Literal["model", "adapter"]
    path: Path  # the folder to give from_pretrained / load_adapter
    base_model: str | None = None  # adapters: the base named in adapter_config.json
    note: str | None = None  # how the folder was read, for the load report


def resolve(path: Path) -> Found:
    """The loadable weights in `path`; see the module docstring."""
    found = _weights_in(path)
    if found is not None:
        return found
    _refuse_zero_shards(path)
    checkpoint = latest_checkpoint(path)
    if checkpoint is not None:
        found = _weights_in(checkpoint)
        if found is None:
            _refuse_zero_shards(checkpoint)
            raise ModelLoadError(f"{checkpoint} holds no model or adapter weights.")
        note = f"{path} holds no weights of its own; using its latest checkpoint, {checkpoint}"
        return Found(found.kind, found.path, found.base_model, note)
    if (path / MODEL_CONFIG).is_file():
        # Weights under names not listed here: from_pretrained knows best.
        return Found("model", path)
    raise ModelLoadError(
        f"{path} is neither a model folder ({MODEL_CONFIG} and weights) nor a LoRA adapter "
        f"({ADAPTER_CONFIG} and adapter weights), and holds no checkpoint-N folder.")


def _weights_in(path: Path) -> Found | None:
    if (path / ADAPTER_CONFIG).is_file() and any((path / n).is_file() for n in _ADAPTER_WEIGHTS):
        try:
            base = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path / ADAPTER_CONFIG} cannot be read: {exc}") from exc
        note = _training_state_note(path)
        return Found("adapter", path, base or None, note)
    if (path / MODEL_CONFIG).is_file() and (
        any((path / n).is_file() for n in _MODEL_WEIGHTS) or any(path.glob("model-*.safetensors"))
    ):
        return Found("model", path, note=_training_state_note(path))
    return None


def _training_state_note(path: Path) -> str | None:
    state = [name for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json")
             if (path / name).exists()]
    if not state:
        return None
    return f"{path} is a training checkpoint; its training state ({', '.join(state)}) is ignored"


def latest_checkpoint(path: Path) -> Path | None:
    """The `checkpoint-N` with the highest N in `path`, or else in the latest run folder one
    level below it (ms-swift writes each run to its own `vN-DATE` folder)."""
    if not path.is_dir():
        return None
    here = _checkpoints(path)
    if here:
        return max(here)[1]
    runs = [(_run_number(child.name), child.name, checkpoints)
            for child in path.iterdir() if child.is_dir()
            for checkpoints in [_checkpoints(child)] if checkpoints]
    if not runs:
        return None
    return max(max(runs)[2])[1]


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    return [(int(match.group(1)), child) for child in folder.iterdir()
            for match in [_CHECKPOINT.match(child.name)] if match and child.is_dir()]


def _run_number(name: str) -> int:
    match = re.match(r"^v(\d+)-", name)
    return int(match.group(1)) if match else -1


def _refuse_zero_shards(path: Path) -> None:
    """Raise when `path` is a DeepSpeed ZeRO checkpoint without consolidated weights."""
    script = path / "zero_to_fp32.py"
    if not ((path / "latest").is_file() and script.is_file()
            and any(p.is_dir() for p in path.glob("global_step*"))):
        return
    tag = (path / "latest").read_text().strip() or "the latest step"
    raise ModelLoadError(
        f"{path} is a DeepSpeed ZeRO checkpoint ({tag}): it holds sharded optimizer states, "
        "not weights a model can load. Consolidate them first, in that folder, with DeepSpeed "
        f"installed: `{consolidation_command(path)}`, then load the folder again.")


def consolidation_command(path: Path) -> str:
    """The command that writes consolidated weights next to the checkpoint's config."""
    folder = shlex.quote(str(path))
    text = (path / "zero_to_fp32.py").read_text(errors="replace")
    # DeepSpeed 0.14 and later take an output folder and can write safetensors; earlier copies
    # of the script take the output file name.
    if "--safe_serialization" in text:
        return f"cd {folder} && python zero_to_fp32.py . . --safe_serialization"
    return f"cd {folder} && python zero_to_fp32.py . pytorch_model.bin"
