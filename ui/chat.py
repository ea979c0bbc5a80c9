"""The chat panel: the conversation, the question box, the settings column, and asking.

`build_view`, `build_question_box` and `build_settings` draw the components; `Chat` holds the
handlers (echo the question, stream the answer, the "chat" API endpoint, regenerate, stop, and
stepping between an answer's versions); `wire` connects them. Each handler adapts Gradio
values to a flow of `studio.turns.Studio` and its updates back to the chat.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from studio.turns import ChatState, Studio
from ui.common import (
    BUSY,
    NEVER_WAITS,
    answering,
    checked_here,
    keep_view,
    message_files,
    model_lane,
    options,
    received,
    redraw_interval,
    session_key,
    tools_shown,
    view,
    warn,
)
from ui.render import inert_html, render_chat, safe_markdown
from ui.uploads import Uploads

IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"]
# Drawn in the browser the moment Enter is pressed, before the server has seen the question:
# the question's text joins the chat (the server's echo adds its images and clears the box a
# moment later). A question refused because an answer is streaming leaves the chat at that
# answer's next redraw, and stays in the box.
ECHO_JS = r"""
(message, history) => {
  const typed = ((message && message.text) || '').trim();
  if (!typed) return [history];
  // Typed text is shown as itself: every ASCII punctuation mark backslash-escaped, so no
  // HTML, image or link in it renders (the server's echo replaces this a moment later).
  const text = typed.replace(/[!-\/:-@[-`{-~]/g, '\\$&');
  return [[...(history || []), {role: 'user', content: [{type: 'text', text: text}],
                                 metadata: null, options: null}]];
}
"""


@dataclass
class ChatView:
    """The conversation and the row of tools under its last answer."""

    chatbot: gr.Chatbot
    slots: gr.State  # what each shown message is (`render.MessageSlot`), for the thumbs
    answer_tools: gr.Row
    prev_answer: gr.Button
    version_note: gr.Markdown
    next_answer: gr.Button
    correct: gr.Button

    @property
    def outputs(self) -> list:
        """What `common.view` updates, in its order."""
        return [self.chatbot, self.slots, self.answer_tools, self.version_note,
                self.prev_answer, self.next_answer]


@dataclass
class SettingsColumn:
    thinking: gr.Checkbox
    budget: gr.Slider
    adapter: gr.Dropdown
    max_new: gr.Slider
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    seed: gr.Textbox

    @property
    def inputs(self) -> list:
        """What `common.options` takes, in its order."""
        return [self.thinking, self.budget, self.max_new, self.temperature, self.top_p,
                self.top_k, self.seed, self.adapter]


def build_view(slots: gr.State) -> ChatView:
    chatbot = gr.Chatbot(
        elem_id="chatbot", label="Conversation", height=540,
        sanitize_html=True, feedback_options=("Like", "Dislike"))
    with gr.Row(visible=False, elem_id="answer-tools") as answer_tools:
        prev_answer = gr.Button("‹", elem_id="prev-answer", size="sm",
                                visible=False, min_width=44)
        version_note = gr.Markdown("", elem_id="answer-version")
        next_answer = gr.Button("›", elem_id="next-answer", size="sm",
                                visible=False, min_width=44)
        correct = gr.Button("✎ Correct this answer", elem_id="correct",
                            size="sm", min_width=44)
    return ChatView(chatbot, slots, answer_tools, prev_answer, version_note, next_answer,
                    correct)


def build_question_box() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(
        placeholder="Ask about your images — Enter sends, "
                    "Shift+Enter adds a line",
        file_types=IMAGE_TYPES, file_count="multiple",
        sources=["upload"], show_label=False, stop_btn=True,
        elem_id="question")


def build_settings(settings) -> SettingsColumn:
    thinking = gr.Checkbox(label="Think before answering", value=True,
                           elem_id="thinking")
    budget = gr.Slider(
        0, settings.max_new_tokens_limit,
        value=min(1024, settings.max_new_tokens_limit // 2), step=16,
        label="Thinking budget (tokens)", elem_id="budget")
    adapter = gr.Dropdown(["Base model"], value="Base model",
                          label="Model variant", visible=False,
                          elem_id="adapter")
    with gr.Accordion("Sampling", open=False):
        max_new = gr.Slider(1, settings.max_new_tokens_limit,
                            value=min(2048, settings.max_new_tokens_limit),
                            step=1, label="Max new tokens",
                            elem_id="max-new")
        temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05,
                                label="Temperature (0 = greedy)",
                                elem_id="temperature")
        top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top p")
        top_k = gr.Slider(0, 200, value=0, step=1,
                          label="Top k (0 = off)")
        # A text box: a number field turns "empty" into 0 when shown,
        # and every answer would then repeat the same sample.
        seed = gr.Textbox("", label="Seed (empty: a new sample each time)",
                          placeholder="random", elem_id="seed")
    return SettingsColumn(thinking, budget, adapter, max_new, temperature, top_p, top_k, seed)


class Chat:
    """Asking and answering. A tab asks one question at a time (`ChatState.busy`)."""

    def __init__(self, studio: Studio, uploads: Uploads) -> None:
        self.studio = studio
        self.uploads = uploads

    def echo(self, message, chat_state: ChatState):
        """Show the question at once, hide the tools under the last answer and empty the box;
        the answer follows (respond). The tools are hidden here rather than by the answer's
        first redraw, which then carries the chat alone: the first token does not wait for
        the server to build their updates."""
        message = received(message)
        text, files = message["text"], message_files(message)
        if not text.strip() and not files:
            return gr.skip(), gr.skip(), gr.skip(), None, chat_state
        if chat_state.busy:
            gr.Warning(BUSY)
            return gr.skip(), gr.skip(), gr.skip(), None, chat_state
        chat_state.busy = True
        try:
            self.studio.settle_comparison(chat_state)  # asking on retires a pending verdict
            messages, _ = render_chat(chat_state)
        except Exception as exc:
            # Gradio runs the answering event even after a failed echo, with whatever
            # `pending` held: the last question, asked again, or None, which leaves the tab
            # busy for good. Nothing was asked, so the tab is free and nothing follows.
            chat_state.busy = False
            warn(exc)
            return gr.skip(), gr.skip(), gr.skip(), None, chat_state
        messages += [{"role": "user", "content": {"path": path}} for path in files]
        if text.strip():
            messages.append({"role": "user", "content": safe_markdown(text.strip())})
        # The messages alone: a Chatbot update would make the server build a new component
        # and its configuration for it (see `view`); the thumbs stay as they were.
        return messages, gr.Row(visible=False), None, message, chat_state

    def respond(self, message, chat_state: ChatState, think, think_budget, max_tokens, temp, p,
                k, seed_value, variant, request: gr.Request):
        if message is None:  # refused or empty at echo: nothing to answer
            yield (*keep_view(), gr.skip(), chat_state)
            return
        values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
        yield from self._answer(message, chat_state, values, request, plain=False)

    def _answer(self, message, chat_state: ChatState, values, request, plain: bool):
        """Ask and stream: from the page after `echo` hid the tools, or from the API."""
        text = (message or {}).get("text", "") or ""
        files = message_files(message)
        taken: list[bool] = []
        try:
            with answering(chat_state):
                turn = self._asked(chat_state, text, files, values, request)
                yield from self._stream_turn(turn, chat_state, message, plain, taken,
                                             tools_hidden=True)
        finally:
            if taken:
                self.uploads.discard(files)

    def _asked(self, chat_state: ChatState, text: str, files: list, values, request):
        """The turn's updates, its settings read at the first one: a setting that cannot be
        used (a seed that is no number) is then refused like any question the studio
        refuses, with its message, the question given back to the box."""
        yield from self.studio.ask(chat_state, text, files, options(*values),
                                   session_key=session_key(request, chat_state))

    def ask_directly(self, message, chat_state: ChatState, think, think_budget, max_tokens,
                     temp, p, k, seed_value, variant, request: gr.Request):
        """The "chat" endpoint for API clients: the question and its settings in one call."""
        if chat_state.busy:
            gr.Warning(BUSY)
            yield (*keep_view(), gr.skip(), chat_state)
            return
        chat_state.busy = True
        values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
        yield from self._answer(received(message), chat_state, values, request, plain=True)

    def release(self, message, chat_state: ChatState):
        """After the page's answering event: a question `echo` took whose answer never ran
        (a full queue) frees the tab and shows the tools it hid. `message` is None when echo
        took nothing; the tab may then be busy with an earlier question, and stays so."""
        if message is None or not chat_state.busy:
            return gr.skip(), chat_state
        chat_state.busy = False
        return gr.Row(visible=tools_shown(chat_state)), chat_state

    def regenerate(self, chat_state: ChatState, think, think_budget, max_tokens, temp, p, k,
                   seed_value, variant, request: gr.Request):
        if chat_state.busy:
            gr.Warning(BUSY)
            yield (*keep_view(), gr.skip(), chat_state)
            return
        chat_state.busy = True
        values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
        try:
            with answering(chat_state):
                turn = self.studio.regenerate(chat_state, options(*values),
                                              session_key=session_key(request, chat_state))
                yield from self._stream_turn(turn, chat_state, gr.skip())
        except Exception as exc:
            warn(exc)

    def _stream_turn(self, turn, chat_state: ChatState, message, plain: bool = False,
                     taken: list | None = None, tools_hidden: bool = False):
        """Stream one answer into the chat. The question box is left alone (the user may be
        typing the next one), except to give back a question refused, or whose first answer
        failed. The tab is free again before the last update goes out (see `answering`). The
        first redraw hides the tools under the last answer unless they are already
        (`tools_hidden`)."""
        try:
            update = next(turn)
        except StopIteration:
            chat_state.busy = False
            return
        except Exception as exc:
            warn(exc)  # refused before anything was stored: the question goes back
            chat_state.busy = False
            yield (*view(chat_state, plain=plain), message, chat_state)
            return
        if taken is not None:
            taken.append(True)  # the turn has its images: the uploads can go
        last_turn = chat_state.turns[-1]
        previous = last_turn.answer
        last_yield, drawn = 0.0, tools_hidden
        left = chat_state.left
        try:
            while True:
                # The finished answer is drawn once, by the last update: the stats line under
                # it then says the tab can ask again. Nothing is drawn once the tab went to
                # another conversation.
                if not update.done and chat_state.left == left and (
                        time.monotonic() - last_yield >= redraw_interval(self.studio)):
                    last_turn.answer = update  # shown while it streams
                    shown = view(chat_state, streaming=True, plain=plain, controls=not drawn)
                    last_turn.answer = previous
                    yield (*shown, gr.skip(), chat_state)
                    last_yield, drawn = time.monotonic(), True
                update = next(turn)
        except StopIteration:
            pass
        except Exception as exc:
            warn(exc)
        if update.error:
            gr.Warning(inert_html(update.error))
        chat_state.busy = False  # the turn is settled: its answer is in `chat_state`
        if chat_state.left != left:
            yield (*keep_view(), gr.skip(), chat_state)
            return
        # A first answer that failed midway leaves the chat with its question (see
        # `Studio._settle`): the question goes back to the box, as for a refusal.
        dropped = last_turn not in chat_state.turns
        yield (*view(chat_state, plain=plain), message if dropped else gr.skip(), chat_state)

    def stop(self, chat_state: ChatState, request: gr.Request):
        # The engine ends the answer itself, so it closes as "stopped" with its real
        # token count instead of being cut off mid-redraw.
        self.studio.cancel(session_key(request, chat_state))

    def switch_answer(self, step: int):
        def switch(chat_state: ChatState):
            try:
                self.studio.select(chat_state, len(chat_state.turns) - 1, step)
            except Exception as exc:
                warn(exc)
            return (*view(chat_state), chat_state)
        return switch


def wire(chat: Chat, chat_view: ChatView, box: gr.MultimodalTextbox, api_chat: gr.Button,
         settings_column: SettingsColumn, state: gr.State, pending: gr.State,
         model_limit: int, refresh_history: Callable, conversations: gr.Radio,
         close_compare: Callable, compare_outputs: list) -> None:
    """Asking, the "chat" endpoint, regenerate, stop and the version arrows. After each
    answer `refresh_history` redraws the conversation list and `close_compare` hides a
    settled comparison."""
    view_outputs = chat_view.outputs
    settings_inputs = settings_column.inputs
    chatbot = chat_view.chatbot
    chat_outputs = [*view_outputs, box, state]
    # The question shows at once, outside the model's queue; the answer follows it.
    box.submit(None, [box, chatbot], [chatbot], js=ECHO_JS, queue=False)
    echoed = box.submit(chat.echo, [box, state],
                        [chatbot, chat_view.answer_tools, box, pending, state],
                        show_progress="hidden", **NEVER_WAITS)
    # The answering events check their inputs in the handler's thread (`checked_here`).
    here = {"preprocess": False}
    inputs = [pending, state, *settings_inputs]
    submit = echoed.then(checked_here(chat.respond, inputs), inputs, chat_outputs,
                         api_visibility="private", show_progress="hidden",
                         **model_lane(model_limit), **here)
    # API clients ask in one call, with the question as the first argument.
    inputs = [box, state, *settings_inputs]
    api_chat.click(checked_here(chat.ask_directly, inputs), inputs, chat_outputs,
                   api_name="chat", **model_lane(model_limit), **here)
    submit.then(refresh_history, [state], [conversations], **NEVER_WAITS)
    # Also when the answering event never ran (a full queue): the tab can ask again.
    submit.then(chat.release, [pending, state], [chat_view.answer_tools, state], queue=False)
    echoed.then(close_compare, [state], compare_outputs, show_progress="hidden", **NEVER_WAITS)
    inputs = [state, *settings_inputs]
    retry = chatbot.retry(checked_here(chat.regenerate, inputs), inputs, chat_outputs,
                          **model_lane(model_limit), **here)
    retry.then(close_compare, [state], compare_outputs, show_progress="hidden", **NEVER_WAITS)
    box.stop(chat.stop, [state], None, queue=False)
    for button, step in ((chat_view.prev_answer, -1), (chat_view.next_answer, +1)):
        button.click(chat.switch_answer(step), [state], [*view_outputs, state], **NEVER_WAITS)
