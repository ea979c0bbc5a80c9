"""The studio page: its layout, assembled from the panels, and their wiring.

`build_page` lays out the sidebar (`ui.history`), the model status (`ui.model_status`), the
chat (`ui.chat`) with its feedback (`ui.feedback`) and compare (`ui.compare`) panels, and the
data tab (`ui.data_tab`), then has each panel wire its events. The handlers live with their
panels and adapt Gradio values to the flows of `studio.turns.Studio`; no torch here: the UI
talks to the engine only through its contract.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.turns import ChatState, Studio
from ui import chat, compare, feedback, history, model_status, render
from ui.data_tab import build_data_tab
from ui.examples import example_inputs
from ui.uploads import Uploads, sha256

# Gradio encrypts browser-stored values (the client key, the remembered consent) with this,
# and sends it to every visitor in the page config: it protects nothing, so it is fixed, which
# lets a browser read its values back after the server restarts (Gradio's default is a new
# random secret at each start). The key itself is the credential; the store keeps only its
# hash.
BROWSER_STATE_SECRET = "vqa-studio-browser-state"
# Tab from the top of the page reaches the question box first: a positive tabindex puts it
# ahead of every other control, which then follow in page order (the sidebar toggle, the
# tabs, the consent box, upload, send...). Gradio may draw the box anew, so the tabindex is
# set again whenever it does. The closed sidebar stays in the page; made inert, its controls
# leave the keyboard order, and Escape closes it (or a deletion's confirmation first). On a
# wide screen the box also takes the focus at once (not on a phone, where that would open the
# keyboard over the page). On a phone, where the open sidebar covers the whole page,
# choosing a conversation in it closes it, so that the conversation shows.
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
    // Escape backs out: first of a deletion being confirmed, then of the open sidebar,
    // handing the keyboard back to the question box.
    document.addEventListener('keydown', event => {
      if (event.key !== 'Escape' || event.defaultPrevented) return;
      const cancel = document.querySelector('#cancel-delete');
      if (cancel && cancel.offsetParent !== null) {
        cancel.click();
      } else if (panel.classList.contains('open')) {
        document.querySelector("button[aria-label='Toggle Sidebar']")?.click();
        document.querySelector('#question textarea')?.focus({preventScroll: true});
      } else {
        return;
      }
      event.preventDefault();
    });
    sidebar.addEventListener('change', event => {
      if (event.target.matches('#conversations input[type=radio]') &&
          window.matchMedia('(max-width: 720px)').matches &&
          panel.classList.contains('open')) {
        document.querySelector("button[aria-label='Toggle Sidebar']")?.click();
      }
    });
  }
  if (window.matchMedia('(min-width: 721px)').matches) {
    // Without preventScroll the browser scrolls the box into view, and a short window
    // opens with the title, the tabs and "Save my data" above its top.
    document.querySelector('#question textarea')?.focus({preventScroll: true});
  }
}
"""
# Where the browser remembers its consent. A tab that writes it fires `storage` in the
# browser's other tabs (never in itself), which ask the server whether to stop saving too.
CONSENT_KEY = "vqa-studio-consent"
FOLLOW_CONSENT_JS = f"""
() => {{
  window.addEventListener('storage', event => {{
    if (event.key === '{CONSENT_KEY}') document.querySelector('#consent-changed')?.click();
  }});
}}
"""
# The app runs without Gradio's run history (see `serve`), but a browser that used it before
# still holds every question it sent then, under keys Gradio names per start of the server;
# the page clears them at load, since "Delete my data" cannot reach them otherwise.
FORGET_RUNS_JS = """
() => {
  for (const key of Object.keys(localStorage)) {
    if (key.startsWith('gradio:run-history')) localStorage.removeItem(key);
  }
}
"""
CSS = """
.verdict-row button { min-width: 0; }
#answer-tools { align-items: center; gap: 8px; }
#answer-tools button { min-width: 44px; min-height: 40px; flex-grow: 0; }
/* Gradio gives the note a whole line; it sits between ‹ and › instead. */
#answer-version { flex: 0 0 auto; width: auto; min-width: 7em; }
#answer-tools #correct { flex: 0 0 auto; }
/* A title with no spaces (a pasted address) wraps inside the sidebar instead of leaving it. */
#conversations label { overflow-wrap: anywhere; }
@media (max-width: 720px) {
  #settings-column { min-width: 100% !important; }
  /* Stacked, each side keeps its own height (and scrolls) rather than growing to its
     answer's length, which put the verdict buttons far below. */
  #compare-row { flex-direction: column; }
  #compare-row > * { flex: 0 0 auto; }
  /* ‹ "Answer 2 of 3" › and Correct stay on one line. */
  #answer-tools { flex-wrap: nowrap; }
  #answer-version { min-width: 0; }
  /* A finger needs about 40 px each way: every button, the icons in the chat and the
     question box, and the whole line of a checkbox or radio choice, not just its box. */
  button, input[type=number] { min-height: 40px; }
  /* Gradio fixes the height of a slider's number box and of the tab bar, and hides what
     overflows it: grown to a finger's size, their controls were cut in half. */
  .tab-like-container:has(input[type=number]), .tab-container { height: auto; }
  button.icon-button, .toggle-button, #question button, .reset-button { min-width: 40px; }
  label:has(> input[type=checkbox]), label:has(> input[type=radio]) {
    min-height: 40px; align-items: center;
  }
  /* The sidebar's toggle sits over the page's top-left corner, and the chat's toolbar, with
     finger-sized buttons, over the top of the chat: the title and the first message start
     clear of them. */
  #intro h2 { padding-left: 14px; }
  #chatbot .bubble-wrap { padding-top: 52px; }
}
/* A thumbnail's remove button lies over the thumbnail and shows only on hover: on a touch
   screen it was an invisible button there, and tapping the picture removed it. */
@media (hover: none) {
  #question button[aria-label="Remove file"] {
    opacity: 1; background: rgba(0, 0, 0, 0.45); color: white; border-radius: 6px;
  }
}
/* Messages lay over the sidebar's toggle and the chat's toolbar at the top: on a phone they
   come from the bottom, as a phone's own do, with a close button for a finger. They lie
   outside the part of the page that Gradio lets a media query reach, so the query is nested
   (and the class doubled to outweigh Gradio's own rule). */
div.toast-wrap.toast-wrap { @media (max-width: 720px) { top: auto; bottom: 12px; } }
button.toast-close.toast-close { @media (max-width: 720px) { width: 40px; height: 40px; } }
/* Gradio's footer lies outside the part of the page its media queries reach. */
footer a, footer button { min-height: 40px; display: inline-flex; align-items: center; }
"""


def _examples_dir(settings) -> Path:
    return Path(settings.db_path).parent / "examples"


def page_uploads(settings) -> Uploads:
    """Gradio's upload folder as the page sees it; the examples' images are never dropped.
    Its `UploadTracker` goes in front of the server (see ui.uploads)."""
    examples_dir = _examples_dir(settings)
    return Uploads(Path(gr.utils.get_upload_folder()), keep={
        sha256(Path(f)) for example in example_inputs(examples_dir) for f in example["files"]})


def build_page(studio: Studio, settings, uploads: Uploads | None = None) -> gr.Blocks:
    """The whole page: chat, compare and history; the data tab when there is a store."""
    engine = studio.engine
    examples_dir = _examples_dir(settings)
    public = bool(getattr(settings, "public", False))
    # Sessions' images beside the database, served from there as they are: Gradio makes no
    # copies of them, and its cache clean-up (public apps) cannot take them from a session.
    # Each tab's folder has a random 128-bit name, so no one else can guess their addresses.
    scratch = Path(settings.db_path).parent / "sessions"
    studio.use_scratch(scratch)
    gr.set_static_paths([scratch])
    uploads = uploads or page_uploads(settings)
    if studio.store is not None:
        studio.store.on_erasure(uploads.forget)
        studio.store.on_erasure(render.forget)
    # A public app cleans Gradio's upload cache: files older than 15 min, checked every 5 min
    # (uploads a turn took are dropped at once; sessions' images live elsewhere).
    with gr.Blocks(title="VQA Studio", delete_cache=(300, 900) if public else None) as demo:
        client_key = gr.BrowserState(None, storage_key="vqa-studio-client",
                                     secret=BROWSER_STATE_SECRET)
        # Consent is remembered per browser apart from the identity key, with the version of
        # the text agreed to.
        consent_memory = gr.BrowserState(None, storage_key=CONSENT_KEY,
                                         secret=BROWSER_STATE_SECRET)
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

        sidebar = history.build_sidebar()

        gr.Markdown("## VQA Studio\nAsk a vision-language model about your images; "
                    "your likes, corrections and picks become training data.", elem_id="intro")
        status = gr.Markdown(model_status.status_text(engine), elem_id="model-status")
        if getattr(settings, "on_space", False) and not getattr(settings, "persistent", True):
            gr.Markdown("⚠️ This Space has no persistent storage: saved conversations and "
                        "feedback are lost when it restarts.", elem_id="storage-warning")
        if quota_note is not None:  # a GPU lent per answer (ZeroGPU)
            gr.Markdown(quota_note, elem_id="gpu-quota-note")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                consent_box = history.build_consent()
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=320):
                        chat_view = chat.build_view(slots)
                        feedback_panels = feedback.build_panels()
                        compare_panel = compare.build_panel()
                        box = chat.build_question_box()
                    with gr.Column(scale=1, min_width=240, elem_id="settings-column"):
                        settings_column = chat.build_settings(settings)
                        with gr.Accordion("Compare two answers", open=True):
                            compare_mode, compare_button = compare.build_controls()
                # Below both columns: on a phone the settings come before the examples.
                gr.Examples(example_inputs(examples_dir), inputs=[box],
                            label="Try an example")
            if studio.store is not None:
                with gr.Tab("Data", id="data", elem_id="data-tab") as data_tab:
                    build_data_tab(studio, settings, data_tab)
        timer = gr.Timer(1.0)
        api_chat = gr.Button(visible=False)
        # As many answers at once as the engine asks for (see `Engine.concurrency`); more
        # would only wait inside the engine instead of in Gradio's queue.
        model_limit = max(1, engine.concurrency)

        # Wired in this order so the events keep their places (and generated endpoint names)
        # in the page's config.
        sidebar_handlers = history.History(studio)
        history.wire_load(sidebar_handlers, demo, client_key, consent_memory, state, sidebar,
                          consent_box)
        demo.load(None, None, None, js=KEYBOARD_JS)
        model_status.wire(studio, timer, status,
                          [settings_column.thinking, settings_column.budget,
                           settings_column.adapter, compare_mode])
        history.wire_consent(sidebar_handlers, consent_box, consent_memory, state, sidebar)
        chat.wire(chat.Chat(studio, uploads), chat_view, box, api_chat, settings_column, state,
                  pending, model_limit, sidebar_handlers._conversation_choices,
                  sidebar.conversations, compare.close_compare, compare_panel.outputs)
        feedback.wire(feedback.Feedback(studio), chat_view, feedback_panels, state)
        compare.wire(compare.Compare(studio, uploads), chat_view, box, compare_panel,
                     compare_mode, compare_button, settings_column, state, model_limit,
                     sidebar_handlers._conversation_choices, sidebar.conversations)

        def leave_conversation(chat_state):
            # Its settled comparison goes, and the correction editor, opened on one of its
            # answers (a save would be refused there).
            return (*compare.close_compare(chat_state), gr.Group(visible=False))

        history.wire(sidebar_handlers, demo, sidebar, chat_view.chatbot, chat_view.outputs,
                     state, leave_conversation,
                     [*compare_panel.outputs, feedback_panels.editor_panel])
        demo.load(None, None, None, js=FORGET_RUNS_JS)
        demo.load(None, None, None, js=FOLLOW_CONSENT_JS)
    return demo
