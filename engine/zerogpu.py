"""Running generation inside ZeroGPU's `@spaces.GPU` on a Hugging Face Space, and nowhere else.

On a ZeroGPU Space a GPU is attached only while a function decorated with `spaces.GPU` runs,
for at most the duration it asks for; the call runs in a forked worker process that holds the
GPU. `on_zerogpu()` tells whether this process is on one (the `spaces` package is importable
and the Space says it uses ZeroGPU). `enable()` imports `spaces`, which must happen before
anything touches CUDA: the package emulates CUDA in this process so that a model can be
"moved to the GPU" at start-up and really moved in each worker. The emulation applies to the
thread that imported the package, so the model is loaded on that thread.

`ZeroGPUEngine` wraps any engine so that each request's `stream` runs inside `spaces.GPU` with
a duration sized to that request (`gpu_seconds`), while everything around it (database writes,
the UI) stays outside. The duration is what ZeroGPU checks against the visitor's daily quota
before it lends a GPU, so it must cover the whole answer without asking for more than it needs;
`quota_note()` tells visitors what their quota allows. It implements `engine.protocol.Engine`
by passing everything else to the inner engine, except scoring, which would need a GPU outside
a decorated call and is refused. Elsewhere the app uses engines unwrapped.

The answer runs in the forked worker, where the app's `cancel` cannot reach the inner engine:
Stop reaches it through a flag file the worker checks after each event, and the engine there
ends the answer itself, with its real counts, as it does elsewhere. A stream closed early (a
closed tab) has `spaces` stop the worker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import RequestError
from engine.loading import LoadProgress
from engine.memory import failure_message
from engine.types import Capabilities, Event, GenerationRequest, Message, Score, Stats

if TYPE_CHECKING:
    from engine.protocol import Engine

log = logging.getLogger(__name__)

# Qwen3.5-9B in bf16 decoded 18 tokens/s for one user on a whole H200 with transformers'
# generate (docs/benchmarks.md, "GPU"; its linear-attention layers run in reference PyTorch
# without the flash-linear-attention kernels). A ZeroGPU slice is a share of an H200: a floor
# below that, so that an answer finishes inside its reservation.
TOKENS_PER_SECOND = 15.0
# Starting the worker, moving the weights onto the GPU and reading the prompt and its images.
BASE_SECONDS = 10.0
MAX_SECONDS = 300
# The answer length a ZeroGPU Space allows by default: 44 s of GPU at most per answer, so an
# anonymous visitor's daily quota (120 s) covers at least two full-length answers.
DEFAULT_MAX_NEW_TOKENS = 512
# Daily GPU quotas by visitor tier, in seconds, as Hugging Face documents them
# (https://huggingface.co/docs/hub/spaces-zerogpu, "Usage Tiers").
DAILY_QUOTA_SECONDS = {"without a Hugging Face login": 120, "with a free account": 210,
                       "with PRO": 1500}


def on_zerogpu(environ: dict | None = None) -> bool:
    environ = os.environ if environ is None else environ
    flag = environ.get("SPACES_ZERO_GPU", "").strip().lower()
    return flag in ("1", "t", "true") and importlib.util.find_spec("spaces") is not None


def enable() -> None:
    """Import `spaces` before CUDA is touched (it refuses to start otherwise)."""
    import spaces  # noqa: F401 - imported for its CUDA emulation


def gpu_seconds(request: GenerationRequest, max_new_tokens_limit: int | None = None) -> int:
    """How long to ask ZeroGPU for: enough for every token the request may generate."""
    tokens = request.sampling.max_new_tokens
    if max_new_tokens_limit is not None:
        tokens = min(tokens, max_new_tokens_limit)
    return int(min(MAX_SECONDS, BASE_SECONDS + max(tokens, 1) / TOKENS_PER_SECOND))


def quota_note(max_new_tokens: int) -> str:
    """What a visitor's daily quota allows, for answers of up to `max_new_tokens` tokens."""
    longest = int(BASE_SECONDS + max_new_tokens / TOKENS_PER_SECOND)
    tiers = ", ".join(f"{seconds / 60:g} min {tier}"
                      for tier, seconds in DAILY_QUOTA_SECONDS.items())
    return (f"This Space borrows a GPU for each answer (ZeroGPU). An answer of up to "
            f"{max_new_tokens} tokens reserves up to {longest} s of your daily GPU quota "
            f"({tiers}); a shorter *Max new tokens* reserves less. When the quota is used up, "
            f"answers are refused until it refills.")


class ZeroGPUEngine:
    """Any engine, with `stream` run inside `spaces.GPU(duration=...)`; an `Engine` itself.

    `max_new_tokens_limit` is the inner engine's cap on new tokens: what sizes each request's
    GPU time and the quota note.
    """

    def __init__(self, inner: Engine, spaces_module=None, *,
                 max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        if spaces_module is None:
            import spaces as spaces_module
        self.inner = inner
        self.max_new_tokens_limit = max_new_tokens_limit
        self._gpu_stream = spaces_module.GPU(duration=self._duration)(self._stream)
        self._streaming: set[str] = set()  # request ids, in this (the app's) process

    def _duration(self, request: GenerationRequest) -> int:
        return gpu_seconds(request, self.max_new_tokens_limit)

    def _stream(self, request: GenerationRequest) -> Iterator[Event]:
        # Runs in the worker ZeroGPU forks: the app's cancel cannot reach this engine's
        # requests, only the flag file can.
        flag, cancelled = _cancel_flag(request.request_id), False
        for event in self.inner.stream(request):
            yield event
            if not cancelled and flag.exists():
                self.inner.cancel(request.request_id)
                cancelled = True

    def stream(self, request: GenerationRequest) -> Iterator[Event]:
        self._streaming.add(request.request_id)
        try:
            yield from self._gpu_stream(request)
        except Exception as exc:  # ZeroGPU refused or lost the GPU: the answer ends with why
            yield Event("done", stats=Stats(finish_reason="error"), error=_refusal(exc))
        finally:
            self._streaming.discard(request.request_id)
            _cancel_flag(request.request_id).unlink(missing_ok=True)

    def quota_note(self) -> str | None:
        return quota_note(self.max_new_tokens_limit)

    def score_answers(self, messages: tuple[Message, ...], answers: Sequence[str],
                      adapter: str | None = None) -> list[Score]:
        # The GPU exists only inside a decorated call, and scoring is not one.
        raise RequestError("Scoring answers needs a GPU of its own; on ZeroGPU one is lent "
                           "only while an answer is generated.")

    # Everything else is the inner engine's.

    @property
    def model_ref(self) -> str:
        return self.inner.model_ref

    @property
    def ready(self) -> bool:
        return self.inner.ready

    @property
    def load_error(self) -> str | None:
        return self.inner.load_error

    @property
    def progress(self) -> LoadProgress:
        return self.inner.progress

    @property
    def concurrency(self) -> int:
        return self.inner.concurrency

    def load(self) -> object:
        return self.inner.load()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.inner.wait_ready(timeout)

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def cancel(self, request_id: str) -> None:
        if request_id in self._streaming:
            flag = _cancel_flag(request_id)
            try:
                flag.parent.mkdir(parents=True, exist_ok=True)
                flag.touch()
            except OSError:  # the answer then runs to its end, as if Stop were not pressed
                log.exception("could not ask ZeroGPU's worker to stop %s", request_id)
        self.inner.cancel(request_id)

    def queue_position(self, request_id: str) -> int | None:
        return self.inner.queue_position(request_id)

    def close(self) -> None:
        self.inner.close()


def _cancel_flag(request_id: str) -> Path:
    """The file whose presence tells the worker running `request_id` to stop it."""
    name = hashlib.sha256(request_id.encode()).hexdigest()
    return Path(tempfile.gettempdir()) / "vqa-studio-zerogpu-stop" / name


def _refusal(error: Exception) -> str:
    """The visitor's message for a failed GPU call. The package raises errors with a title and a
    message meant for visitors (quota used up, no GPU free, worker failed); anything else is a
    bug, logged with its traceback."""
    title, message = getattr(error, "title", None), getattr(error, "message", None)
    if not isinstance(message, str):
        return failure_message(error)
    if title == "ZeroGPU worker error":
        # `message` names the worker's exception class: for the log, not for visitors.
        log.warning("ZeroGPU's worker failed: %s", message)
        return ("The GPU lent for this answer failed; nothing more could be generated. "
                "Please try again.")
    return f"{title}: {message}" if title else message
