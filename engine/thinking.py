"""Split a model's streamed text into reasoning and answer.

`ThinkingParser` takes decoded text deltas as they arrive and returns, per delta, a list of
("reasoning" | "answer", text) pieces with neighbouring pieces of one kind merged and empty
pieces left out. `flush()` at the end of the stream emits whatever was held back.

Rules:
- Reasoning is the text between the opening and closing tags. It may only open at the very
  start of the stream (leading whitespace aside); an opening tag anywhere later, or after the
  closing tag, is ordinary answer text: the model does not get to re-enter reasoning, and an
  answer that talks about the tags keeps them.
- With `start_in_reasoning=True` the chat template has already written the opening tag, so the
  stream begins inside reasoning; a literal opening tag at its very start is swallowed too.
- No tags at all (and not starting in reasoning): everything is answer, verbatim.
- A missing closing tag leaves everything in reasoning; `flush()` emits it.
- Whitespace right after either tag is dropped, as is whitespace right before the closing tag.
- Tags split across deltas are recognised. Only a trailing part that could still begin a tag
  (and, inside reasoning, trailing whitespace that could still precede the closing tag) is held
  back; everything else is returned at once.

Feeding a text in any split gives the same reasoning and answer as feeding it whole.
Pure Python; knows nothing of tokenizers or models.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["reasoning", "answer"]
Piece = tuple[Kind, str]

# Where the parser is in the stream.
_UNDECIDED = "undecided"  # stream start: an opening tag may still come
_OPENING = "opening"  # stream starts in reasoning: an opening tag may still be swallowed
_REASONING = "reasoning"
_ANSWER = "answer"


class ThinkingParser:
    """One parser per generated stream: `feed` each delta, then `flush` once."""

    def __init__(
        self,
        open_tag: str = "<think>",
        close_tag: str = "</think>",
        start_in_reasoning: bool = False,
    ) -> None:
        if not open_tag or not close_tag:
            raise ValueError("open_tag and close_tag must be non-empty")
        self.open_tag = open_tag
        self.close_tag = close_tag
        self._state = _OPENING if start_in_reasoning else _UNDECIDED
        self._held = ""
        # True while whitespace at the start of the current section is still to be dropped.
        self._strip_leading = start_in_reasoning
        self._seen_close = False

    @property
    def seen_close(self) -> bool:
        """True once the closing tag has gone by."""
        return self._seen_close

    @property
    def in_reasoning(self) -> bool:
        """True while the text being streamed belongs to the reasoning."""
        return self._state in (_OPENING, _REASONING)

    def feed(self, delta: str) -> list[Piece]:
        """Take the next text delta; return the pieces that are now certain."""
        self._held += delta
        pieces: list[Piece] = []
        self._advance(pieces, final=False)
        return pieces

    def flush(self) -> list[Piece]:
        """End of stream: return everything still held back."""
        pieces: list[Piece] = []
        self._advance(pieces, final=True)
        return pieces

    def _advance(self, pieces: list[Piece], final: bool) -> None:
        while True:
            if self._state in (_UNDECIDED, _OPENING):
                if not self._decide_opening(final):
                    return
            elif self._state == _REASONING:
                if not self._advance_reasoning(pieces, final):
                    return
            else:
                self._advance_answer(pieces)
                return

    def _decide_opening(self, final: bool) -> bool:
        """Settle whether the stream opens with a tag; False while it cannot be told yet."""
        text = self._held.lstrip()
        if text.startswith(self.open_tag):
            self._held = text[len(self.open_tag) :]
            self._enter(_REASONING)
            return True
        could_be_tag = self.open_tag.startswith(text)  # also true for whitespace only
        if could_be_tag and not final:
            return False
        if self._state == _OPENING:
            # Already inside reasoning; the leading whitespace would be dropped anyway.
            self._held = text
            self._enter(_REASONING)
        else:
            # An untagged answer is kept verbatim; whitespace alone is no answer.
            if not text:
                self._held = ""
            self._state = _ANSWER
            self._strip_leading = False
        return True

    def _advance_reasoning(self, pieces: list[Piece], final: bool) -> bool:
        """Emit certain reasoning; True when the closing tag was found and the answer begins."""
        if self._strip_leading:
            self._held = self._held.lstrip()
            if not self._held:
                return False
            self._strip_leading = False
        end = self._held.find(self.close_tag)
        if end >= 0:
            _emit(pieces, "reasoning", self._held[:end].rstrip())
            self._held = self._held[end + len(self.close_tag) :]
            self._seen_close = True
            self._enter(_ANSWER)
            return True
        if final:
            _emit(pieces, "reasoning", self._held.rstrip())
            self._held = ""
            return False
        # Hold back the longest ending that could still grow into the closing tag (a shorter
        # one could miss a tag that starts earlier), and the whitespace just before it.
        keep = _tag_prefix_suffix_length(self._held, self.close_tag)
        certain = self._held[: len(self._held) - keep].rstrip()
        _emit(pieces, "reasoning", certain)
        self._held = self._held[len(certain) :]
        return False

    def _advance_answer(self, pieces: list[Piece]) -> None:
        if self._strip_leading:
            self._held = self._held.lstrip()
            if not self._held:
                return
            self._strip_leading = False
        _emit(pieces, "answer", self._held)
        self._held = ""

    def _enter(self, state: str) -> None:
        self._state = state
        self._strip_leading = True


def split_reasoning(
    text: str,
    open_tag: str = "<think>",
    close_tag: str = "</think>",
    start_in_reasoning: bool = False,
) -> tuple[str, str]:
    """Split a complete text into (reasoning, answer) by the same rules as the stream."""
    parser = ThinkingParser(open_tag, close_tag, start_in_reasoning)
    parts: dict[Kind, list[str]] = {"reasoning": [], "answer": []}
    for kind, piece in parser.feed(text) + parser.flush():
        parts[kind].append(piece)
    return "".join(parts["reasoning"]), "".join(parts["answer"])


def _emit(pieces: list[Piece], kind: Kind, text: str) -> None:
    if not text:
        return
    if pieces and pieces[-1][0] == kind:
        pieces[-1] = (kind, pieces[-1][1] + text)
    else:
        pieces.append((kind, text))


def _tag_prefix_suffix_length(text: str, tag: str) -> int:
    """Length of the longest ending of `text` that is a proper beginning of `tag`."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0


ThinkingMode = Literal["never", "switchable", "always"]


def thinking_on(mode: ThinkingMode, asked: bool) -> bool:
    """Whether a request that `asked` for thinking (or not) gets it from a model whose template
    does `mode`: a template that always thinks does so whatever the request says, and then a
    thinking budget still applies."""
    return mode == "always" or (asked and mode == "switchable")


def thinking_mode(render, open_tag: str = "<think>") -> tuple[ThinkingMode, bool]:
    """What a chat template does about thinking, and what it does when not told.

    `render(kwargs)` returns the generation prompt of a one-question conversation rendered with
    the given template keyword arguments. A template "opens" thinking when that prompt ends
    with the opening tag (the model continues inside reasoning). Returns ("never", False) when
    it opens thinking neither with `enable_thinking` true nor false, ("always", True) when it
    does with both, else ("switchable", whether it opens without being told).
    """
    def opens(kwargs: dict) -> bool:
        return render(kwargs).rstrip().endswith(open_tag)

    on, off = opens({"enable_thinking": True}), opens({"enable_thinking": False})
    if on and off:
        return "always", True
    if not on and not off:
        return "never", False
    return "switchable", opens({})
