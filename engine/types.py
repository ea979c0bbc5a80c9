"""Values that cross the engine boundary.

A caller builds a `GenerationRequest` (conversation so far, with already-cleaned PIL images,
thinking switch and budget, sampling settings) and gets back an iterator of `Event`s: any
number of "reasoning" and "answer" deltas, then exactly one "done" event carrying `Stats`.
An engine failure mid-stream arrives as a "done" event whose finish reason is "error" and
whose `error` is a short message meant for the user.

`Capabilities` is what a loaded model can do, so a UI can enable or disable controls.
Nothing here knows about torch, Gradio or SQLite.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL.Image import Image

Role = Literal["system", "user", "assistant"]
EventKind = Literal["reasoning", "answer", "done"]
FinishReason = Literal["stop", "length", "cancelled", "error", "interrupted"]


@dataclass(frozen=True)
class Message:
    """One message of the conversation. Images belong to user messages, in order."""

    role: Role
    text: str
    images: tuple[Image, ...] = ()


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. temperature 0 means greedy; seed None means 'pick one, report it'.

    top_k 0 and repetition_penalty None keep the checkpoint's own values (its
    generation_config); see `engine.sampling` for how a request and a checkpoint combine.
    """

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    repetition_penalty: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    thinking: bool = False
    # Maximum number of reasoning tokens; None lets the model think until max_new_tokens.
    thinking_budget: int | None = None
    sampling: Sampling = field(default_factory=Sampling)
    # Name of a loaded LoRA adapter, or None for the base model.
    adapter: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class Stats:
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    time_to_first_token_s: float | None = None
    duration_s: float = 0.0
    finish_reason: FinishReason = "stop"
    seed: int | None = None
    # True when the thinking budget ran out and the model was told to conclude.
    budget_exhausted: bool = False

    @property
    def total_tokens(self) -> int:
        return self.reasoning_tokens + self.answer_tokens

    @property
    def tokens_per_s(self) -> float:
        """Decode speed after the first token; 0 when it cannot be measured."""
        if self.time_to_first_token_s is None or self.total_tokens < 2:
            return 0.0
        decode_time = self.duration_s - self.time_to_first_token_s
        return (self.total_tokens - 1) / decode_time if decode_time > 0 else 0.0


@dataclass(frozen=True)
class Event:
    kind: EventKind
    text: str = ""
    stats: Stats | None = None
    # Set only on a "done" event whose finish reason is "error": a message for the user.
    error: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What the loaded model can do; the UI enables controls from this."""

    model_id: str
    family: str
    thinking: bool
    multi_image: bool
    max_images: int
    context_length: int
    thinking_budget: bool = True
    # Prompt tokens one image costs at the engine's pixel budget; 0 when not known.
    image_tokens: int = 0
    # What the checkpoint's chat template does: "never" thinks, "switchable" (the request's
    # `thinking` decides; `thinking_default` is what the model does when not told), "always"
    # thinks whatever the request says (a budget still applies).
    thinking_mode: Literal["never", "switchable", "always"] = "switchable"
    thinking_default: bool = False
    adapters: tuple[str, ...] = ()
    quantization: str = "none"
    revision: str | None = None


@dataclass(frozen=True)
class Score:
    """Log-probability of one answer; natural log, so 0 is certainty and lower is less likely."""

    total_logprob: float
    tokens: int

    @property
    def mean_logprob(self) -> float:
        return self.total_logprob / self.tokens if self.tokens else 0.0
