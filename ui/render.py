"""Turning answers into what the chatbot shows, safely.

Model output is untrusted text. `safe_markdown` keeps Markdown formatting but makes raw HTML
inert and turns image syntax into plain text, so an answer can neither inject markup nor make
the browser fetch a URL. `answer_messages` builds the chatbot messages for one answer: a
collapsible reasoning message (pending while it streams, then "Thought for N s") and the answer
with a short line of stats.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from engine.types import Stats

_IMAGE_SYNTAX = re.compile(r"!\[")


def safe_markdown(text: str) -> str:
    """Markdown with HTML and images disabled: '<' and '&' are escaped, '![' is defused."""
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return _IMAGE_SYNTAX.sub(r"!\\[", text)


def inert_html(text: str) -> str:
    """Text for places that render HTML (toasts): every markup character escaped."""
    return html.escape(text)


def stats_line(stats: Stats | None, model: str, adapter: str | None = None) -> str:
    if stats is None:
        return ""
    parts = [f"{stats.total_tokens} tokens"]
    if stats.tokens_per_s:
        parts.append(f"{stats.tokens_per_s:.1f} tok/s")
    parts.append(f"{stats.duration_s:.1f} s")
    parts.append(model + (f" + {adapter}" if adapter else ""))
    if stats.finish_reason == "length":
        parts.append("stopped at the token limit")
    elif stats.finish_reason == "cancelled":
        parts.append("stopped")
    if stats.budget_exhausted:
        parts.append("thinking budget used up")
    return " · ".join(parts)


def answer_messages(update) -> list[dict]:
    """Chatbot messages (dicts) for one streaming or finished `TurnUpdate`."""
    messages = []
    if update.reasoning:
        # Gradio shows the duration beside the title, and a spinner while pending.
        metadata = {"title": "Thought" if update.reasoning_done else "Thinking…",
                    "status": "done" if update.reasoning_done else "pending"}
        if update.reasoning_done:
            metadata["duration"] = round(update.reasoning_seconds or 0.0, 1)
        messages.append({"role": "assistant", "content": safe_markdown(update.reasoning),
                         "metadata": metadata})
    body = safe_markdown(update.answer)
    if update.error:
        body = (body + "\n\n" if body else "") + f"**Error:** {safe_markdown(update.error)}"
    line = stats_line(update.stats, update.model, update.adapter) if update.done else ""
    if update.label == "Edited":
        line = "your correction"
    if line:
        body = (body or "*(no answer)*") + f"\n\n<sub>{safe_markdown(line)}</sub>"
    if body or not update.reasoning:
        messages.append({"role": "assistant", "content": body or "…"})
    return messages


def plain_text(shown: str) -> str:
    """Undo `safe_markdown` and drop the stats line: the text a user edited, as they meant it."""
    body = shown.split("\n\n<sub>", 1)[0]
    body = body.replace("!\\[", "![").replace("&lt;", "<").replace("&amp;", "&")
    return body.strip()


@dataclass(frozen=True)
class Slot:
    """What one chatbot message shows: which turn, and which part of it."""

    turn: int
    part: str  # "image", "question", "earlier", "reasoning", "answer"


def render_chat(state) -> tuple[list[dict], list[Slot]]:
    """All chatbot messages for a `ChatState`, and what each one is (for like/edit/retry)."""
    messages: list[dict] = []
    slots: list[Slot] = []
    for index, turn in enumerate(state.turns):
        for path in turn.image_paths:
            messages.append({"role": "user", "content": {"path": path}})
            slots.append(Slot(index, "image"))
        if turn.question.text:
            messages.append({"role": "user", "content": safe_markdown(turn.question.text)})
            slots.append(Slot(index, "question"))
        for number, earlier in enumerate(turn.earlier, start=1):
            title = f"Earlier answer {number} of {len(turn.earlier) + 1}"
            if earlier.label:
                title += f" ({earlier.label.lower()})"
            messages.append({"role": "assistant", "content": safe_markdown(earlier.answer),
                             "metadata": {"title": title, "status": "done"}})
            slots.append(Slot(index, "earlier"))
        if turn.answer is not None:
            for message in answer_messages(turn.answer):
                messages.append(message)
                slots.append(Slot(index, "reasoning" if "metadata" in message else "answer"))
    return messages, slots
