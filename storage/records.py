"""Values the store takes and gives back.

Callers build `ImageBlob`, `AnswerMeta` and `AnswerStats`; the store returns the rest. All are
frozen dataclasses; timestamps are ISO 8601 strings in UTC with milliseconds
("2026-11-21T16:08:00.123+00:00"), which sort as text. Nothing here touches SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant"]
# "generated": written by a model; "edit": a user's correction of another answer.
Origin = Literal["user", "generated", "edit"]
Status = Literal["streaming", "done"]
FinishReason = Literal["stop", "length", "cancelled", "error", "interrupted"]
Side = Literal["A", "B"]

# Votes on one answer; the latest one is the current state ("clear" withdraws a vote).
VOTE_KINDS = ("like", "dislike", "clear")
# Judgements about two sibling answers; the latest one per pair is the current state.
PAIR_KINDS = ("pick", "tie", "both_bad")
# A correction; every edit also stores the corrected text as a sibling answer.
EDIT_KIND = "edit"
FEEDBACK_KINDS = (*VOTE_KINDS, *PAIR_KINDS, EDIT_KIND)
FINISH_REASONS = ("stop", "length", "cancelled", "error", "interrupted")


@dataclass(frozen=True)
class ImageBlob:
    """An already-cleaned image: encoded bytes plus what the cleaner measured."""

    data: bytes
    format: str  # Pillow format name: "PNG", "JPEG", "WEBP", ...
    width: int
    height: int


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    format: str
    width: int
    height: int
    byte_size: int


@dataclass(frozen=True)
class AnswerMeta:
    """How an answer is being produced; fixed when generation starts."""

    model_id: str
    revision: str | None = None
    quantization: str = "none"
    adapter: str | None = None
    thinking: bool = False
    thinking_budget: int | None = None
    sampling: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    # Set when the answer is one side of a side-by-side comparison.
    compare_group: str | None = None
    side: Side | None = None


@dataclass(frozen=True)
class AnswerStats:
    """How generation went; known when it ends."""

    reasoning_tokens: int = 0
    answer_tokens: int = 0
    time_to_first_token_s: float | None = None
    duration_s: float = 0.0
    finish_reason: FinishReason = "stop"
    error: str | None = None
    # The seed actually used, when the engine picked one; replaces AnswerMeta.seed if set.
    seed: int | None = None
    budget_exhausted: bool = False


@dataclass(frozen=True)
class Feedback:
    """One feedback event. Which fields are set depends on `kind`:
    dislike: reasons, comment; pick: other_message_id (the loser), left_message_id;
    tie / both_bad: other_message_id; edit: edit_message_id (the stored correction)."""

    id: str
    message_id: str
    kind: str
    created_at: str
    reasons: tuple[str, ...] = ()
    comment: str | None = None
    other_message_id: str | None = None
    left_message_id: str | None = None
    edit_message_id: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: str
    conversation_id: str
    parent_id: str | None
    role: Role
    origin: Origin
    text: str
    reasoning: str
    status: Status
    created_at: str
    updated_at: str
    image_shas: tuple[str, ...] = ()
    # For origin "edit": the answer this one corrects.
    corrects_id: str | None = None
    # Generated answers only.
    meta: AnswerMeta | None = None
    stats: AnswerStats | None = None
    # Current state: the latest like/dislike (None when never voted or withdrawn), and the
    # latest pick/tie/both_bad this answer took part in.
    vote: Feedback | None = None
    comparison: Feedback | None = None


@dataclass(frozen=True)
class Conversation:
    """A conversation with every message of its tree, oldest first, and its feedback."""

    id: str
    title: str
    created_at: str
    updated_at: str
    consent_version: str
    consented_at: str
    messages: tuple[StoredMessage, ...] = ()
    # Every feedback event of the conversation, oldest first (history, for export).
    feedback: tuple[Feedback, ...] = ()

    def message(self, message_id: str) -> StoredMessage:
        for message in self.messages:
            if message.id == message_id:
                return message
        raise KeyError(message_id)

    def children(self, parent_id: str | None) -> list[StoredMessage]:
        """Messages answering `parent_id` (None: the opening questions), oldest first."""
        return [m for m in self.messages if m.parent_id == parent_id]

    def path(self, message_id: str) -> list[StoredMessage]:
        """The branch from the first question down to `message_id`, inclusive."""
        by_id = {m.id: m for m in self.messages}
        path = []
        current: str | None = message_id
        while current is not None:
            message = by_id[current]
            path.append(message)
            current = message.parent_id
        path.reverse()
        return path


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    created_at: str
    updated_at: str
    message_count: int


@dataclass(frozen=True)
class ErasureCounts:
    """What a deletion removed."""

    conversations: int = 0
    messages: int = 0
    feedback: int = 0
    images: int = 0


@dataclass(frozen=True)
class StoreStats:
    """Counts for a data dashboard. Feedback counts are events, not current state."""

    conversations: int
    clients: int
    user_messages: int
    answers: int
    images: int
    answers_by_finish_reason: dict[str, int]
    feedback_by_kind: dict[str, int]
    # "YYYY-MM-DD" (UTC) -> number of feedback events that day, oldest first.
    feedback_per_day: dict[str, int]


@dataclass(frozen=True)
class EvaluationRun:
    """One stored evaluation: counts and metrics only, never user text, so erasing a user's
    data leaves it as it is."""

    id: str
    created_at: str
    model_id: str
    # Adapter name -> where it was loaded from.
    adapters: Mapping[str, str]
    split: str
    eval_fraction: float
    # What the run was computed on (`Store.data_snapshot`, plus the evaluation's own counts).
    snapshot: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
