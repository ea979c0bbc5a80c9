"""LoRA adapters on top of a loaded model, each under a name, one active per request.

`load_adapters(model, {"name": "/path/to/adapter"})` attaches PEFT adapters (folders written
by `save_pretrained`: adapter_config.json plus the adapter weights, or a trainer's output or
checkpoint folder holding one, see `engine.checkpoints`) to a transformers model
through its built-in PEFT support, so the model stays the same object and `generate` is
unchanged. A quantized base works too: PEFT wraps the bitsandbytes layers.

`AdapterSwitch(model, names)` then picks, before each generation, which adapter is active:
a name, or None for the base model (all adapters disabled). Switching is safe because whoever
switches holds the model's lock: one request at a time through `generate`, or the batch
scheduler, which runs only requests for the same adapter together and switches between
batches, never inside one. Failures while loading raise `ModelLoadError` with a
message that says which adapter and why; nothing here knows about requests or the UI.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from engine.checkpoints import resolve
from engine.errors import ModelLoadError

log = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
# Names appear in the UI, in stored answers and on the command line (NAME=PATH).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def load_adapters(model, adapters: Mapping[str, str | Path]) -> tuple[str, ...]:
    """Attach each adapter under its name; return the names in the order given."""
    names: list[str] = []
    for name, location in adapters.items():
        path = _checked(name, location)
        try:
            info = model.load_adapter(str(path), adapter_name=name)
        except Exception as exc:  # wrong base model, unknown target modules, bad files
            log.exception("loading adapter %s from %s failed", name, path)
            raise ModelLoadError(
                f"Could not load the adapter {name!r} from {path}: {type(exc).__name__}: {exc}. "
                f"{_base_hint(model, path)}"
            ) from exc
        missing = sorted(key for key in getattr(info, "missing_keys", ()) or ()
                         if _adapter_key(key, name))
        if missing:
            # The adapter's weights are named for another module layout (another base model
            # or another transformers version): they would silently do nothing.
            raise ModelLoadError(
                f"The adapter {name!r} from {path} does not fit this model: {len(missing)} of "
                f"its layers found no weights (first: {missing[0]}). {_base_hint(model, path)}"
            )
        names.append(name)
    if names:
        model.disable_adapters()
    return tuple(names)


def _base_hint(model, path: Path) -> str:
    """What to check, naming the base the adapter's config records, if it records one."""
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        trained_on = config.get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        trained_on = None
    if not isinstance(trained_on, str) or not trained_on:
        return "Check that it was trained on this base model."
    current = getattr(model, "name_or_path", "") or "another model"
    return (f"It was trained on {trained_on}, and this model is {current}: start the app "
            f"with --model {trained_on}, or give an adapter trained on this model.")


def _adapter_key(key: str, name: str) -> bool:
    """Whether `key` names a weight of the adapter `name` (`...q_proj.lora_A.NAME.weight`).
    transformers counts as the adapter's any missing key that merely contains its name, so
    an adapter called "a" would find every weight of the base model missing."""
    parts = key.split(".")
    return name in parts and any(part.startswith("lora_") for part in parts)


def _checked(name: str, location: str | Path) -> Path:
    if not _NAME.match(name):
        raise ModelLoadError(
            f"Adapter name {name!r} is not usable: use letters, digits, '.', '_' or '-' "
            "(at most 64 characters, starting with a letter or digit)."
        )
    path = Path(location).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"No LoRA adapter for {name!r} at {path}: there is no such folder.")
    try:
        found = resolve(path)
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"No LoRA adapter for {name!r} at {path}: {exc} An adapter folder holds "
            f"{CONFIG_FILE} and the adapter weights, as written by PEFT's save_pretrained."
        ) from exc
    if found.kind != "adapter":
        raise ModelLoadError(
            f"{found.path}, given as the adapter {name!r}, is a whole model, not a LoRA adapter: "
            f"start the app with --model {found.path} instead.")
    if found.note:
        log.info("adapter %s: %s", name, found.note)
    return found.path


class AdapterSwitch:
    """Makes one adapter (or none) active; remembers the state to skip needless switches."""

    def __init__(self, model, names: tuple[str, ...]) -> None:
        self.model = model
        self.names = names
        # load_adapters leaves every adapter disabled.
        self._active: str | None = None

    def activate(self, name: str | None) -> None:
        if not self.names or name == self._active:
            return
        if name is None:
            self.model.disable_adapters()
        else:
            _enable_all(self.model)
            self.model.set_adapter(name)
        self._active = name


def _enable_all(model) -> None:
    # transformers' enable_adapters() re-enables LoRA layers but not the full copies an adapter
    # may carry (modules_to_save, e.g. a retrained lm_head), which disable_adapters() turned off.
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    for module in model.modules():
        if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper)):
            module.enable_adapters(True)
