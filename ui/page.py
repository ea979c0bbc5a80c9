"""The studio page: Gradio components and thin handlers around `ui.turns.Studio`.

Handlers translate between Gradio values and the studio's flows and turn the errors a user can
act on into short warnings; anything else is logged with its traceback and shown as a one-line
apology. No torch here: the UI talks to the engine only through its contract.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import gradio as gr

from engine.errors import StudioError
from engine.types import Sampling
from storage import StorageError
from ui.data_tab import build_data_tab
from ui.examples import example_inputs
from ui.render import answer_messages, inert_html, plain_text, render_chat, safe_markdown
from ui.turns import (
    CONSENT_TEXT,
    DISLIKE_REASONS,
    ChatState,
    Studio,
    TurnOptions,
    TurnUpdate,
    usable_client_key,
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
CSS = """
.verdict-row button { min-width: 0; }
@media (max-width: 720px) { #settings-column { min-width: 100% !important; } }
"""


# What the checkpoint's template does about thinking, by (mode, default).
_THINKING_TEXT = {
    ("switchable", False): "thinks when asked",
    ("switchable", True): "thinks unless told not to",
    ("always", True): "always thinks",
}


def _status_text(engine) -> str:
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


def _options(think, budget, max_tokens, temperature, top_p, top_k, seed, adapter) -> TurnOptions:
    return TurnOptions(
        thinking=bool(think), thinking_budget=int(budget),
        sampling=Sampling(max_new_tokens=int(max_tokens), temperature=float(temperature),
                          top_p=float(top_p), top_k=int(top_k or 0),
                          seed=int(seed) if seed not in (None, "") else None),
        adapter=None if adapter in (None, "", "Base model") else adapter)


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
        # A session's state goes when Gradio drops it (a closed tab, after a while); its
        # images are on disk, not in it, and go with it.
        state = gr.State(ChatState(), delete_callback=studio.drop_state)
        slots = gr.State([])

        with gr.Sidebar(label="Conversations", open=False, elem_id="sidebar"):
            new_chat = gr.Button("＋ New conversation", elem_id="new-chat", variant="primary")
            conversations = gr.Radio([], label="Your conversations", elem_id="conversations")
            with gr.Row():
                title = gr.Textbox(label="Title", scale=3, elem_id="rename-box")
                rename = gr.Button("Rename", scale=1, elem_id="rename")
            delete = gr.Button("Delete conversation", variant="stop", elem_id="delete")
            gr.Markdown("### Privacy")
            consent = gr.Checkbox(label="Save my data", value=False, info=CONSENT_TEXT,
                                  elem_id="consent")
            delete_all = gr.Button("Delete my data", variant="stop", elem_id="delete-all")
            privacy_note = gr.Markdown("", elem_id="privacy-note")

        gr.Markdown("## VQA Studio\nAsk a vision-language model about your images; "
                    "your likes, corrections and picks become training data.")
        status = gr.Markdown(_status_text(engine), elem_id="model-status")
        if getattr(settings, "on_space", False) and not getattr(settings, "persistent", True):
            gr.Markdown("⚠️ This Space has no persistent storage: saved conversations and "
                        "feedback are lost when it restarts.", elem_id="storage-warning")
        if callable(getattr(engine, "quota_note", None)):  # a GPU lent per answer (ZeroGPU)
            gr.Markdown(engine.quota_note(), elem_id="gpu-quota-note")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=320):
                        chatbot = gr.Chatbot(
                            elem_id="chatbot", label="Conversation", height=540,
                            sanitize_html=True, editable="all",
                            feedback_options=("Like", "Dislike"))
                        box = gr.MultimodalTextbox(
                            placeholder="Ask about your images — Enter sends, "
                                        "Shift+Enter adds a line",
                            file_types=IMAGE_TYPES, file_count="multiple",
                            sources=["upload"], show_label=False, stop_btn=True,
                            elem_id="question")
                        with gr.Group(visible=False, elem_id="dislike-panel") as dislike_panel:
                            reasons = gr.CheckboxGroup(list(DISLIKE_REASONS),
                                                       label="What was wrong?",
                                                       elem_id="dislike-reasons")
                            comment = gr.Textbox(label="Comment (optional)", lines=2,
                                                 elem_id="dislike-comment")
                            send_reasons = gr.Button("Send feedback", elem_id="send-reasons")
                        with gr.Group(visible=False, elem_id="compare-panel") as compare_panel:
                            with gr.Row():
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
                        gr.Examples(example_inputs(examples_dir), inputs=[box],
                                    label="Try an example")
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
                            seed = gr.Number(None, label="Seed (empty: random)", precision=0,
                                             elem_id="seed")
                        with gr.Accordion("Compare two answers", open=True):
                            compare_mode = gr.Radio([("Two samples", "samples")],
                                                    value="samples", label="Compare",
                                                    elem_id="compare-mode")
                            compare = gr.Button("Ask and compare", elem_id="compare")
            if studio.store is not None:
                with gr.Tab("Data", id="data", elem_id="data-tab") as data_tab:
                    build_data_tab(studio, settings, data_tab)
        timer = gr.Timer(1.0)
        settings_inputs = [thinking, budget, max_new, temperature, top_p, top_k, seed, adapter]
        # As many answers at once as the engine decodes together (1 when it does one at a
        # time); more would only wait inside the engine instead of in Gradio's queue.
        model_limit = max(1, int(getattr(engine, "concurrency", 1)))

        def redraw_interval() -> float:
            return min(MAX_REDRAW_INTERVAL_S, REDRAW_INTERVAL_S * max(1, studio.streaming))

        # -- page load and model status ---------------------------------------------------

        def init(key: str | None, chat_state: ChatState):
            # The browser's stored key, or else the one this tab may already have been given
            # by a request that came before the load event: the browser keeps it from now on.
            if usable_client_key(key):
                chat_state.client_key = key
            return chat_state, chat_state.owner(), _conversation_choices(chat_state)

        def _conversation_choices(chat_state: ChatState):
            try:
                items = studio.conversations(chat_state)
            except Exception as exc:
                _warn(exc)
                items = []
            return gr.Radio(choices=[(c.title or "Untitled", c.id) for c in items],
                            value=chat_state.conversation_id)

        def poll():
            settled = engine.ready or bool(engine.load_error)
            return (_status_text(engine), gr.Timer(active=not settled),
                    *_model_controls(studio))

        # -- chat -------------------------------------------------------------------------

        def respond(message, chat_state: ChatState, think, think_budget, max_tokens, temp, p, k,
                    seed_value, variant, request: gr.Request):
            values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
            text = (message or {}).get("text", "") or ""
            files = _files(message)
            if not text.strip() and not files:
                yield gr.skip(), gr.skip(), message, chat_state
                return
            turn = studio.ask(chat_state, text, files, _options(*values),
                              session_key=_session_key(request, chat_state))
            taken: list[bool] = []
            try:
                yield from _stream_turn(turn, chat_state, message, taken)
            finally:
                if taken:
                    uploads.discard(files)

        def regenerate(chat_state: ChatState, think, think_budget, max_tokens, temp, p, k,
                       seed_value, variant, request: gr.Request):
            values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
            turn = studio.regenerate(chat_state, _options(*values),
                                     session_key=_session_key(request, chat_state))
            yield from _stream_turn(turn, chat_state, gr.skip())

        def _stream_turn(turn, chat_state: ChatState, message, taken: list | None = None):
            try:
                update = next(turn)
            except StopIteration:
                return
            except Exception as exc:
                _warn(exc)  # refused before anything was stored: the question stays in the box
                yield gr.skip(), gr.skip(), message, chat_state
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
                        messages, message_slots = render_chat(chat_state)
                        last_turn.answer = previous
                        yield messages, message_slots, None, chat_state
                        last_yield = time.monotonic()
                    update = next(turn)
            except StopIteration:
                pass
            except Exception as exc:
                _warn(exc)
            if update.error:
                gr.Warning(inert_html(update.error))
            messages, message_slots = render_chat(chat_state)
            yield messages, message_slots, None, chat_state

        def stop(chat_state: ChatState, request: gr.Request):
            studio.cancel(_session_key(request, chat_state))

        # -- feedback ---------------------------------------------------------------------

        def on_like(chat_state: ChatState, message_slots, data: gr.LikeData):
            slot = _slot(message_slots, data.index)
            if slot is None or slot.part != "answer":
                gr.Info("Only answers can be rated.")
                return gr.skip(), chat_state
            answer = chat_state.turns[slot.turn].answer
            liked = True if data.liked is True else False if data.liked is False else None
            try:
                note = studio.vote(chat_state, answer.answer_id if answer else None, liked)
            except Exception as exc:
                _warn(exc)
                return gr.Group(visible=False), chat_state
            gr.Info(note)
            chat_state.pending_dislike = slot.turn if liked is False else None
            return gr.Group(visible=liked is False), chat_state

        def on_reasons(chat_state: ChatState, chosen: list[str], text: str):
            turn_index = chat_state.pending_dislike
            if turn_index is None or turn_index >= len(chat_state.turns):
                return gr.Group(visible=False), [], ""
            answer = chat_state.turns[turn_index].answer
            try:
                gr.Info(studio.vote(chat_state, answer.answer_id if answer else None, False,
                                    chosen or (), text or ""))
            except Exception as exc:
                _warn(exc)
            chat_state.pending_dislike = None
            return gr.Group(visible=False), [], ""

        def on_edit(chat_state: ChatState, message_slots, data: gr.EditData):
            slot = _slot(message_slots, data.index)
            try:
                if slot is None or slot.part != "answer":
                    gr.Warning("Only an answer can be corrected; ask a new question instead.")
                else:
                    gr.Info(studio.edit(chat_state, slot.turn, plain_text(str(data.value))))
            except Exception as exc:
                _warn(exc)
            messages, new_slots = render_chat(chat_state)
            return messages, new_slots, chat_state

        # -- compare ----------------------------------------------------------------------

        def run_compare(message, chat_state: ChatState, mode: str, think, think_budget,
                        max_tokens, temp, p, k, seed_value, variant, request: gr.Request):
            values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
            text = (message or {}).get("text", "") or ""
            files = _files(message)
            verdicts_off = [gr.Button(interactive=False)] * 4
            try:
                pairs = studio.compare(chat_state, text, files, _options(*values), mode,
                                       session_key=_session_key(request, chat_state))
                pair = next(pairs)
                uploads.discard(files)
            except Exception as exc:
                _warn(exc)
                yield (gr.skip(), gr.skip(), message, chat_state, gr.skip(), gr.skip(),
                       gr.skip(), *verdicts_off)
                return
            messages, message_slots = render_chat(chat_state)
            last_yield = 0.0
            while True:
                if time.monotonic() - last_yield >= redraw_interval():
                    yield (messages, message_slots, None, chat_state, gr.Group(visible=True),
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
            yield (messages, message_slots, None, chat_state, gr.Group(visible=True),
                   _side(pair[0]), _side(pair[1]), *[gr.Button(interactive=ready)] * 4)

        def make_verdict(verdict: str):
            def judge(chat_state: ChatState):
                comparison = chat_state.comparison
                try:
                    gr.Info(studio.judge(chat_state, verdict))
                except Exception as exc:
                    _warn(exc)
                    return gr.skip(), gr.skip(), chat_state, gr.skip(), gr.skip(), gr.skip()
                messages, message_slots = render_chat(chat_state)
                # Reveal which settings produced each side only after the verdict.
                return (messages, message_slots, chat_state, gr.Group(visible=False),
                        _side(comparison.left, reveal=True),
                        _side(comparison.right, reveal=True))
            return judge

        # -- history and privacy ----------------------------------------------------------

        def set_consent(value: bool, chat_state: ChatState):
            chat_state.consented = bool(value)
            return chat_state

        def start_new(chat_state: ChatState):
            chat_state.reset()
            return [], [], chat_state, gr.Radio(value=None), ""

        def open_conversation(conversation_id: str | None, chat_state: ChatState):
            if not conversation_id or conversation_id == chat_state.conversation_id:
                return gr.skip(), gr.skip(), chat_state, gr.skip()
            try:
                studio.open_conversation(chat_state, conversation_id)
            except Exception as exc:
                _warn(exc)
                return gr.skip(), gr.skip(), chat_state, gr.skip()
            messages, message_slots = render_chat(chat_state)
            titles = {c.id: c.title for c in studio.conversations(chat_state)}
            return messages, message_slots, chat_state, titles.get(conversation_id, "")

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
                return gr.skip(), gr.skip(), chat_state, gr.skip()
            try:
                studio.delete_conversation(chat_state, chat_state.conversation_id)
                gr.Info("Conversation deleted.")
            except Exception as exc:
                _warn(exc)
            return [], [], chat_state, _conversation_choices(chat_state)

        def delete_my_data(chat_state: ChatState):
            try:
                counts = studio.delete_my_data(chat_state)
            except Exception as exc:
                _warn(exc)
                return gr.skip(), gr.skip(), chat_state, gr.skip(), gr.skip()
            note = (f"Deleted {counts.conversations} conversations, {counts.messages} messages, "
                    f"{counts.feedback} feedback events and {counts.images} images.")
            gr.Info(note)
            return [], [], chat_state, _conversation_choices(chat_state), note

        def unload(request: gr.Request):
            key = getattr(request, "session_hash", None)
            if key:
                studio.cancel(key)  # a closed tab: stop generating for it
                studio.end_session(key)

        # -- wiring -----------------------------------------------------------------------

        # Unqueued, so a full queue cannot refuse the tab its identity.
        demo.load(init, [client_key, state], [state, client_key, conversations], queue=False)
        timer.tick(poll, None, [status, timer, thinking, budget, adapter, compare_mode])
        consent.change(set_consent, [consent, state], [state])
        chat_outputs = [chatbot, slots, box, state]
        submit = box.submit(respond, [box, state, *settings_inputs], chat_outputs,
                            api_name="chat", concurrency_id="model",
                            concurrency_limit=model_limit)
        submit.then(_conversation_choices, [state], [conversations])
        retry = chatbot.retry(regenerate, [state, *settings_inputs], chat_outputs,
                              concurrency_id="model", concurrency_limit=model_limit)
        box.stop(stop, [state], None, cancels=[submit, retry], queue=False)
        chatbot.like(on_like, [state, slots], [dislike_panel, state], queue=False)
        send_reasons.click(on_reasons, [state, reasons, comment],
                           [dislike_panel, reasons, comment], queue=False)
        chatbot.edit(on_edit, [state, slots], [chatbot, slots, state], queue=False)
        compared = compare.click(
            run_compare, [box, state, compare_mode, *settings_inputs],
            [chatbot, slots, box, state, compare_panel, left, right,
             pick_a, pick_b, pick_tie, pick_bad],
            concurrency_id="model", concurrency_limit=model_limit)
        compared.then(_conversation_choices, [state], [conversations])
        for button, verdict in ((pick_a, "A"), (pick_b, "B"), (pick_tie, "tie"),
                                (pick_bad, "both_bad")):
            button.click(make_verdict(verdict), [state],
                         [chatbot, slots, state, compare_panel, left, right], queue=False)
        new_chat.click(start_new, [state], [chatbot, slots, state, conversations, title])
        chatbot.clear(start_new, [state], [chatbot, slots, state, conversations, title])
        conversations.input(open_conversation, [conversations, state],
                             [chatbot, slots, state, title])
        rename.click(rename_conversation, [title, state], [conversations])
        delete.click(delete_conversation, [state], [chatbot, slots, state, conversations])
        delete_all.click(delete_my_data, [state],
                         [chatbot, slots, state, conversations, privacy_note])
        demo.unload(unload)
    return demo


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
