"""What every panel's handlers share: errors to warnings, Gradio values to studio values, the
chat view as Gradio updates, and the queue's lanes.

`warn` shows an error a user can act on as a short warning and logs anything else with its
traceback behind a one-line apology. `options` turns the settings column's values into
`TurnOptions`; `received` makes the question box's text valid before any of it is sent
back; `view` gives the updates for the chat and the controls under it, in the order
of `ChatView.outputs`; `checked_here` checks an answering event's inputs in its handler's
thread. `NEVER_WAITS` and `model_lane` are the lanes every event is wired into, and
`start_queue` bounds only the second. Nothing here touches the engine or the store.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import contextmanager

import gradio as gr

from engine.errors import RequestError, StudioError
from engine.types import Sampling
from storage import StorageError
from studio.turns import ChatState, ConversationGone, Studio, TurnOptions, valid_text
from ui.render import feedback_values, inert_html, render_chat, version_label

# Named as before the page was split, so log filters that pick out its failures still do.
log = logging.getLogger("ui.page")

# Redrawing the chat per token costs the browser and the server more than the model does;
# a dozen frames a second read as smooth streaming. With several answers streaming at once
# (a batching engine) each redraws less often, so that rendering, which holds the
# interpreter, keeps to about the same total and does not slow the decoding of them all.
REDRAW_INTERVAL_S = 0.08
MAX_REDRAW_INTERVAL_S = 0.4
FAILED = "Something went wrong on the server; it was logged. Please try again."
BUSY = ("An answer is still coming: send this when it has finished, or press Stop. "
        "Your question is still in the box.")
# How many updates `view` gives: handlers that leave the chat alone skip this many.
VIEW_SIZE = 6

# The queue's two lanes. Gradio runs each queued event one call at a time, shared by every
# visitor, unless told otherwise (the page keeps that default for the owner's heavy data
# tab). An event that never waits for the model must not wait for anyone: under that
# default eight visitors ticking "Save my data", or each redrawing their conversation list
# after an answer, waited in line for each other. Queued rather than unqueued, because only
# queued events show their gr.Info / gr.Warning on the page.
NEVER_WAITS = {"concurrency_limit": None}
MODEL_LANE = "model"


def model_lane(width: int) -> dict:
    """The lane of the events that answer: one shared by them all, as wide as the engine's
    batch (`Engine.concurrency`); a visitor beyond it waits in the queue, with a position."""
    return {"concurrency_id": MODEL_LANE, "concurrency_limit": width}


def start_queue(demo: gr.Blocks, max_waiting: int) -> None:
    """Turn on the page's queue, refusing a question when `max_waiting` already wait for the
    model, and nothing else.

    Gradio's own bound (`max_size`) counts every waiting event: with the model's lane full,
    a visitor could no longer tick "Save my data", open a conversation or erase their data
    ("Queue is full"), although those never wait for the model and take no time. This
    reaches into Gradio's queue (its version is pinned, and a test fills the lane)."""
    demo.queue(max_size=None, default_concurrency_limit=1)
    queue = demo._queue
    join = queue.push

    async def push(body, request, username):
        fn = demo.fns.get(body.fn_index) if body.fn_index is not None else None
        if fn is not None and fn.concurrency_id == MODEL_LANE:
            lane = queue.event_queue_per_concurrency_id.get(MODEL_LANE)
            waiting = len(lane.queue) if lane is not None else 0
            if waiting >= max_waiting:
                return (False, f"Queue is full: {waiting} questions are already waiting for "
                        "the model. Please try again in a minute.", "queue_full")
        return await join(body, request, username)

    queue.push = push


@contextmanager
def answering(chat_state: ChatState):
    """Around a handler that streams an answer into a tab that it marked busy.

    The handler frees the tab itself just before its last update, once the turn is settled:
    freed only after it (when Gradio next resumes the handler), a question sent the moment
    the finished answer shows would be refused as "still coming". An answer that ends early
    (an error, or the page stopped reading) frees the tab here.
    """
    try:
        yield
    except BaseException:
        chat_state.busy = False
        raise


def checked_here(handler: Callable, inputs: list) -> Callable:
    """`handler` (a generator) for an event wired with `preprocess=False`: each of its `inputs`
    goes through its component's own check (a slider's bounds, the box's file types) here, in
    the handler's thread, before the handler sees it.

    Gradio would check each input on a worker thread of its own, one after the other, every
    one a hop from the server's event loop and back; with answers streaming, each hop waits
    for the loop, and the chat's ten inputs took 50-70 ms at eight users before the question
    could reach the model. Gradio still validates uploads before the handler runs (the files
    must be its own uploads). A choice (the adapter) passes as it came: its choices change per
    session, and the engine refuses an unknown adapter with a clear message.
    """

    @functools.wraps(handler)  # Gradio reads the signature for the `gr.Request` argument
    def checked(*values):
        values = list(values)
        for i, component in enumerate(inputs):
            values[i] = _preprocess(component, values[i])
        yield from handler(*values)

    return checked


def _preprocess(component, value):
    if isinstance(component, gr.State | gr.Dropdown | gr.Radio):
        return value
    if value is not None and getattr(component, "data_model", None) is not None:
        value = component.data_model.model_validate(value)
    try:
        return component.preprocess(value)
    except gr.Error:
        raise
    except Exception as exc:
        log.info("%s refused %r: %s", type(component).__name__, value, exc)
        raise gr.Error(f"The value given for “{component.label or 'a setting'}” cannot be "
                       "used.") from None


def redraw_interval(studio: Studio) -> float:
    return min(MAX_REDRAW_INTERVAL_S, REDRAW_INTERVAL_S * max(1, studio.streaming))


def warn(exc: Exception) -> None:
    if isinstance(exc, StudioError | StorageError):
        gr.Warning(inert_html(str(exc)))  # may quote a model server
    else:
        log.error("handler failed", exc_info=exc)
        gr.Warning(FAILED)


def session_key(request: gr.Request | None, state: ChatState) -> str:
    return getattr(request, "session_hash", None) or state.owner()


def received(message: dict | None) -> dict:
    """The question box's value with its text made valid (`valid_text`). What the box sent
    goes back out before the studio has seen it (the page's echo of the question, a refused
    question given back to the box), and Gradio cannot send a lone UTF-16 surrogate, which a
    browser can send (pasted text): the update would be lost with the page's connection."""
    message = dict(message or {})
    message["text"] = valid_text(message.get("text") or "")
    return message


def message_files(message: dict | None) -> list[str]:
    files = (message or {}).get("files") or []
    return [f if isinstance(f, str) else f.get("path") for f in files]


def _seed(value) -> int | None:
    """The seed box: empty means a new sample each time; anything else must be a number."""
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    try:
        return int(float(text))
    except (ValueError, OverflowError):  # "abc", "nan"; "inf", "1e400"
        raise RequestError("The seed must be a whole number, or empty for a new sample "
                           "each time.") from None


def options(think, budget, max_tokens, temperature, top_p, top_k, seed, adapter) -> TurnOptions:
    """The settings column's values (`SettingsColumn.inputs` order) as the studio's options."""
    return TurnOptions(
        thinking=bool(think), thinking_budget=int(budget),
        sampling=Sampling(max_new_tokens=int(max_tokens), temperature=float(temperature),
                          top_p=float(top_p), top_k=int(top_k or 0), seed=_seed(seed)),
        adapter=None if adapter in (None, "", "Base model") else adapter)


def view(chat_state: ChatState, streaming: bool = False, plain: bool = False,
         controls: bool = True) -> tuple:
    """Updates for the chat and the controls under it (`ChatView.outputs` order). `plain`: the
    chat as its list of messages (what API clients read), without the thumbs' states, and
    the controls left alone, since no page shows them. `controls=False` leaves the controls
    as they are: they are hidden while an answer streams (by the page's echo of a question,
    by a regenerated answer's first redraw) and every control update costs the server a new
    component and its configuration, on the thread that serves every visitor."""
    messages, message_slots = render_chat(chat_state)
    # While streaming, the messages alone: a Chatbot update would copy every image of the
    # conversation into the cache again at each redraw; the thumbs change only at the end.
    chat = messages if plain or streaming else _with_thumbs(chat_state, messages)
    if plain or not controls:
        return (chat, message_slots, *[gr.skip()] * (VIEW_SIZE - 2))
    if streaming or not tools_shown(chat_state):
        # What is inside a hidden row stays as it is: whatever shows it again sets it.
        return (chat, message_slots, gr.Row(visible=False), *[gr.skip()] * (VIEW_SIZE - 3))
    label = version_label(chat_state)
    return (chat, message_slots, gr.Row(visible=True), label,
            gr.Button(visible=bool(label)), gr.Button(visible=bool(label)))


def _with_thumbs(chat_state: ChatState, messages: list):
    """The chat with its thumbs, or its messages alone when the page shows those thumbs
    already. A Chatbot update makes the server build a new component and work out its API
    schema again (about 2 ms on the event loop that serves every visitor), which New chat and
    every finished answer would otherwise pay for nothing."""
    votes = feedback_values(chat_state)
    shown = tuple(votes)
    while shown and shown[-1] is None:
        shown = shown[:-1]
    if shown == chat_state.votes_shown:
        return messages
    chat_state.votes_shown = shown
    return gr.Chatbot(value=messages, feedback_value=votes)


def tools_shown(chat_state: ChatState) -> bool:
    """Whether the tools under the last answer (versions, correct) are shown: when there is
    an answer and no comparison waits for a verdict."""
    last = chat_state.turns[-1] if chat_state.turns else None
    return chat_state.comparison is None and last is not None and last.answer is not None


def keep_view() -> list:
    """`view`'s place in a handler's outputs, left as it is."""
    return [gr.skip()] * VIEW_SIZE


def view_after(exc: Exception, chat_state: ChatState) -> list:
    """`view`'s place after a handler failed with `exc`: a conversation deleted meanwhile,
    which the tab has left, goes from the page too; anything else leaves it as it was."""
    return list(view(chat_state)) if isinstance(exc, ConversationGone) else keep_view()
