"""The engine contract: the one way the page, the app, the benches and training use an engine.

An engine turns a `GenerationRequest` into a stream of `Event`s: reasoning and answer deltas,
then exactly one "done" event with `Stats` (an error mid-stream is a "done" event whose finish
reason is "error"). Refusals the user can act on (too many images, model not ready, engine
closed) are `StudioError`s raised by `stream` before any event.

Life cycle: built unloaded; `load()` (blocking, may run in a thread) makes it `ready` or
records why not in `load_error`, which only the engine itself writes; `close()` stops its
threads and lets go of the model or connections, after which every call but `close()` raises
`EngineClosed`. `close()` may be called any number of times.

`engine.local.LocalEngine`, `engine.process.ProcessEngine` (the same in a process of its own),
`engine.remote.RemoteEngine` and `engine.zerogpu.ZeroGPUEngine` implement it;
tests/engine/test_protocol.py checks that their members match. Anything an implementation
offers beyond this (a local model's load report, its batch statistics) belongs
to callers that built that implementation themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from engine.loading import LoadProgress
from engine.types import Capabilities, Event, GenerationRequest, Message, Score


class Engine(Protocol):
    # -- what it is and how loading goes -------------------------------------------------

    @property
    def model_ref(self) -> str:
        """The model as it was asked for (a Hub id, a folder, a served model's name)."""
        ...

    @property
    def ready(self) -> bool:
        """True once loaded and until closed."""
        ...

    @property
    def load_error(self) -> str | None:
        """Why loading failed, for the user; None while loading, once loaded, or not tried."""
        ...

    @property
    def progress(self) -> LoadProgress:
        """Where loading stands, for a status line."""
        ...

    @property
    def concurrency(self) -> int:
        """How many requests a caller should let run at once; more only wait inside."""
        ...

    def load(self) -> object:
        """Load (blocking). Raises a `StudioError` and keeps its message in `load_error` on
        failure. What it returns is the implementation's own report; callers of the
        protocol do not rely on it."""
        ...

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until ready; False when `timeout` seconds passed first."""
        ...

    def capabilities(self) -> Capabilities:
        """What the loaded model can do. Raises `ModelNotReady` before it is loaded."""
        ...

    # -- serving -------------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> Iterator[Event]:
        """Events for one request; closing the iterator cancels it."""
        ...

    def cancel(self, request_id: str) -> None:
        """Stop that request, waiting or running, from any thread. Unknown ids are ignored."""
        ...

    def queue_position(self, request_id: str) -> int | None:
        """0 while it runs, 1.. while it waits, None when the engine cannot tell."""
        ...

    def score_answers(self, messages: tuple[Message, ...], answers: Sequence[str],
                      adapter: str | None = None) -> list[Score]:
        """Log-probabilities of each of `answers` as the reply to `messages`. Engines that
        cannot read their model's logits raise `RequestError`."""
        ...

    def quota_note(self) -> str | None:
        """What visitors should know about a per-answer GPU quota; None when there is none."""
        ...

    def close(self) -> None:
        """Stop serving and let go of the model or connections; idempotent."""
        ...
