"""Comparing two answers side by side, and the verdict between them.

`build_panel` draws the two answers and the verdict buttons under the chat; `build_controls`
draws the compare mode and button in the settings column. `Compare` holds the handlers: ask
once and stream two answers (`studio.turns.Studio.compare`), record a verdict (which also
reveals what produced each side), and close the panel once no verdict can be given. The
panel's updates follow `ComparePanel.outputs`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from studio.turns import ChatState, Studio, TurnUpdate
from ui.chat import ChatView, SettingsColumn
from ui.common import (
    BUSY,
    NEVER_WAITS,
    answering,
    keep_view,
    message_files,
    model_lane,
    options,
    received,
    redraw_interval,
    session_key,
    view,
    view_after,
    warn,
)
from ui.render import answer_messages
from ui.uploads import Uploads

VERDICTS = ("A", "B", "tie", "both_bad")


@dataclass
class ComparePanel:
    panel: gr.Group
    reveal: gr.Markdown
    left: gr.Chatbot
    right: gr.Chatbot
    pick_a: gr.Button
    pick_b: gr.Button
    pick_tie: gr.Button
    pick_bad: gr.Button

    @property
    def outputs(self) -> list:
        return [self.panel, self.reveal, self.left, self.right,
                self.pick_a, self.pick_b, self.pick_tie, self.pick_bad]

    @property
    def picks(self) -> list[gr.Button]:
        """The verdict buttons, in the order of `VERDICTS`."""
        return [self.pick_a, self.pick_b, self.pick_tie, self.pick_bad]


def build_panel() -> ComparePanel:
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
    return ComparePanel(compare_panel, compare_reveal, left, right, pick_a, pick_b, pick_tie,
                        pick_bad)


def build_controls() -> tuple[gr.Radio, gr.Button]:
    """The compare mode (its choices follow the model: `model_status.model_controls`) and the
    button that asks and compares."""
    compare_mode = gr.Radio([("Two samples", "samples")],
                            value="samples", label="Compare",
                            elem_id="compare-mode")
    compare = gr.Button("Ask and compare", elem_id="compare")
    return compare_mode, compare


def _side(update: TurnUpdate, verdict_given: bool = False) -> list[dict]:
    # Until the verdict the stats line does not name the model or adapter of a side:
    # with "Base vs adapter" it would tell which is which.
    return answer_messages(update, name_model=verdict_given)


class Compare:
    def __init__(self, studio: Studio, uploads: Uploads) -> None:
        self.studio = studio
        self.uploads = uploads

    def run_compare(self, message, chat_state: ChatState, mode: str, think, think_budget,
                    max_tokens, temp, p, k, seed_value, variant, request: gr.Request):
        values = (think, think_budget, max_tokens, temp, p, k, seed_value, variant)
        message = received(message)
        text, files = message["text"], message_files(message)
        verdicts_off = [gr.Button(interactive=False)] * 4
        if chat_state.busy:
            gr.Warning(BUSY)
            yield (*keep_view(), gr.skip(), chat_state,
                   *[gr.skip()] * 4, *verdicts_off)
            return
        chat_state.busy = True
        with answering(chat_state):
            yield from self._compare(chat_state, text, files, values, mode, message,
                                     verdicts_off, session_key(request, chat_state))

    def _compare(self, chat_state, text, files, values, mode, message, verdicts_off, key):
        try:
            pairs = self.studio.compare(chat_state, text, files, options(*values), mode,
                                        session_key=key)
            pair = next(pairs)
            self.uploads.discard(files)
        except Exception as exc:
            warn(exc)
            chat_state.busy = False
            yield (*keep_view(), message, chat_state, gr.skip(), gr.skip(),
                   gr.skip(), gr.skip(), *verdicts_off)
            return
        # The chat (the question) and the panel are drawn once; later redraws carry the two
        # answers, and the chat unchanged.
        shown = view(chat_state, streaming=True)
        last_yield, drawn = 0.0, False
        left = chat_state.left
        while True:
            if chat_state.left != left:
                break  # the tab went elsewhere: its page no longer shows this comparison
            if time.monotonic() - last_yield >= redraw_interval(self.studio):
                if not drawn:
                    yield (*shown, None, chat_state, gr.Group(visible=True), "",
                           _side(pair[0]), _side(pair[1]), *verdicts_off)
                else:  # the rest stays as the first redraw left it
                    # The chat goes again as it was: Gradio rebuilds a skipped Chatbot and
                    # works out its API schema (about 2 ms on the event loop), while the same
                    # messages cost a tenth of that and nothing on the wire.
                    yield (shown[0], *keep_view()[1:], gr.skip(), chat_state, gr.skip(),
                           gr.skip(), _side(pair[0]), _side(pair[1]), *[gr.skip()] * 4)
                last_yield, drawn = time.monotonic(), True
            try:
                pair = next(pairs)
            except StopIteration:
                break
            except Exception as exc:
                warn(exc)
                break
        chat_state.busy = False  # both answers are settled (see `answering`)
        if chat_state.left != left:
            yield (*keep_view(), None, chat_state, *[gr.skip()] * 4, *verdicts_off)
            return
        ready = chat_state.comparison is not None
        yield (*view(chat_state), None, chat_state, gr.Group(visible=True),
               "Which answer is better? Your pick continues the conversation."
               if ready else "", _side(pair[0]), _side(pair[1]),
               *[gr.Button(interactive=ready)] * 4)

    def make_verdict(self, verdict: str):
        def judge(chat_state: ChatState):
            comparison = chat_state.comparison
            off = [gr.Button(interactive=False)] * 4
            try:
                note = self.studio.judge(chat_state, verdict)
            except Exception as exc:
                warn(exc)
                return (*view_after(exc, chat_state), chat_state, gr.skip(), gr.skip(),
                        gr.skip(), gr.skip(), *off)
            gr.Info(note)
            # Which settings produced each side is told only after the verdict, and
            # the two answers stay on screen beside it.
            reveal = (f"**{note}** Answer A: *{comparison.left.label}* · "
                      f"Answer B: *{comparison.right.label}*")
            return (*view(chat_state), chat_state, gr.Group(visible=True), reveal,
                    _side(comparison.left, True), _side(comparison.right, True), *off)
        return judge


def close_compare(chat_state: ChatState):
    """The comparison panel only stays while its verdict can still be given."""
    if chat_state.comparison is None:
        return (gr.Group(visible=False), "", [], [],
                *[gr.Button(interactive=False)] * 4)
    return (gr.skip(),) * 8


def wire(compare: Compare, chat_view: ChatView, box: gr.MultimodalTextbox,
         panel: ComparePanel, compare_mode: gr.Radio, compare_button: gr.Button,
         settings_column: SettingsColumn, state: gr.State, model_limit: int,
         refresh_history, conversations: gr.Radio) -> None:
    """Asking and comparing, then the verdicts. After the two answers `refresh_history`
    redraws the conversation list."""
    view_outputs = chat_view.outputs
    compared = compare_button.click(
        compare.run_compare, [box, state, compare_mode, *settings_column.inputs],
        [*view_outputs, box, state, *panel.outputs],
        **model_lane(model_limit))
    compared.then(refresh_history, [state], [conversations], **NEVER_WAITS)
    for button, verdict in zip(panel.picks, VERDICTS, strict=True):
        button.click(compare.make_verdict(verdict), [state],
                     [*view_outputs, state, *panel.outputs], **NEVER_WAITS)
