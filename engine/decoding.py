"""From generated token ids to stream events, for one request, however it is being decoded.

`AnswerTracker` takes the request's new token ids one at a time (`take`), decodes them
incrementally, splits reasoning from answer, hands each `Event` to the request's `emit`
callable on the decoding thread itself (a queue's `put`, or a pipe to another process) and
counts tokens per phase. It says when the thinking budget is spent; `budget_cue(max_new)`
then holds the one rule for what follows, in both decoding paths: with new tokens left, the
token ids of the cue that tells the model to stop reasoning (from there on everything the
model writes is answer); without, nothing, and the answer ends with its budget exhausted.
`stats()` gives the request's final `Stats`.

Both decoding paths use it: `model.generate` (through `TokenTap`, a stopping criterion) and the
step-level batch scheduler, which calls `take` itself. So the text a user sees, the token
counts and the finish reason mean the same in both.

Knows nothing of the UI or the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from engine.thinking import ThinkingParser
from engine.types import Event, Stats

Emit = Callable[[Event], None]

OPEN_TAG, CLOSE_TAG = "<think>", "</think>"
# Appended when the thinking budget runs out: the model is told to stop reasoning and answer
# from what it has, then the reasoning is closed so the answer follows.
CONCLUDE_CUE = "\n\nTime is up: I will answer now with what I have worked out so far.\n"


class _AnswerOnly:
    """Parser for the text after a forced conclusion: all of it is answer, tags included."""

    in_reasoning = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        return [("answer", text)] if text else []

    def flush(self) -> list[tuple[str, str]]:
        return []


class _Phase:
    """The tokens of one uninterrupted run of generation, decoded incrementally."""

    def __init__(self, tokenizer, parser, emit: Emit, special_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.parser = parser
        self.emit = emit
        self.special_ids = special_ids
        # The text tokens only: special tokens are never text, and keeping them out here means
        # no step re-scans the whole answer.
        self.ids: list[int] = []
        # Incremental detokenization: decode a short window so multi-byte characters split
        # across tokens come out whole, without re-decoding the whole answer every step.
        self._prefix_offset = 0
        self._read_offset = 0

    def take(self, token_id: int) -> None:
        if token_id not in self.special_ids:
            self.ids.append(token_id)
            self._emit(self._decode_delta())

    def _decode_delta(self) -> str:
        ids = self.ids
        prefix = self.tokenizer.decode(ids[self._prefix_offset:self._read_offset])
        text = self.tokenizer.decode(ids[self._prefix_offset:])
        if text.endswith("\ufffd"):
            return ""  # an incomplete character: wait for the next token
        self._prefix_offset, self._read_offset = self._read_offset, len(ids)
        return text[len(prefix):]

    def _emit(self, delta: str) -> None:
        if delta:
            for kind, text in self.parser.feed(delta):
                self.emit(Event(kind, text))

    def flush(self) -> None:
        for kind, text in self.parser.flush():
            self.emit(Event(kind, text))


class AnswerTracker:
    """Everything one request's generated tokens mean so far. Used from one thread at a time."""

    def __init__(self, tokenizer, emit: Emit, *, prefilled: bool, budget: int | None,
                 started: float, eos_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.emit = emit
        self.budget = budget
        self.started = started
        self.eos_ids = eos_ids
        self.prefilled = prefilled
        # End-of-sequence tokens are not text even when they are ordinary vocabulary (BLIP-2
        # ends answers with a newline): they end the answer and are never part of it.
        self.special_ids = set(tokenizer.all_special_ids) | set(eos_ids)
        parser = ThinkingParser(OPEN_TAG, CLOSE_TAG, start_in_reasoning=prefilled)
        self.phase = _Phase(tokenizer, parser, emit, self.special_ids)
        self.reasoning_tokens = 0
        self.answer_tokens = 0
        self.first_token_at: float | None = None
        self.last_id: int | None = None
        self.budget_exhausted = False

    @property
    def in_reasoning(self) -> bool:
        return self.phase.parser.in_reasoning

    @property
    def generated(self) -> int:
        return self.reasoning_tokens + self.answer_tokens

    @property
    def budget_spent(self) -> bool:
        """True while the model is still reasoning and has used its whole budget."""
        return (self.budget is not None and self.in_reasoning
                and self.reasoning_tokens >= self.budget and not self.budget_exhausted)

    def take(self, token_id: int) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self.in_reasoning:
            self.reasoning_tokens += 1
        else:
            self.answer_tokens += 1
        self.last_id = token_id
        self.phase.take(token_id)

    def budget_cue(self, max_new: int) -> list[int]:
        """The budget is spent: the cue to feed next while fewer than `max_new` tokens were
        generated, else [] and the answer ends here, its budget marked exhausted."""
        if self.generated < max_new:
            return self.conclude()
        self.budget_exhausted = True
        return []

    def conclude(self) -> list[int]:
        """The budget is spent: the cue's token ids to feed next; all text after them is answer."""
        self.phase.flush()
        self.budget_exhausted = True
        self.phase = _Phase(self.tokenizer, _AnswerOnly(), self.emit, self.special_ids)
        return self.tokenizer(CONCLUDE_CUE + CLOSE_TAG + "\n\n",
                              add_special_tokens=False)["input_ids"]

    def finish(self) -> None:
        self.phase.flush()

    def ended_on_eos(self) -> bool:
        return self.last_id is not None and self.last_id in self.eos_ids

    def stats(self, *, seed: int, finish_reason: str | None = None,
              max_new: int | None = None) -> Stats:
        """Final stats. Without `finish_reason` it is "length" when `max_new` tokens were used
        and the last one was not end-of-sequence, else "stop"."""
        if finish_reason is None:
            used_up = max_new is not None and self.generated >= max_new
            finish_reason = "length" if used_up and not self.ended_on_eos() else "stop"
        first = self.first_token_at
        return Stats(
            reasoning_tokens=self.reasoning_tokens,
            answer_tokens=self.answer_tokens,
            time_to_first_token_s=(first - self.started) if first else None,
            duration_s=time.perf_counter() - self.started,
            finish_reason=finish_reason,
            seed=seed,
            budget_exhausted=self.budget_exhausted,
        )


class TokenTap:
    """Stopping criterion for `model.generate` that feeds each new token to a tracker and stops
    when the request is cancelled or its thinking budget is spent. Runs on the generation
    thread."""

    def __init__(self, tracker: AnswerTracker, prompt_length: int,
                 cancelled: threading.Event) -> None:
        self.tracker = tracker
        self.prompt_length = prompt_length
        self.cancelled = cancelled
        self.seen = 0

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[0, self.prompt_length + self.seen:].tolist()
        for token_id in new:
            self.seen += 1
            self.tracker.take(token_id)
        stop = self.cancelled.is_set() or self.tracker.budget_spent
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
