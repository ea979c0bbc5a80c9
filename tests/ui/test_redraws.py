"""What a streaming answer's redraws carry.

Every control an update names costs the server a new component and its configuration, on the
thread that serves every visitor; a streaming answer redraws many times. So the first redraw
hides the controls under the chat (or shows the comparison's panel with its verdicts off),
the redraws after it carry the answer alone, and the last one puts the controls back. The
handlers run here as Gradio runs them, one update at a time, on the real tiny engine with the
page's default (thinking on) and a real SQLite file.
"""

from __future__ import annotations

import sqlite3

import gradio as gr
import pytest

from storage import Store
from studio.turns import ChatState, Studio
from ui.chat import Chat
from ui.common import VIEW_SIZE
from ui.compare import Compare
from ui.uploads import Uploads

# think, thinking budget, max new tokens, temperature, top p, top k, seed, adapter: long
# enough for several redraws at the tiny model's speed
SETTINGS = (True, 64, 320, 0.0, 1.0, 0, "1", "Base model")


@pytest.fixture
def studio(tiny_engine, tmp_path):
    with Store(tmp_path / "studio.db") as store:
        studio = Studio(tiny_engine, store)
        studio.use_scratch(tmp_path / "sessions")
        yield studio


def _consented() -> ChatState:
    state = ChatState()
    state.consented = True
    return state


def _statuses(studio: Studio) -> list[str]:
    with sqlite3.connect(studio.store.path) as db:
        return [row[0] for row in db.execute(
            "select status from messages where role = 'assistant' order by created_at")]


def _controls(update) -> list:
    return list(update[2:VIEW_SIZE])


def test_an_answers_redraws_after_the_first_leave_the_controls_alone(studio, tmp_path):
    chat = Chat(studio, Uploads(tmp_path / "uploads", keep=set()))
    state = _consented()

    updates = list(chat.ask_directly({"text": "what is this?", "files": []}, state,
                                     *SETTINGS, None))
    assert len(updates) >= 3, "the answer should stream over several redraws"
    first, middle, last = updates[0], updates[1:-1], updates[-1]
    row, _, back, forward = _controls(first)
    assert isinstance(row, gr.Row) and row.visible is False  # hidden while it streams
    assert back.visible is False and forward.visible is False
    for update in middle:
        assert _controls(update) == [gr.skip()] * 4
        assert "what is this?" in str(update[0])  # the chat itself is redrawn
    row, label, back, forward = _controls(last)
    assert row.visible is True  # the thumbs and the correction are back
    assert back.visible is forward.visible is bool(label)  # arrows once there are versions
    assert _statuses(studio) == ["done"]


def test_a_comparisons_redraws_after_the_first_carry_the_two_answers_alone(studio, tmp_path):
    compare = Compare(studio, Uploads(tmp_path / "uploads", keep=set()))
    state = _consented()

    updates = list(compare.run_compare({"text": "which?", "files": []}, state, "samples",
                                       *SETTINGS, None))
    assert len(updates) >= 3, "the comparison should stream over several redraws"
    first, middle, last = updates[0], updates[1:-1], updates[-1]
    tail = VIEW_SIZE + 2  # after the chat's outputs, the box and the state
    panel, note, left, right, *verdicts = first[tail:]
    assert panel.visible is True and note == "" and left and right
    assert [button.interactive for button in verdicts] == [False] * 4
    for update in middle:
        panel, note, left, right, *verdicts = update[tail:]
        assert [panel, note, *verdicts] == [gr.skip()] * 6
        assert left and right  # the two answers, as far as they got
        assert list(update[:VIEW_SIZE + 1]) == [gr.skip()] * (VIEW_SIZE + 1)
    assert [button.interactive for button in last[tail + 4:]] == [True] * 4
    assert _statuses(studio) == ["done", "done"]
