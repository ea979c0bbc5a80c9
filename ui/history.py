"""The sidebar and the consent box: saved conversations, privacy, and who this tab is.

`build_sidebar` draws the conversation list (filter, open, rename, delete with a confirmation
that says how much goes) and the privacy controls (delete my data, with its API-only twin);
`build_consent` draws the "Save my data" box. `History` holds their handlers over
`studio.turns.Studio`: the tab's identity and remembered consent at load, consent, new, open,
rename, delete, erasure, and the end of a closed tab's session. `wire_load`, `wire_consent`
and `wire` connect them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

import gradio as gr

from studio.turns import CONSENT_TEXT, CONSENT_VERSION, ChatState, Studio, usable_client_key
from ui.common import NEVER_WAITS, VIEW_SIZE, keep_view, session_key, view, warn
from ui.render import counted


@dataclass
class Sidebar:
    new_chat: gr.Button
    history_filter: gr.Textbox
    conversations: gr.Radio
    title: gr.Textbox
    rename: gr.Button
    delete: gr.Button
    confirm_panel: gr.Group
    confirm_text: gr.Markdown
    confirm_delete: gr.Button
    cancel_delete: gr.Button
    deleting: gr.State  # what the confirmation would delete: "one", "all" or None
    delete_all: gr.Button
    erase_by_api: gr.Button
    privacy_note: gr.Markdown


@dataclass
class ConsentBox:
    consent: gr.Checkbox
    consent_note: gr.Markdown
    consent_changed: gr.Button


def build_sidebar() -> Sidebar:
    with gr.Sidebar(label="Conversations", open=False, elem_id="sidebar"):
        new_chat = gr.Button("+ New conversation", elem_id="new-chat", variant="primary")
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
    return Sidebar(new_chat, history_filter, conversations, title, rename, delete,
                   confirm_panel, confirm_text, confirm_delete, cancel_delete, deleting,
                   delete_all, erase_by_api, privacy_note)


def build_consent() -> ConsentBox:
    # Where a first-time visitor sees it, not in the closed sidebar.
    with gr.Group(elem_id="consent-box"):
        consent = gr.Checkbox(label="Save my data", value=False, info=CONSENT_TEXT,
                              elem_id="consent")
        consent_note = gr.Markdown("", elem_id="consent-note")
        # Pressed by the page when another tab of the browser changes its consent.
        consent_changed = gr.Button(visible="hidden", elem_id="consent-changed")
    return ConsentBox(consent, consent_note, consent_changed)


def _history_label(conversation) -> str:
    """"Title · 30 Nov 14:05" (UTC, when it was last active)."""
    when = ""
    with contextlib.suppress(ValueError, TypeError):
        when = datetime.fromisoformat(conversation.updated_at).strftime("%d %b %H:%M")
    title = conversation.title or "Untitled"
    return f"{title} · {when}" if when else title


class History:
    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def init(self, key: str | None, chat_state: ChatState):
        # The browser's stored key, or else the one this tab may already have been given
        # by a request that came before the load event: the browser keeps it from now on.
        if usable_client_key(key):
            chat_state.client_key = key
        return chat_state, chat_state.owner(), self._conversation_choices(chat_state)

    # The conversation list, filtered by the words of `query` when the filter box sends
    # them, else by the tab's last ones: the list is redrawn after each answer, rename and
    # deletion, and the words still in the box go on applying. The name keeps its underscore
    # and this says so in a comment, not a docstring: Gradio names an endpoint after its
    # function and describes it with its docstring, and API clients may know it as it was.
    def _conversation_choices(self, chat_state: ChatState, query: str | None = None):
        if query is not None:
            chat_state.list_filter = query
        try:
            items = self.studio.conversations(chat_state)
        except Exception as exc:
            warn(exc)
            items = []
        words = chat_state.list_filter.lower().split()
        items = [c for c in items if all(w in (c.title or "").lower() for w in words)]
        shown = chat_state.conversation_id in {c.id for c in items}
        return gr.Radio(choices=[(_history_label(c), c.id) for c in items],
                        value=chat_state.conversation_id if shown else None)

    def restore_consent(self, memory, chat_state: ChatState):
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

    def set_consent(self, value: bool, chat_state: ChatState):
        memory = {"version": CONSENT_VERSION, "consented": bool(value)}
        if not value:
            self.studio.withdraw_consent(chat_state)
            note = "Saving off: nothing from now on is kept."
            gr.Info(note)
            return gr.skip(), note, memory, chat_state, gr.skip()
        if chat_state.busy:
            gr.Warning("Tick “Save my data” again once the answer has finished.")
            return gr.Checkbox(value=False), gr.skip(), gr.skip(), chat_state, gr.skip()
        try:
            note = self.studio.give_consent(chat_state)
        except Exception as exc:
            warn(exc)
            chat_state.consented = False
            return gr.Checkbox(value=False), gr.skip(), gr.skip(), chat_state, gr.skip()
        gr.Info(note)
        return gr.skip(), note, memory, chat_state, self._conversation_choices(chat_state)

    def follow_consent(self, chat_state: ChatState):
        """Another tab of this browser changed "Save my data": a withdrawal there unticks it
        here. (Consent given there is not taken here: ticking keeps this tab's conversation
        so far, which is for this tab to decide.)"""
        if not self.studio.consent_withdrawn(chat_state):
            return gr.skip(), gr.skip(), chat_state
        note = "Saving off (in another tab): nothing from now on is kept."
        gr.Info(note)
        return gr.Checkbox(value=False), note, chat_state

    def _leave(self, chat_state: ChatState, request: gr.Request | None) -> None:
        """Going elsewhere stops what this tab was generating; its answer keeps what it
        said so far."""
        self.studio.leave(chat_state, session_key(request, chat_state))

    def start_new(self, chat_state: ChatState, request: gr.Request):
        self._leave(chat_state, request)
        chat_state.reset()
        # A plain None deselects the conversation list: a `gr.Radio(value=None)` would rebuild
        # the component with every title as its choices, on the thread that serves everyone.
        return (*view(chat_state), chat_state, None, "")

    def clear_chat(self, chat_state: ChatState, request: gr.Request):
        """The chat's own bin starts a new chat, as the sidebar's button does. It deletes
        nothing, which the page says when there was something saved."""
        saved = chat_state.conversation_id is not None
        drawn = self.start_new(chat_state, request)
        if saved:
            gr.Info("New chat. The last conversation is still saved: the sidebar lists it, "
                    "and can delete it.")
        return drawn

    def open_conversation(self, conversation_id: str | None, chat_state: ChatState,
                          request: gr.Request):
        if not conversation_id or conversation_id == chat_state.conversation_id:
            return (*keep_view(), chat_state, gr.skip())
        self._leave(chat_state, request)
        try:
            self.studio.open_conversation(chat_state, conversation_id)
        except Exception as exc:
            warn(exc)
            return (*keep_view(), chat_state, gr.skip())
        titles = {c.id: c.title for c in self.studio.conversations(chat_state)}
        return (*view(chat_state), chat_state, titles.get(conversation_id, ""))

    def rename_conversation(self, new_title: str, chat_state: ChatState):
        if not chat_state.conversation_id:
            gr.Warning("Open or start a saved conversation first.")
            return gr.skip()
        try:
            self.studio.rename_conversation(chat_state, chat_state.conversation_id, new_title)
        except Exception as exc:
            warn(exc)
        return self._conversation_choices(chat_state)

    def delete_conversation(self, chat_state: ChatState):
        if not chat_state.conversation_id:
            gr.Warning("Open a saved conversation first.")
            return (*keep_view(), chat_state, gr.skip())
        try:
            self.studio.delete_conversation(chat_state, chat_state.conversation_id)
            gr.Info("Conversation deleted.")
        except Exception as exc:
            warn(exc)
        return (*view(chat_state), chat_state, self._conversation_choices(chat_state))

    def delete_my_data(self, chat_state: ChatState):
        try:
            counts = self.studio.delete_my_data(chat_state)
        except Exception as exc:
            warn(exc)
            return (*keep_view(), chat_state, gr.skip(), gr.skip())
        note = (f"Deleted {counted(counts.conversations, 'conversation')}, "
                f"{counted(counts.messages, 'message')}, "
                f"{counted(counts.feedback, 'feedback event')} and "
                f"{counted(counts.images, 'image')}.")
        gr.Info(note)
        return (*view(chat_state), chat_state, self._conversation_choices(chat_state), note)

    def ask_delete(self, what: str):
        """The confirmation for deleting `what`: "one" conversation or "all" of the data."""
        def ask(chat_state: ChatState):
            try:
                items = self.studio.conversations(chat_state)
            except Exception as exc:
                warn(exc)
                return gr.skip(), gr.skip(), None
            if what == "one":
                current = [c for c in items if c.id == chat_state.conversation_id]
                if not current:
                    gr.Warning("Open a saved conversation first.")
                    return gr.skip(), gr.skip(), None
                text = (f"Delete “{current[0].title or 'Untitled'}” and its "
                        f"{counted(current[0].message_count, 'message')}, with their feedback and "
                        "the images only it uses? This cannot be undone.")
            else:
                if not items:
                    gr.Info("Nothing of yours is stored.")
                    return gr.skip(), gr.skip(), None
                messages = sum(c.message_count for c in items)
                text = (f"Delete all your data: {counted(len(items), 'conversation')} with "
                        f"{counted(messages, 'message')}, "
                        "their images and all your feedback? This cannot be undone.")
            return gr.Group(visible=True), text, what
        return ask

    def confirmed(self, what: str | None, chat_state: ChatState):
        hidden = gr.Group(visible=False)
        if what == "one":
            return (*self.delete_conversation(chat_state), gr.skip(), hidden, None)
        if what == "all":
            return (*self.delete_my_data(chat_state), hidden, None)
        return (*[gr.skip()] * (VIEW_SIZE + 3), hidden, None)

    def unload(self, request: gr.Request):
        key = getattr(request, "session_hash", None)
        if key:
            self.studio.cancel(key)  # a closed tab: stop generating for it
            self.studio.end_session(key)


def wire_load(history: History, demo: gr.Blocks, client_key: gr.BrowserState,
              consent_memory: gr.BrowserState, state: gr.State, sidebar: Sidebar,
              consent_box: ConsentBox) -> None:
    """At page load: the tab's identity and its list, then the browser's remembered consent."""
    # Unqueued, so a full queue cannot refuse the tab its identity.
    demo.load(history.init, [client_key, state], [state, client_key, sidebar.conversations],
              queue=False)
    demo.load(history.restore_consent, [consent_memory, state],
              [consent_box.consent, consent_box.consent_note, state], **NEVER_WAITS)


def wire_consent(history: History, consent_box: ConsentBox, consent_memory: gr.BrowserState,
                 state: gr.State, sidebar: Sidebar) -> None:
    consent_box.consent.input(history.set_consent, [consent_box.consent, state],
                              [consent_box.consent, consent_box.consent_note, consent_memory,
                               state, sidebar.conversations], **NEVER_WAITS)
    consent_box.consent_changed.click(history.follow_consent, [state],
                                      [consent_box.consent, consent_box.consent_note, state],
                                      api_visibility="private", **NEVER_WAITS)


def wire(history: History, demo: gr.Blocks, sidebar: Sidebar, chatbot: gr.Chatbot,
         view_outputs: list, state: gr.State, on_leave, leave_outputs: list) -> None:
    """New, open, rename, filter, delete and erase; and a closed tab's end. Leaving a
    conversation runs `on_leave` (into `leave_outputs`) to hide what belonged to it.

    None of these waits for the model, so none waits for another visitor either.
    """
    for event, handler in ((sidebar.new_chat.click, history.start_new),
                           (chatbot.clear, history.clear_chat)):
        event(handler, [state], [*view_outputs, state, sidebar.conversations, sidebar.title],
              **NEVER_WAITS).then(on_leave, [state], leave_outputs, **NEVER_WAITS)
    opened = sidebar.conversations.input(history.open_conversation,
                                         [sidebar.conversations, state],
                                         [*view_outputs, state, sidebar.title], **NEVER_WAITS)
    opened.then(on_leave, [state], leave_outputs, **NEVER_WAITS)
    sidebar.rename.click(history.rename_conversation, [sidebar.title, state],
                         [sidebar.conversations], **NEVER_WAITS)
    sidebar.history_filter.change(history._conversation_choices,
                                  [state, sidebar.history_filter], [sidebar.conversations],
                                  **NEVER_WAITS)
    confirm_outputs = [sidebar.confirm_panel, sidebar.confirm_text, sidebar.deleting]
    sidebar.delete.click(history.ask_delete("one"), [state], confirm_outputs, **NEVER_WAITS)
    sidebar.delete_all.click(history.ask_delete("all"), [state], confirm_outputs, **NEVER_WAITS)
    sidebar.confirm_delete.click(history.confirmed, [sidebar.deleting, state],
                                 [*view_outputs, state, sidebar.conversations,
                                  sidebar.privacy_note, sidebar.confirm_panel,
                                  sidebar.deleting], **NEVER_WAITS)
    sidebar.cancel_delete.click(lambda: (gr.Group(visible=False), None), None,
                                [sidebar.confirm_panel, sidebar.deleting], **NEVER_WAITS)
    sidebar.erase_by_api.click(history.delete_my_data, [state],
                               [*view_outputs, state, sidebar.conversations,
                                sidebar.privacy_note],
                               api_name="delete_my_data", **NEVER_WAITS)
    demo.unload(history.unload)
