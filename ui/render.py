"""Turning answers into what the chatbot shows, safely.

Model output is untrusted text. `safe_markdown` keeps Markdown formatting but makes raw HTML
inert and turns image syntax into plain text, so an answer can neither inject markup nor make
the browser fetch a URL; code is left as written, so it shows and copies unchanged.
`answer_messages` builds the chatbot messages for one answer: a
collapsible reasoning message (pending while it streams, then "Thought for N s") and the answer
with a short line of stats. `counted` writes a count with its noun, as a person would.

Every redraw of a streaming answer renders the whole conversation again, so what does not
change (questions, finished answers) is made safe once and then read from a small cache; the
text still streaming is not cached, so it cannot push the rest out. The cache holds what users
wrote and were shown: an erasure empties it (`forget`).
"""

from __future__ import annotations

import functools
import html
import re
from dataclasses import dataclass

from markdown_it import MarkdownIt

from engine.types import Stats

# Only to find where code is; the chatbot renders the Markdown itself.
_PARSER = MarkdownIt("commonmark")
_BACKTICKS = re.compile(r"`+")
# What would start raw HTML (or an autolink), a character reference, or an image outside code.
# Backslashes before it are kept: after an odd number it is already escaped.
_ACTIVE = re.compile(r"(\\*)(<|&(?=#?\w+;)|(?<=!)\[)")


# Enough for the finished messages of the conversations streaming at once.
RENDERED_CACHE_SIZE = 1024


def forget(*_erased) -> None:
    """Empty the cache of rendered text (after an erasure: it may hold erased words)."""
    safe_markdown.cache_clear()


def make_safe(text: str) -> str:
    """Markdown with raw HTML and images made inert, and code left exactly as written.

    Outside code, '<', '&' before a character reference and the '[' of '![' get a Markdown
    backslash escape, so they show as themselves. Fenced and indented code blocks (found by
    markdown-it) and inline code spans are untouched: Markdown escapes nothing there, so
    code shows and copies as the model wrote it, and it can hold no live HTML anyway.
    """
    if not text:
        return text
    # Lines as markdown-it counts them: only "\n" ends one.
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    in_code = [False] * len(lines)
    for token in _PARSER.parse(text):
        if token.type in ("fence", "code_block") and token.map:
            for number in range(token.map[0], min(token.map[1], len(lines))):
                in_code[number] = True
    out: list[str] = []
    prose: list[str] = []
    for line, code in zip(lines, in_code, strict=True):
        if code:
            out.append(_escape_prose("".join(prose)))
            prose = []
            out.append(line)
        else:
            prose.append(line)
    out.append(_escape_prose("".join(prose)))
    return "".join(out)


# `make_safe`, remembered: for text that will be drawn again unchanged.
safe_markdown = functools.lru_cache(maxsize=RENDERED_CACHE_SIZE)(make_safe)


def _defuse(match: re.Match) -> str:
    backslashes, active = match.groups()
    return backslashes + ("" if len(backslashes) % 2 else "\\") + active


def _escape_prose(text: str) -> str:
    """Escape outside inline code spans (CommonMark: a run of N backticks up to the next
    run of exactly N; a backslash-escaped backtick opens nothing)."""
    out: list[str] = []
    position = 0
    searched = 0
    while True:
        opening = _BACKTICKS.search(text, searched)
        if opening is None:
            break
        start = opening.start()
        backslashes = len(text[:start]) - len(text[:start].rstrip("\\"))
        if backslashes % 2:  # an escaped backtick is literal; the rest of the run may open
            searched = start + 1
            continue
        closing = _BACKTICKS.search(text, opening.end())
        while closing is not None and len(closing.group()) != len(opening.group()):
            closing = _BACKTICKS.search(text, closing.end())
        if closing is None:
            searched = opening.end()  # never closed: literal backticks
            continue
        out.append(_ACTIVE.sub(_defuse, text[position:start]))
        out.append(text[start:closing.end()])
        position = searched = closing.end()
    out.append(_ACTIVE.sub(_defuse, text[position:]))
    return "".join(out)


def inert_html(text: str) -> str:
    """Text for places that render HTML (toasts): every markup character escaped."""
    return html.escape(text)


def stats_line(stats: Stats | None, model: str | None, adapter: str | None = None) -> str:
    """Tokens, speed, time, the model (left out when None) and how the answer ended."""
    if stats is None:
        return ""
    parts = [f"{stats.total_tokens} tokens"]
    if stats.tokens_per_s:
        parts.append(f"{stats.tokens_per_s:.1f} tok/s")
    parts.append(f"{stats.duration_s:.1f} s")
    if model is not None:
        parts.append(model + (f" + {adapter}" if adapter else ""))
    if stats.finish_reason == "length":
        parts.append("stopped at the token limit")
    elif stats.finish_reason == "cancelled":
        parts.append("stopped")
    if stats.budget_exhausted:
        parts.append("thinking budget used up")
    return " · ".join(parts)


def answer_messages(update, name_model: bool = True) -> list[dict]:
    """Chatbot messages (dicts) for one streaming or finished `TurnUpdate`; its stats line
    names the model that answered unless `name_model` is off."""
    messages = []
    # Text still streaming is different at every redraw: not worth remembering.
    safe = safe_markdown if update.done else make_safe
    if update.reasoning:
        # Gradio shows the duration beside the title, and a spinner while pending.
        metadata = {"title": "Thought" if update.reasoning_done else "Thinking…",
                    "status": "done" if update.reasoning_done else "pending"}
        if update.reasoning_done:
            metadata["duration"] = round(update.reasoning_seconds or 0.0, 1)
        thought = safe_markdown if update.reasoning_done else safe
        messages.append({"role": "assistant", "content": thought(update.reasoning),
                         "metadata": metadata})
    body = safe(update.answer)
    if update.error:
        body = (body + "\n\n" if body else "") + f"**Error:** {safe_markdown(update.error)}"
    line = stats_line(update.stats, update.model if name_model else None,
                      update.adapter) if update.done else ""
    if update.label == "Edited":
        line = "your correction"
    if line:
        body = (body or "*(no answer)*") + f"\n\n<sub>{safe_markdown(line)}</sub>"
    if body or not update.reasoning:
        messages.append({"role": "assistant", "content": body or "…"})
    return messages


def plain_text(shown: str) -> str:
    """Undo `safe_markdown` and drop the stats line: the answer text as the model wrote it."""
    body = shown.split("\n\n<sub>", 1)[0]
    body = re.sub(r"\\(<|&)|(?<=!)\\\[", lambda m: m.group(1) or "[", body)
    return body.strip()


@dataclass(frozen=True)
class Slot:
    """What one chatbot message shows: which turn, and which part of it."""

    turn: int
    part: str  # "image", "question", "reasoning", "answer"


def render_chat(state) -> tuple[list[dict], list[Slot]]:
    """All chatbot messages for a `ChatState`, and what each one is (for like/retry).

    Each turn shows one answer, the one the conversation continues from; its siblings are
    reached with the ‹ › buttons. The reasoning and the answer are consecutive assistant
    messages, which the chatbot draws as one bubble with one set of buttons.
    """
    messages: list[dict] = []
    slots: list[Slot] = []
    for index, turn in enumerate(state.turns):
        for path in turn.image_paths:
            messages.append({"role": "user", "content": {"path": path}})
            slots.append(Slot(index, "image"))
        if turn.question.text:
            messages.append({"role": "user", "content": safe_markdown(turn.question.text)})
            slots.append(Slot(index, "question"))
        if turn.answer is not None:
            for message in answer_messages(turn.answer):
                messages.append(message)
                slots.append(Slot(index, "reasoning" if "metadata" in message else "answer"))
    return messages, slots


def feedback_values(state) -> list[str | None]:
    """The thumbs state of each answer bubble, in order: "Like", "Dislike" or None."""
    shown = {"like": "Like", "dislike": "Dislike"}
    return [shown.get(turn.answer.vote or "") for turn in state.turns
            if turn.answer is not None]


def version_label(state) -> str:
    """"Answer 2 of 3" for the last question when it has several answers, else ""."""
    if not state.turns or state.comparison is not None:
        return ""
    turn = state.turns[-1]
    if len(turn.versions) < 2:
        return ""
    return f"Answer {turn.position() + 1} of {len(turn.versions)}"


def counted(number: int, noun: str) -> str:
    """"1 message", "2 messages": a count as a person writes it."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
