"""Running generation inside ZeroGPU's `@spaces.GPU` on a Hugging Face Space, and nowhere else.

On a ZeroGPU Space a GPU is attached only while a function decorated with `spaces.GPU` runs,
for at most the duration it asks for. `on_zerogpu()` tells whether this process is on one
(the `spaces` package is importable and the Space says it uses ZeroGPU); `ZeroGPUEngine` wraps
any engine so that each request's `stream` runs inside `spaces.GPU` with a duration computed
from the request (its max new tokens), while everything around it (database writes, the UI)
stays outside. Elsewhere the app uses the engine unwrapped.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

from engine.types import Event, GenerationRequest

# A generous decode rate for a ZeroGPU slice, plus time for the prompt and images: the
# duration must cover the whole answer or ZeroGPU cuts it off.
TOKENS_PER_SECOND = 20.0
BASE_SECONDS = 15.0
MAX_SECONDS = 300


def on_zerogpu(environ: dict | None = None) -> bool:
    environ = os.environ if environ is None else environ
    flag = environ.get("SPACES_ZERO_GPU", "").strip().lower()
    return flag in ("1", "true") and importlib.util.find_spec("spaces") is not None


def gpu_seconds(request: GenerationRequest) -> int:
    """How long to ask ZeroGPU for: enough for every token the request may generate."""
    tokens = request.sampling.max_new_tokens
    return int(min(MAX_SECONDS, BASE_SECONDS + tokens / TOKENS_PER_SECOND))


class ZeroGPUEngine:
    """Any engine, with `stream` run inside `spaces.GPU(duration=...)`."""

    def __init__(self, inner, spaces_module=None) -> None:
        if spaces_module is None:
            import spaces as spaces_module
        self.inner = inner
        self._gpu_stream = spaces_module.GPU(duration=self._duration)(self._stream)

    @staticmethod
    def _duration(request: GenerationRequest) -> int:
        return gpu_seconds(request)

    def _stream(self, request: GenerationRequest) -> Iterator[Event]:
        yield from self.inner.stream(request)

    def stream(self, request: GenerationRequest) -> Iterator[Event]:
        return self._gpu_stream(request)

    def __getattr__(self, name: str):
        # Everything but `stream` (loading, capabilities, cancel, progress) is the inner engine's.
        return getattr(self.inner, name)
