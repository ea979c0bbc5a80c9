"""The studio page: Gradio components and thin handlers around `studio.turns.Studio`.

Handlers translate between Gradio values and the studio's flows and turn the errors a user can
act on into short warnings; anything else is logged with its traceback and shown as a one-line
apology. No torch here: the UI talks to the engine only through its contract.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from datetime import datetime
from pathlib import Path

import gradio as gr

from engine.errors import RequestError, StudioError
from engine.protocol import Engine
from engine.types import Sampling
from storage import StorageError
from studio.turns import (
    CONSENT_TEXT,
    CONSENT_VERSION,
    DISLIKE_REASONS,
    ChatState,
    Studio,
    TurnOptions,
    TurnUpdate,
    usable_client_key,
)
from ui.data_tab import build_data_tab
from ui.examples import example_inputs
from ui.render import (
    answer_messages,
    feedback_values,
    inert_html,
    render_chat,
    safe_markdown,
    version_label,
)

log = logging.getLogger(__name__)

# Redrawing the chat per token costs the browser and the server more than the model does;
# a dozen frames a second read as smooth streaming. With several answers streaming at once
# (a batching engine) each redraws less often, so that rendering, which holds the
# interpreter, keeps to about the same total and does not slow the decoding of them all.
REDRAW_INTERVAL_S = 0.08
MAX_REDRAW_INTERVAL_S = 0.4
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"]
FAILED = "Something went wrong on the server; it was logged. Please try again."
# Gradio encrypts browser-stored values with this, and sends it to every visitor in the page
# config: it protects nothing, so it is fixed, which lets a browser read its key back after
# the server restarts. The key itself is the credential; the store keeps only its hash.
BROWSER_STATE_SECRET = "vqa-studio-browser-state"
BUSY = ("An answer is still coming: send this when it has finished, or press Stop. "
        "Your question is still in the box.")
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
# Tab from the top of the page reaches the question box first: a positive tabindex puts it
# ahead of every other control, which then follow in page order (the sidebar toggle, the
# tabs, the consent box, upload, send...). Gradio may draw the box anew, so the tabindex is
# set again whenever it does. The closed sidebar stays in the page; made inert, its controls
# leave the keyboard order. On a wide screen the box also takes the focus at once (not on a
# phone, where that would open the keyboard over the page).
KEYBOARD_JS = """
() => {
  const question = document.querySelector('#question');
  if (question) {
    const first = () => question.querySelector('textarea')?.setAttribute('tabindex', '1');
    new MutationObserver(first).observe(question, {childList: true, subtree: true});
    first();
  }
  const sidebar = document.querySelector('#sidebar');
  if (sidebar) {
    const panel = sidebar.closest('.sidebar') || sidebar;
    const sync = () => {
      const open = panel.classList.contains('open');
      const content = panel.querySelector('.sidebar-content') || sidebar;
      if (open) content.removeAttribute('inert'); else content.setAttribute('inert', '');
    };
    new MutationObserver(sync).observe(panel, {attributes: true, attributeFilter: ['class']});
    sync();
  }
  if (window.matchMedia('(min-width: 721px)').matches) {
    document.querySelector('#question textarea')?.focus();
  }
}
"""
CSS = """
.verdict-row button { min-width: 0; }
#answer-tools { align-items: center; gap: 8px; }
#answer-tools button { min-width: 44px; min-height: 40px; flex-grow: 0; }
#answer-version { flex: 0 0 auto; min-width: 7em; }
#answer-tools #correct { flex: 0 0 auto; }
@media (max-width: 720px) {
  #settings-column { min-width: 100% !important; }
  #compare-row { flex-direction: column; }
  /* A finger needs about 40 px each way: every button, the icons in the chat and the
     question box, and the whole line of a checkbox or radio choice, not just its box. */
  button { min-height: 40px; }
  button.icon-button, .toggle-button, #question button, .reset-button { min-width: 40px; }
  label:has(> input[type=checkbox]), label:has(> input[type=radio]) {
    min-height: 40px; align-items: center;
  }
}
/* Gradio's footer lies outside the part of the page its media queries reach. */
footer a, footer button { min-height: 40px; display: inline-flex; align-items: center; }
"""


# What the checkpoint's template does about thinking, by (mode, default).
_THINKING_TEXT = {
    ("switchable", False): "thinks when asked",
    ("switchable", True): "thinks unless told not to",
    ("always", True): "always thinks",
}


def _status_text(engine: Engine) -> str:
    # Names come from checkpoints and model servers: untrusted, so shown inert.
    if engine.ready:
        caps = engine.capabilities()
        thinking = _THINKING_TEXT.get((caps.thinking_mode, caps.thinking_default), "can think")
        if not caps.thinking:
            thinking = "no thinking"
        adapters = (f" · adapters: {safe_markdown(', '.join(caps.adapters))}"
                    if caps.adapters else "")
        cost = f" (about {caps.image_tokens} tokens each)" if caps.image_tokens else ""
        return (f"**{safe_markdown(caps.model_id)}** · {safe_markdown(caps.family)} · "
                f"{safe_markdown(caps.quantization)} · {thinking} · "
                f"up to {caps.max_images} image{'s' if caps.max_images != 1 else ''}{cost}"
                f"{adapters}")
    if engine.load_error:
        return (f"⚠️ **The model could not be loaded.** {safe_markdown(engine.load_error)}\n\n"
                "Start with local weights: `python app.py --model /path/to/model-folder`, "
                "or try the app with `python app.py --model tiny-random`.")
    progress = engine.progress
    text = (f"⏳ Loading **{safe_markdown(str(engine.model_ref))}**: "
            f"{safe_markdown(progress.message)}")
    if progress.bytes_total:
        text += (f" — {progress.bytes_done / 1e9:.2f} / {progress.bytes_total / 1e9:.2f} GB "
                 f"({100 * progress.bytes_done / progress.bytes_total:.0f}%)")
    return text


def _warn(exc: Exception) -> None:
    if isinstance(exc, StudioError | StorageError):
        gr.Warning(inert_html(str(exc)))  # may quote a model server
    else:
        log.error("handler failed", exc_info=exc)
        gr.Warning(FAILED)


def _session_key(request: gr.Request | None, state: ChatState) -> str:
    return getattr(request, "session_hash", None) or state.owner()


def _files(message: dict | None) -> list[str]:
    files = (message or {}).get("files") or []
    return [f if isinstance(f, str) else f.get("path") for f in files]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Uploads:
    """Gradio's upload folder, seen from the studio: uploads are dropped once their turn has
    taken them (the studio keeps cleaned copies only while the session lives, and the store
    only with consent), and erased images lose every cached copy there."""

    def __init__(self, root: Path, keep: set[str]) -> None:
        self.root = root.resolve()
        self.keep = keep  # sha256 of files never dropped: the examples' images

    def discard(self, paths: list[str]) -> None:
        for name in paths:
            path = Path(name).resolve()
            if not path.is_relative_to(self.root) or not path.is_file():
                continue
            try:
                if _sha256(path) in self.keep:
                    continue
                path.unlink()
                path.parent.rmdir()  # Gradio gives each upload a folder of its own
            except OSError:
                pass

    def forget(self, shas: list[str]) -> None:
        """Remove files named after erased images (copies Gradio made to serve them)."""
        doomed = set(shas)
        if not doomed:
            return
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                if name.split(".", 1)[0] in doomed:
                    Path(folder, name).unlink(missing_ok=True)


def _seed(value) -> int | None:
    """The seed box: empty means a new sample each time; anything else must be a number."""
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise RequestError("The seed must be a whole number, or empty for a new sample "
                           "each time.") from None


def _options(think, budget, max_tokens, temperature, top_p, top_k, seed, adapter) -> TurnOptions:
    return TurnOptions(
        thinking=bool(think), thinking_budget=int(budget),
        sampling=Sampling(max_new_tokens=int(max_tokens), temperature=float(temperature),
                          top_p=float(top_p), top_k=int(top_k or 0), seed=_seed(seed)),
        adapter=None if adapter in (None, "", "Base model") else adapter)


def _view(chat_state: ChatState, streaming: bool = False, plain: bool = False) -> tuple:
    """Updates for the chat and the controls under it (view_outputs order). `plain`: the
    chat as its list of messages (what API clients read), without the thumbs' states."""
    messages, message_slots = render_chat(chat_state)
    last = chat_state.turns[-1] if chat_state.turns else None
    tools = (not streaming and chat_state.comparison is None and last is not None
             and last.answer is not None)
    label = version_label(chat_state) if tools else ""
    chat = messages if plain else gr.Chatbot(value=messages,
                                             feedback_value=feedback_values(chat_state))
    return (chat, message_slots, gr.Row(visible=tools), label,
            gr.Button(visible=bool(label)), gr.Button(visible=bool(label)))


def build_page(studio: Studio, settings) -> gr.Blocks:
    """The whole page: chat, compare and history; the data tab when there is a store."""
    engine = studio.engine
    examples_dir = Path(settings.db_path).parent / "examples"
    public = bool(getattr(settings, "public", False))
    upload_root = Path(gr.utils.get_upload_folder())
    # Sessions' images beside the database, served from there as they are: Gradio makes no
    # copies of them, and its cache clean-up (public apps) cannot take them from a session.
    # Each tab's folder has a random 128-bit name, so no one else can guess their addresses.
    scratch = Path(settings.db_path).parent / "sessions"
    studio.use_scratch(scratch)
    gr.set_static_paths([scratch])
    uploads = Uploads(upload_root, keep={
        _sha256(Path(f)) for example in example_inputs(examples_dir) for f in example["files"]})
    if studio.store is not None:
        studio.store.on_erasure(uploads.forget)
    # A public app cleans Gradio's upload cache: files older than 15 min, checked every 5 min
    # (uploads a turn took are dropped at once; sessions' images live elsewhere).
    with gr.Blocks(title="VQA Studio", delete_cache=(300, 900) if public else None) as demo:
        client_key = gr.BrowserState(None, storage_key="vqa-studio-client",
                                     secret=BROWSER_STATE_SECRET)
        # Consent is remembered per browser apart from the identity key, with the version of
        # the text agreed to.
        consent_memory = gr.BrowserState(None, storage_key="vqa-studio-consent")
        # A session's state goes when Gradio drops it (a closed tab, after a while); its
        # images are on disk, not in it, and go with it.
        # With ZeroGPU's `spaces` package the page never answered while a state had a delete
        # callback (the app stopped with "localhost is not accessible"): there a tab's images
        # go when it closes (`unload`) or after six idle hours.
        quota_note = engine.quota_note()
        lent_per_answer = quota_note is not None
        state = gr.State(ChatState(),
                         delete_callback=None if lent_per_answer else studio.drop_state)
        slots = gr.State([])
        pending = gr.State(None)

        with gr.Sidebar(label="Conversations", open=False, elem_id="sidebar"):
            new_chat = gr.Button("＋ New conversation", elem_id="new-chat", variant="primary")
            history_filter = gr.Textbox(label="Find a conversation", placeholder="words of "
                                        "its title", elem_id="history-filter")
            conversations = gr.Radio([], label="Your conversations, newest first",
                                     elem_id="conversations")
            with gr.Row():
                title = gr.Textbox(label="Title", scale=3, elem_id="rename-box")
                rename = gr.Button("Rename", scale=1, elem_id="rename")
            delete = gr.Button("Delete conversation", variant="stop", elem_id="delete")
            # Deleting asks first, saying how much goes.
            with gr.Group(visible=False, elem_id="confirm-panel") as confirm_panel:
                confirm_text = gr.Markdown("", elem_id="confirm-text")
                with gr.Row():
                    confirm_delete = gr.Button("Yes, delete", variant="stop",
                                               elem_id="confirm-delete")
                    cancel_delete = gr.Button("Cancel", elem_id="cancel-delete")
            deleting = gr.State(None)
            gr.Markdown("### Privacy")
            delete_all = gr.Button("Delete my data", variant="stop", elem_id="delete-all")
            # API clients erase their data in one call ("delete_my_data"): asking is explicit
            # there, so the page's confirmation step has no place in it.
            erase_by_api = gr.Button(visible=False)
            privacy_note = gr.Markdown("", elem_id="privacy-note")

        gr.Markdown("## VQA Studio\nAsk a vision-language model about your images; "
                    "your likes, corrections and picks become training data.")
        status = gr.Markdown(_status_text(engine), elem_id="model-status")
        if getattr(settings, "on_space", False) and not getattr(settings, "persistent", True):
            gr.Markdown("⚠️ This Space has no persistent storage: saved conversations and "
                        "feedback are lost when it restarts.", elem_id="storage-warning")
        if quota_note is not None:  # a GPU lent per answer (ZeroGPU)
            gr.Markdown(quota_note, elem_id="gpu-quota-note")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                # Where a first-time visitor sees it, not in the closed sidebar.
                with gr.Group(elem_id="consent-box"):
                    consent = gr.Checkbox(label="Save my data", value=False, info=CONSENT_TEXT,
                                          elem_id="consent")
                    consent_note = gr.Markdown("", elem_id="consent-note")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=320):
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
                        with gr.Group(visible=False, elem_id="editor-panel") as editor_panel:
                            editor = gr.Textbox(label="Your correction of the answer", lines=8,
                                                max_lines=40, elem_id="answer-editor")
                            with gr.Row():
                                save_edit = gr.Button("Save correction", variant="primary",
                                                      elem_id="save-edit")
                                cancel_edit = gr.Button("Cancel", elem_id="cancel-edit")
                        with gr.Group(visible=False, elem_id="dislike-panel") as dislike_panel:
                            reasons = gr.CheckboxGroup(list(DISLIKE_REASONS),
                                                       label="What was wrong?",
                                                       elem_id="dislike-reasons")
                            comment = gr.Textbox(label="Comment (optional)", lines=2,
                                                 elem_id="dislike-comment")
                            send_reasons = gr.Button("Send feedback", elem_id="send-reasons")
                        with gr.Group(visible=False, elem_id="compare-panel") as compare_panel:
                            compare_reveal = gr.Markdown("", elem_id="compare-reveal")
                            with gr.Row(elem_id="compare-row"):
                                left = gr.Chatbot(label="Answer A", height=360,
                                                  elem_id="compare-a", sanitize_html=True)
                                right = gr.Chatbot(label="Answer B", height=360,
                                                   elem_id="compare-b", sanitize_html=True)
                            with gr.Row(elem_classes="verdict-row"):
                                pick_a = gr.Button("A is better", elem_id="pick-a",
                                                   interactive=False)
                                pick_b = gr.Button("B is better", elem_id="pick-b",
                                                   interactive=False)
                                pick_tie = gr.Button("Tie", elem_id="pick-tie",
                                                     interactive=False)
                                pick_bad = gr.Button("Both bad", elem_id="pick-bad",
                                                     interactive=False)
                        box = gr.MultimodalTextbox(
                            placeholder="Ask about your images — Enter sends, "
                                        "Shift+Enter adds a line",
                            file_types=IMAGE_TYPES, file_count="multiple",
                            sources=["upload"], show_label=False, stop_btn=True,
                            elem_id="question")
                    with gr.Column(scale=1, min_width=240, elem_id="settings-column"):
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
                        with gr.Accordion("Compare two answers", open=True):
                            compare_mode = gr.Radio([("Two samples", "samples")],
                                                    value="samples", label="Compare",
                                                    elem_id="compare-mode")
                            compare = gr.Button("Ask and compare", elem_id="compare")
                # Below both columns: on a phone the settings come before the examples.
                gr.Examples(example_inputs(examples_dir), inputs=[box],
                            label="Try an example")
            if studio.store is not None:
                with gr.Tab("Data", id="data", elem_id="data-tab") as data_tab:
                    build_data_tab(studio, settings, data_tab)
        timer = gr.Timer(1.0)
        api_chat = gr.Button(visible=False)
        view_outputs = [chatbot, slots, answer_tools, version_note, prev_answer, next_answer]
        settings_inputs = [thinking, budget, max_new, temperature, top_p, top_k, seed, adapter]
        # As many answers at once as the engine asks for (see `Engine.concurrency`); more
        # would only wait inside the engine instead of in Gradio's queue.
        model_limit = max(1, engine.concurrency)

        def redraw_interval() -> float:
            return min(MAX_REDRAW_INTERVAL_S, REDRAW_INTERVAL_S * max(1, studio.streaming))

        # -- page load and model status ---------------------------------------------------

        def init(key: str | None, chat_state: ChatState):
            # The browser's stored key, or else the one this tab may already have been given
            # by a request that came before the load event: the browser keeps it from now on.
            if usable_client_key(key):
                chat_state.client_key = key
            return chat_state, chat_state.owner(), _conversation_choices(chat_state)

        def _conversation_choices(chat_state: ChatState, query: str = ""):
            try:
                items = studio.conversations(chat_state)
            except Exception as exc:
                _warn(exc)
                items = []
            words = (query or "").lower().split()
            items = [c for c in items if all(w in (c.title or "").lower() for w in words)]
            shown = chat_state.conversation_id in {c.id for c in items}
            return gr.Radio(choices=[(_history_label(c), c.id) for c in items],
                            value=chat_state.conversation_id if shown else None)

        def poll():
            settled = engine.ready or bool(engine.load_error)
            return (_status_text(engine), gr.Timer(active=not settled),
                    *_model_controls(studio))

        # -- chat -------------------------------------------------------------------------

        def echo(message, chat_state: ChatState):
            """Show the question at once and empty the box; the answer follows (respond)."""
            text = (message or {}).get("text", "") or ""
            files = _files(message)
            if not text.strip() and not files:
                return gr.skip(), gr.skip(), None, chat_state
            if chat_state.busy:
                gr.Warning(BUSY)
                return gr.skip(), gr.skip(), None, chat_state
            chat_state.busy = True
            studio.settle_comparison(chat_state)  # asking on retires a pending verdict
            messages, _ = render_chat(chat_state)
            messages += [{"role": "user", "content": {"path": path}} for path in files]
            if text.strip():
                messages.append({"role": "user", "content": safe_markdown(text.strip())})
            return gr.Chatbot(value=messages), None, message, chat_state

        def respond(message, chat_state: ChatState, think, think_budget, max_tokens, temp, p, k,
                    seed_value, variant, request: gr.Request):
            if message is None:  # refused or empty at echo: nothing to answer
                yield (*[gr.skip()] * len(view_outputs), gr.skip(), chat_state)
                return
            values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
            yield from _answer(message, chat_state, values, request, plain=False)

        def _answer(message, chat_state: ChatState, values, request, plain: bool):
            text = (message or {}).get("text", "") or ""
            files = _files(message)
            taken: list[bool] = []
            try:
                turn = studio.ask(chat_state, text, files, _options(*values),
                                  session_key=_session_key(request, chat_state))
                yield from _stream_turn(turn, chat_state, message, plain, taken)
            finally:
                chat_state.busy = False
                if taken:
                    uploads.discard(files)

        def ask_directly(message, chat_state: ChatState, think, think_budget, max_tokens, temp,
                         p, k, seed_value, variant, request: gr.Request):
            """The "chat" endpoint for API clients: the question and its settings in one call."""
            if chat_state.busy:
                gr.Warning(BUSY)
                yield (*[gr.skip()] * len(view_outputs), gr.skip(), chat_state)
                return
            chat_state.busy = True
            values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
            yield from _answer(message or {}, chat_state, values, request, plain=True)

        def release(chat_state: ChatState):
            chat_state.busy = False
            return chat_state

        def regenerate(chat_state: ChatState, think, think_budget, max_tokens, temp, p, k,
                       seed_value, variant, request: gr.Request):
            if chat_state.busy:
                gr.Warning(BUSY)
                yield (*[gr.skip()] * len(view_outputs), gr.skip(), chat_state)
                return
            chat_state.busy = True
            values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
            try:
                turn = studio.regenerate(chat_state, _options(*values),
                                         session_key=_session_key(request, chat_state))
                yield from _stream_turn(turn, chat_state, gr.skip())
            except Exception as exc:
                _warn(exc)
            finally:
                chat_state.busy = False

        def _stream_turn(turn, chat_state: ChatState, message, plain: bool = False,
                         taken: list | None = None):
            """Stream one answer into the chat. The question box is left alone (the user may be
            typing the next one), except to give a refused question back."""
            try:
                update = next(turn)
            except StopIteration:
                return
            except Exception as exc:
                _warn(exc)  # refused before anything was stored: the question goes back
                yield (*_view(chat_state, plain=plain), message, chat_state)
                return
            if taken is not None:
                taken.append(True)  # the turn has its images: the uploads can go
            last_turn = chat_state.turns[-1]
            previous = last_turn.answer
            last_yield = 0.0
            try:
                while True:
                    if update.done or time.monotonic() - last_yield >= redraw_interval():
                        last_turn.answer = update  # shown while it streams
                        view = _view(chat_state, streaming=True, plain=plain)
                        last_turn.answer = previous
                        yield (*view, gr.skip(), chat_state)
                        last_yield = time.monotonic()
                    update = next(turn)
            except StopIteration:
                pass
            except Exception as exc:
                _warn(exc)
            if update.error:
                gr.Warning(inert_html(update.error))
            yield (*_view(chat_state, plain=plain), gr.skip(), chat_state)

        def stop(chat_state: ChatState, request: gr.Request):
            # The engine ends the answer itself, so it closes as "stopped" with its real
            # token count instead of being cut off mid-redraw.
            studio.cancel(_session_key(request, chat_state))

        def switch_answer(step: int):
            def switch(chat_state: ChatState):
                try:
                    studio.select(chat_state, len(chat_state.turns) - 1, step)
                except Exception as exc:
                    _warn(exc)
                return (*_view(chat_state), chat_state)
            return switch

        # -- feedback ---------------------------------------------------------------------

        def on_like(chat_state: ChatState, message_slots, data: gr.LikeData):
            # Gradio reports the first message of the clicked bubble (the reasoning when the
            # model thought): any message of a turn's answer stands for that answer.
            slot = _slot(message_slots, data.index)
            if slot is None or slot.part not in ("reasoning", "answer"):
                gr.Warning("Only answers can be rated.")
                return gr.skip(), chat_state
            liked = True if data.liked is True else False if data.liked is False else None
            try:
                note = studio.rate(chat_state, slot.turn, liked)
            except Exception as exc:
                _warn(exc)
                return gr.Group(visible=False), chat_state
            gr.Info(note)
            chat_state.pending_dislike = slot.turn if liked is False else None
            return gr.Group(visible=liked is False), chat_state

        def on_reasons(chat_state: ChatState, chosen: list[str], text: str):
            turn_index = chat_state.pending_dislike
            if turn_index is None:
                return gr.Group(visible=False), [], ""
            try:
                gr.Info(studio.rate(chat_state, turn_index, False, chosen or (), text or ""))
            except Exception as exc:
                _warn(exc)
            chat_state.pending_dislike = None
            return gr.Group(visible=False), [], ""

        def open_editor(chat_state: ChatState):
            last = chat_state.turns[-1] if chat_state.turns else None
            if chat_state.busy or last is None or last.answer is None:
                gr.Warning("There is no finished answer to correct yet.")
                return gr.skip(), gr.skip()
            return gr.Group(visible=True), last.answer.answer

        def save_correction(chat_state: ChatState, text: str):
            try:
                if chat_state.busy or not chat_state.turns:
                    raise RequestError("There is no finished answer to correct yet.")
                gr.Info(studio.edit(chat_state, len(chat_state.turns) - 1, text or ""))
            except Exception as exc:
                _warn(exc)
                return (*[gr.skip()] * len(view_outputs), gr.skip(), chat_state)
            return (*_view(chat_state), gr.Group(visible=False), chat_state)

        # -- compare ----------------------------------------------------------------------

        def run_compare(message, chat_state: ChatState, mode: str, think, think_budget,
                        max_tokens, temp, p, k, seed_value, variant, request: gr.Request):
            values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
            text = (message or {}).get("text", "") or ""
            files = _files(message)
            verdicts_off = [gr.Button(interactive=False)] * 4
            if chat_state.busy:
                gr.Warning(BUSY)
                yield (*[gr.skip()] * len(view_outputs), gr.skip(), chat_state,
                       *[gr.skip()] * 4, *verdicts_off)
                return
            chat_state.busy = True
            try:
                yield from _compare(chat_state, text, files, values, mode, message,
                                    verdicts_off, _session_key(request, chat_state))
            finally:
                chat_state.busy = False

        def _compare(chat_state, text, files, values, mode, message, verdicts_off, key):
            try:
                pairs = studio.compare(chat_state, text, files, _options(*values), mode,
                                       session_key=key)
                pair = next(pairs)
                uploads.discard(files)
            except Exception as exc:
                _warn(exc)
                yield (*[gr.skip()] * len(view_outputs), message, chat_state, gr.skip(), gr.skip(),
                       gr.skip(), gr.skip(), *verdicts_off)
                return
            view = _view(chat_state, streaming=True)
            last_yield = 0.0
            while True:
                if time.monotonic() - last_yield >= redraw_interval():
                    yield (*view, None, chat_state, gr.Group(visible=True), "",
                           _side(pair[0]), _side(pair[1]), *verdicts_off)
                    last_yield = time.monotonic()
                try:
                    pair = next(pairs)
                except StopIteration:
                    break
                except Exception as exc:
                    _warn(exc)
                    break
            ready = chat_state.comparison is not None
            yield (*_view(chat_state), None, chat_state, gr.Group(visible=True),
                   "Which answer is better? Your pick continues the conversation."
                   if ready else "", _side(pair[0]), _side(pair[1]),
                   *[gr.Button(interactive=ready)] * 4)

        def make_verdict(verdict: str):
            def judge(chat_state: ChatState):
                comparison = chat_state.comparison
                off = [gr.Button(interactive=False)] * 4
                try:
                    note = studio.judge(chat_state, verdict)
                except Exception as exc:
                    _warn(exc)
                    return (*[gr.skip()] * len(view_outputs), chat_state, gr.skip(), gr.skip(),
                            gr.skip(), gr.skip(), *off)
                gr.Info(note)
                # Which settings produced each side is told only after the verdict, and
                # the two answers stay on screen beside it.
                reveal = (f"**{note}** Answer A: *{comparison.left.label}* · "
                          f"Answer B: *{comparison.right.label}*")
                return (*_view(chat_state), chat_state, gr.Group(visible=True), reveal,
                        _side(comparison.left), _side(comparison.right), *off)
            return judge

        def close_compare(chat_state: ChatState):
            """The comparison panel only stays while its verdict can still be given."""
            if chat_state.comparison is None:
                return (gr.Group(visible=False), "", [], [],
                        *[gr.Button(interactive=False)] * 4)
            return (gr.skip(),) * 8

        # -- history and privacy ----------------------------------------------------------

        def restore_consent(memory, chat_state: ChatState):
            """A browser that consented to this version of the text keeps saving."""
            remembered = memory if isinstance(memory, dict) else {}
            if remembered.get("consented") and remembered.get("version") == CONSENT_VERSION:
                chat_state.consented = True
                return gr.Checkbox(value=True), "", chat_state
            if not remembered.get("consented"):
                # Nothing to restore; a late load event must not blank what the user just did.
                return gr.skip(), gr.skip(), chat_state
            note = ("The privacy text changed since you agreed: tick “Save my data” again to "
                    "keep saving.")
            return gr.skip(), note, chat_state

        def set_consent(value: bool, chat_state: ChatState):
            memory = {"version": CONSENT_VERSION, "consented": bool(value)}
            if not value:
                chat_state.consented = False
                note = "Saving off: nothing from now on is kept."
                gr.Info(note)
                return gr.skip(), note, memory, chat_state, gr.skip()
            if chat_state.busy:
                gr.Warning("Tick “Save my data” again once the answer has finished.")
                return gr.Checkbox(value=False), gr.skip(), gr.skip(), chat_state, gr.skip()
            try:
                note = studio.give_consent(chat_state)
            except Exception as exc:
                _warn(exc)
                chat_state.consented = False
                return gr.Checkbox(value=False), gr.skip(), gr.skip(), chat_state, gr.skip()
            gr.Info(note)
            return gr.skip(), note, memory, chat_state, _conversation_choices(chat_state)

        def _leave(chat_state: ChatState, request: gr.Request | None) -> None:
            """Going elsewhere stops what this tab was generating; its answer keeps what it
            said so far."""
            studio.cancel(_session_key(request, chat_state))
            chat_state.comparison = None
            chat_state.pending_dislike = None

        def start_new(chat_state: ChatState, request: gr.Request):
            _leave(chat_state, request)
            chat_state.reset()
            return (*_view(chat_state), chat_state, gr.Radio(value=None), "")

        def open_conversation(conversation_id: str | None, chat_state: ChatState,
                              request: gr.Request):
            if not conversation_id or conversation_id == chat_state.conversation_id:
                return (*[gr.skip()] * len(view_outputs), chat_state, gr.skip())
            _leave(chat_state, request)
            try:
                studio.open_conversation(chat_state, conversation_id)
            except Exception as exc:
                _warn(exc)
                return (*[gr.skip()] * len(view_outputs), chat_state, gr.skip())
            titles = {c.id: c.title for c in studio.conversations(chat_state)}
            return (*_view(chat_state), chat_state, titles.get(conversation_id, ""))

        def rename_conversation(new_title: str, chat_state: ChatState):
            if not chat_state.conversation_id:
                gr.Warning("Open or start a saved conversation first.")
                return gr.skip()
            try:
                studio.rename_conversation(chat_state, chat_state.conversation_id, new_title)
            except Exception as exc:
                _warn(exc)
            return _conversation_choices(chat_state)

        def delete_conversation(chat_state: ChatState):
            if not chat_state.conversation_id:
                gr.Warning("Open a saved conversation first.")
                return (*[gr.skip()] * len(view_outputs), chat_state, gr.skip())
            try:
                studio.delete_conversation(chat_state, chat_state.conversation_id)
                gr.Info("Conversation deleted.")
            except Exception as exc:
                _warn(exc)
            return (*_view(chat_state), chat_state, _conversation_choices(chat_state))

        def delete_my_data(chat_state: ChatState):
            try:
                counts = studio.delete_my_data(chat_state)
            except Exception as exc:
                _warn(exc)
                return (*[gr.skip()] * len(view_outputs), chat_state, gr.skip(), gr.skip())
            note = (f"Deleted {counts.conversations} conversations, {counts.messages} messages, "
                    f"{counts.feedback} feedback events and {counts.images} images.")
            gr.Info(note)
            return (*_view(chat_state), chat_state, _conversation_choices(chat_state), note)

        def ask_delete(what: str):
            def ask(chat_state: ChatState):
                try:
                    items = studio.conversations(chat_state)
                except Exception as exc:
                    _warn(exc)
                    return gr.skip(), gr.skip(), None
                if what == "one":
                    current = [c for c in items if c.id == chat_state.conversation_id]
                    if not current:
                        gr.Warning("Open a saved conversation first.")
                        return gr.skip(), gr.skip(), None
                    text = (f"Delete “{current[0].title or 'Untitled'}” and its "
                            f"{current[0].message_count} messages, with their feedback and "
                            "the images only it uses? This cannot be undone.")
                else:
                    if not items:
                        gr.Info("Nothing of yours is stored.")
                        return gr.skip(), gr.skip(), None
                    messages = sum(c.message_count for c in items)
                    text = (f"Delete all your data: {len(items)} conversation"
                            f"{'s' if len(items) != 1 else ''} with {messages} messages, "
                            "their images and all your feedback? This cannot be undone.")
                return gr.Group(visible=True), text, what
            return ask

        def confirmed(what: str | None, chat_state: ChatState):
            hidden = gr.Group(visible=False)
            if what == "one":
                return (*delete_conversation(chat_state), gr.skip(), hidden, None)
            if what == "all":
                return (*delete_my_data(chat_state), hidden, None)
            return (*[gr.skip()] * (len(view_outputs) + 3), hidden, None)

        def unload(request: gr.Request):
            key = getattr(request, "session_hash", None)
            if key:
                studio.cancel(key)  # a closed tab: stop generating for it
                studio.end_session(key)

        # -- wiring -----------------------------------------------------------------------

        # Unqueued, so a full queue cannot refuse the tab its identity.
        demo.load(init, [client_key, state], [state, client_key, conversations], queue=False)
        demo.load(restore_consent, [consent_memory, state], [consent, consent_note, state])
        demo.load(None, None, None, js=KEYBOARD_JS)
        timer.tick(poll, None, [status, timer, thinking, budget, adapter, compare_mode])
        consent.input(set_consent, [consent, state],
                      [consent, consent_note, consent_memory, state, conversations])
        chat_outputs = [*view_outputs, box, state]
        compare_outputs = [compare_panel, compare_reveal, left, right,
                           pick_a, pick_b, pick_tie, pick_bad]
        # The question shows at once, outside the model's queue; the answer follows it.
        box.submit(None, [box, chatbot], [chatbot], js=ECHO_JS, queue=False)
        echoed = box.submit(echo, [box, state], [chatbot, box, pending, state],
                            concurrency_limit=None, show_progress="hidden")
        submit = echoed.then(respond, [pending, state, *settings_inputs], chat_outputs,
                             api_visibility="private", concurrency_id="model",
                             concurrency_limit=model_limit, show_progress="hidden")
        # API clients ask in one call, with the question as the first argument.
        api_chat.click(ask_directly, [box, state, *settings_inputs], chat_outputs,
                       api_name="chat", concurrency_id="model", concurrency_limit=model_limit)
        submit.then(_conversation_choices, [state], [conversations])
        # Also when the answering event never ran (a full queue): the tab can ask again.
        submit.then(release, [state], [state], queue=False)
        echoed.then(close_compare, [state], compare_outputs, show_progress="hidden")
        retry = chatbot.retry(regenerate, [state, *settings_inputs], chat_outputs,
                              concurrency_id="model", concurrency_limit=model_limit)
        retry.then(close_compare, [state], compare_outputs, show_progress="hidden")
        box.stop(stop, [state], None, queue=False)
        prev_answer.click(switch_answer(-1), [state], [*view_outputs, state])
        next_answer.click(switch_answer(+1), [state], [*view_outputs, state])
        # Judgements run in the queue (concurrency_limit=None: they never wait for the model)
        # because only queued events show their gr.Info / gr.Warning on the page.
        chatbot.like(on_like, [state, slots], [dislike_panel, state], concurrency_limit=None)
        send_reasons.click(on_reasons, [state, reasons, comment],
                           [dislike_panel, reasons, comment], concurrency_limit=None)
        correct.click(open_editor, [state], [editor_panel, editor], concurrency_limit=None)
        cancel_edit.click(lambda: gr.Group(visible=False), None, [editor_panel], queue=False)
        save_edit.click(save_correction, [state, editor], [*view_outputs, editor_panel, state],
                        concurrency_limit=None)
        compared = compare.click(
            run_compare, [box, state, compare_mode, *settings_inputs],
            [*view_outputs, box, state, *compare_outputs],
            concurrency_id="model", concurrency_limit=model_limit)
        compared.then(_conversation_choices, [state], [conversations])
        for button, verdict in ((pick_a, "A"), (pick_b, "B"), (pick_tie, "tie"),
                                (pick_bad, "both_bad")):
            button.click(make_verdict(verdict), [state], [*view_outputs, state, *compare_outputs],
                         concurrency_limit=None)
        for event in (new_chat.click, chatbot.clear):
            event(start_new, [state], [*view_outputs, state, conversations, title]).then(
                close_compare, [state], compare_outputs)
        opened = conversations.input(open_conversation, [conversations, state],
                                     [*view_outputs, state, title])
        opened.then(close_compare, [state], compare_outputs)
        rename.click(rename_conversation, [title, state], [conversations])
        history_filter.change(_conversation_choices, [state, history_filter], [conversations])
        delete.click(ask_delete("one"), [state], [confirm_panel, confirm_text, deleting])
        delete_all.click(ask_delete("all"), [state], [confirm_panel, confirm_text, deleting])
        confirm_delete.click(confirmed, [deleting, state],
                             [*view_outputs, state, conversations, privacy_note, confirm_panel,
                              deleting])
        cancel_delete.click(lambda: (gr.Group(visible=False), None), None,
                            [confirm_panel, deleting])
        erase_by_api.click(delete_my_data, [state],
                           [*view_outputs, state, conversations, privacy_note],
                           api_name="delete_my_data")
        demo.unload(unload)
    return demo


def _history_label(conversation) -> str:
    """"Title · 30 Nov 14:05" (UTC, when it was last active)."""
    when = ""
    with contextlib.suppress(ValueError, TypeError):
        when = datetime.fromisoformat(conversation.updated_at).strftime("%d %b %H:%M")
    title = conversation.title or "Untitled"
    return f"{title} · {when}" if when else title


def _slot(message_slots, index):
    if isinstance(index, list | tuple):
        index = index[0]
    if not isinstance(index, int) or not 0 <= index < len(message_slots):
        return None
    return message_slots[index]


def _side(update: TurnUpdate, reveal: bool = False) -> list[dict]:
    messages = answer_messages(update)
    if reveal and update.label:
        messages.insert(0, {"role": "assistant", "content": f"*{safe_markdown(update.label)}*"})
    return messages


def _model_controls(studio: Studio):
    engine = studio.engine
    if not engine.ready:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    caps = engine.capabilities()
    modes = studio.compare_modes()
    compare_mode = gr.Radio(choices=[(label, key) for key, label in modes.items()])
    adapter = gr.Dropdown(choices=["Base model", *caps.adapters], visible=bool(caps.adapters))
    if not caps.thinking:
        reason = "This model cannot think before answering."
        return (gr.Checkbox(value=False, interactive=False, info=reason),
                gr.Slider(interactive=False, info=reason), adapter, compare_mode)
    if caps.thinking_mode == "always":
        reason = "This model always thinks before answering; the budget caps its thinking."
        return (gr.Checkbox(value=True, interactive=False, info=reason),
                gr.Slider(interactive=caps.thinking_budget), adapter, compare_mode)
    if not caps.thinking_budget:
        return (gr.Checkbox(interactive=True),
                gr.Slider(interactive=False,
                          info="This engine cannot cap thinking; the budget is not used."),
                adapter, compare_mode)
    return gr.Checkbox(interactive=True), gr.Slider(interactive=True), adapter, compare_mode
