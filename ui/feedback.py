"""Feedback on answers: thumbs up and down, the reasons for a dislike, and corrections.

`build_panels` draws the correction editor and the dislike panel under the chat; `Feedback`
holds their handlers (each records through `studio.turns.Studio.rate` or `edit` and says so
with a short note); `wire` connects them. The correct button itself sits in the chat's row of
answer tools (`chat.ChatView.correct`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.turns import DISLIKE_REASONS, ChatState, Studio
from ui.chat import ChatView
from ui.common import NEVER_WAITS, keep_view, view, view_after, warn


@dataclass
class FeedbackPanels:
    editor_panel: gr.Group
    editor: gr.Textbox
    save_edit: gr.Button
    cancel_edit: gr.Button
    dislike_panel: gr.Group
    reasons: gr.CheckboxGroup
    comment: gr.Textbox
    send_reasons: gr.Button


def build_panels() -> FeedbackPanels:
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
    return FeedbackPanels(editor_panel, editor, save_edit, cancel_edit, dislike_panel, reasons,
                          comment, send_reasons)


def _slot(message_slots, index):
    if isinstance(index, list | tuple):
        index = index[0]
    if not isinstance(index, int) or not 0 <= index < len(message_slots):
        return None
    return message_slots[index]


class Feedback:
    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def on_like(self, chat_state: ChatState, message_slots, data: gr.LikeData):
        chat_state.votes_shown = None  # the page turned the thumb itself, whatever follows
        # Gradio reports the first message of the clicked bubble (the reasoning when the
        # model thought): any message of a turn's answer stands for that answer.
        slot = _slot(message_slots, data.index)
        if slot is None or slot.part not in ("reasoning", "answer"):
            gr.Warning("Only answers can be rated.")
            return (*keep_view(), gr.skip(), chat_state)
        liked = True if data.liked is True else False if data.liked is False else None
        try:
            note = self.studio.rate(chat_state, slot.turn, liked)
        except Exception as exc:
            warn(exc)
            return (*view_after(exc, chat_state), gr.Group(visible=False), chat_state)
        gr.Info(note)
        return (*keep_view(), gr.Group(visible=liked is False), chat_state)

    def on_reasons(self, chat_state: ChatState, chosen: list[str], text: str):
        try:
            gr.Info(self.studio.explain_dislike(chat_state, chosen or (), text or ""))
        except Exception as exc:
            warn(exc)
        return gr.Group(visible=False), [], ""

    def open_editor(self, chat_state: ChatState):
        try:
            text = self.studio.open_editor(chat_state)
        except Exception as exc:
            warn(exc)
            return gr.skip(), gr.skip(), chat_state
        return gr.Group(visible=True), text, chat_state

    def save_correction(self, chat_state: ChatState, text: str):
        try:
            gr.Info(self.studio.save_correction(chat_state, text or ""))
        except Exception as exc:
            warn(exc)  # the editor stays open with the text typed
            return (*view_after(exc, chat_state), gr.skip(), chat_state)
        return (*view(chat_state), gr.Group(visible=False), chat_state)


def wire(feedback: Feedback, chat_view: ChatView, panels: FeedbackPanels,
         state: gr.State) -> None:
    # Judgements never wait for the model, and run queued to show their gr.Info on the page.
    chat_view.chatbot.like(feedback.on_like, [state, chat_view.slots],
                           [*chat_view.outputs, panels.dislike_panel, state], **NEVER_WAITS)
    panels.send_reasons.click(feedback.on_reasons, [state, panels.reasons, panels.comment],
                              [panels.dislike_panel, panels.reasons, panels.comment],
                              **NEVER_WAITS)
    chat_view.correct.click(feedback.open_editor, [state],
                            [panels.editor_panel, panels.editor, state], **NEVER_WAITS)
    panels.cancel_edit.click(lambda: gr.Group(visible=False), None, [panels.editor_panel],
                             queue=False)
    panels.save_edit.click(feedback.save_correction, [state, panels.editor],
                           [*chat_view.outputs, panels.editor_panel, state],
                           **NEVER_WAITS)
