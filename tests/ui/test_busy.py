"""A tab may ask again the moment its finished answer shows; a streaming answer's redraws carry
the answer alone.

The chat and compare handlers run here as Gradio runs them, one update at a time: Gradio sends
an update before it resumes the handler, so the tab's state when an update is taken is the
state the page has when it shows that update. On the real tiny engine, with the page's default
(thinking on), and a real SQLite file: every update before the last leaves the tab busy, and
the last one, which draws the finished answer with its stats line, leaves it free; so does a
refusal that gives the question back. And an answer stopped by "New chat" draws nothing
after the tab left, so the old conversation cannot come back into the new one.

Every control an update names costs the server a new component and its configuration, on the
thread that serves every visitor, and a streaming answer redraws many times. So the page's
echo of a question hides the tools under the chat (a regenerated answer's first redraw does;
a comparison's first redraw shows its panel with the verdicts off), the redraws carry the
answer alone, the last one puts the controls back, and API answers never name them.
"""

from __future__ import annotations

import sqlite3

import gradio as gr
import pytest

from storage import Store
from studio.turns import JUDGED_GONE, ChatState, Studio
from ui.chat import Chat
from ui.common import VIEW_SIZE
from ui.compare import Compare
from ui.render import inert_html
from ui.uploads import Uploads

# think, thinking budget, max new tokens, temperature, top p, top k, seed, adapter
SETTINGS = (True, 16, 48, 0.0, 1.0, 0, "1", "Base model")
# Long enough for several redraws at the tiny model's speed.
LONG = (True, 64, 320, 0.0, 1.0, 0, "1", "Base model")


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "studio.db") as store:
        yield store


def _studio(tiny_engine, store, tmp_path) -> tuple[Studio, Uploads]:
    studio = Studio(tiny_engine, store)
    studio.use_scratch(tmp_path / "sessions")
    return studio, Uploads(tmp_path / "uploads", keep=set())


def _busy_at_each_update(updates, state: ChatState) -> tuple[list[bool], object]:
    busy, seen = [], []
    for update in updates:
        busy.append(state.busy)
        seen[:] = [update]
    return busy, seen[0] if seen else None


def _consented() -> ChatState:
    state = ChatState()
    state.consented = True
    return state


def _answers(store) -> list[str]:
    with sqlite3.connect(store.path) as db:
        return [row[0] for row in db.execute(
            "select status from messages where role = 'assistant' order by created_at")]


def test_the_update_that_shows_the_finished_answer_frees_the_tab(tiny_engine, store,
                                                                  tmp_path):
    studio, uploads = _studio(tiny_engine, store, tmp_path)
    chat = Chat(studio, uploads)
    state = _consented()

    busy, last = _busy_at_each_update(
        chat.ask_directly({"text": "what is this?", "files": []}, state, *SETTINGS, None),
        state)
    assert len(busy) >= 2 and busy[-1] is False and all(busy[:-1])
    assert " tokens · " in str(last[0])  # the last update draws the stats line
    assert _answers(store) == ["done"]

    busy, last = _busy_at_each_update(chat.regenerate(state, *SETTINGS, None), state)
    assert len(busy) >= 2 and busy[-1] is False and all(busy[:-1])
    assert _answers(store) == ["done", "done"]


def test_a_refusal_gives_the_question_back_to_a_free_tab(tiny_engine, store, tmp_path):
    studio, uploads = _studio(tiny_engine, store, tmp_path)
    chat = Chat(studio, uploads)
    state = _consented()
    question = {"text": "and this?", "files": [str(tmp_path / "gone.png")]}

    busy, last = _busy_at_each_update(
        chat.ask_directly(question, state, *SETTINGS, None), state)
    assert busy == [False]
    assert question in last  # back in the box
    assert _answers(store) == []


def test_the_update_that_offers_the_verdict_frees_the_tab(tiny_engine, store, tmp_path):
    studio, uploads = _studio(tiny_engine, store, tmp_path)
    compare = Compare(studio, uploads)
    state = _consented()

    busy, _ = _busy_at_each_update(
        compare.run_compare({"text": "which?", "files": []}, state, "samples", *SETTINGS,
                            None), state)
    assert len(busy) >= 2 and busy[-1] is False and all(busy[:-1])
    assert state.comparison is not None  # the verdict is offered
    assert _answers(store) == ["done", "done"]


def test_a_new_chat_while_an_answer_streams_keeps_that_answer_off_the_new_chat(
        tiny_engine, store, tmp_path):
    import threading

    from testing.waiting import wait_until
    from ui.history import History

    studio, uploads = _studio(tiny_engine, store, tmp_path)
    chat, history = Chat(studio, uploads), History(studio)
    state = _consented()
    long = (False, 0, 400, 0.0, 1.0, 0, "1", "Base model")  # greedy: it runs its length
    updates: list = []
    answering = threading.Thread(target=lambda: updates.extend(
        chat.ask_directly({"text": "tell me all", "files": []}, state, *long, None)))
    answering.start()
    assert wait_until(lambda: updates, timeout=60)

    new_chat = history.start_new(state, None)  # stops the answer, then empties the tab
    answering.join(timeout=60)
    assert not answering.is_alive()
    assert new_chat[0] == [] and state.turns == []
    # The stopped answer's last update came after the tab left: it leaves the chat alone,
    # whichever of the two reaches the page last.
    assert updates[-1][0] == gr.skip()
    assert not state.busy
    with sqlite3.connect(store.path) as db:  # stored as far as it got
        assert db.execute("select finish_reason from messages where role = 'assistant'"
                          ).fetchall() == [("cancelled",)]


def _controls(update) -> list:
    return list(update[2:VIEW_SIZE])


def test_the_page_hides_the_tools_with_the_question_and_its_redraws_carry_the_answer_alone(
        tiny_engine, store, tmp_path):
    studio, uploads = _studio(tiny_engine, store, tmp_path)
    chat = Chat(studio, uploads)
    state = _consented()
    question = {"text": "what is this?", "files": []}

    chatbot, tools, box, pending, state = chat.echo(question, state)
    assert isinstance(tools, gr.Row) and tools.visible is False  # hidden with the echo
    assert box is None and pending == question and state.busy
    updates = list(chat.respond(pending, state, *LONG, None))
    assert len(updates) >= 3, "the answer should stream over several redraws"
    for update in updates[:-1]:
        assert _controls(update) == [gr.skip()] * 4  # the first token carries no controls
        assert "what is this?" in str(update[0])  # the chat itself is redrawn
    row, label, back, forward = _controls(updates[-1])
    assert row.visible is True  # the thumbs and the correction are back
    assert back.visible is forward.visible is bool(label)  # arrows once there are versions
    assert chat.release(pending, state) == (gr.skip(), state)  # nothing left to free

    # A regenerated answer has no echo: its first redraw hides the tools.
    updates = list(chat.regenerate(state, *LONG, None))
    row, *inside = _controls(updates[0])
    assert isinstance(row, gr.Row) and row.visible is False
    assert inside == [gr.skip()] * 3  # whatever shows the row again sets them
    assert all(_controls(update) == [gr.skip()] * 4 for update in updates[1:-1])
    row, label, back, forward = _controls(updates[-1])
    assert row.visible is True and label == "Answer 2 of 2" and back.visible
    assert _answers(store) == ["done", "done"]


def test_the_chat_carries_its_thumbs_only_when_they_change(tiny_engine, store, tmp_path):
    """A Chatbot update makes the server build a component and its API schema again, so the
    finished answer and New chat send the messages alone unless the thumbs change."""
    from ui.feedback import Feedback
    from ui.history import History

    studio, uploads = _studio(tiny_engine, store, tmp_path)
    chat, history, feedback = Chat(studio, uploads), History(studio), Feedback(studio)
    state = _consented()

    def ask(text: str) -> tuple:
        *_, pending, _ = chat.echo({"text": text, "files": []}, state)
        return list(chat.respond(pending, state, *SETTINGS, None))[-1]

    last = ask("first")
    assert isinstance(last[0], list) and " tokens · " in str(last[0])  # no vote to show
    message_slots = last[1]
    answer = next(i for i, slot in enumerate(message_slots) if slot.part == "answer")
    feedback.on_like(state, message_slots, gr.LikeData(None, {"index": answer, "value": "",
                                                              "liked": True}))
    # The page turned the thumb itself; the next answer's end sends the votes as stored.
    last = ask("second")
    assert isinstance(last[0], gr.Chatbot) and last[0].feedback_value == ["Like", None]
    assert isinstance(ask("third")[0], list)  # unchanged since
    cleared = history.start_new(state, None)[0]
    assert isinstance(cleared, gr.Chatbot) and cleared.feedback_value == []
    assert history.start_new(state, None)[0] == []  # nothing to clear this time
    with sqlite3.connect(store.path) as db:
        assert db.execute("select count(*) from feedback where kind = 'like'").fetchone() == (1,)


def test_an_api_answer_never_updates_the_pages_controls(tiny_engine, store, tmp_path):
    studio, uploads = _studio(tiny_engine, store, tmp_path)
    chat = Chat(studio, uploads)
    state = _consented()

    updates = list(chat.ask_directly({"text": "what is this?", "files": []}, state,
                                     *LONG, None))
    assert len(updates) >= 3
    assert all(_controls(update) == [gr.skip()] * 4 for update in updates)
    assert " tokens · " in str(updates[-1][0])
    assert _answers(store) == ["done"]


def test_a_question_whose_answer_never_ran_gives_the_tools_back(tiny_engine, store, tmp_path):
    studio, uploads = _studio(tiny_engine, store, tmp_path)
    chat = Chat(studio, uploads)
    state = _consented()
    list(chat.ask_directly({"text": "first", "files": []}, state, *SETTINGS, None))

    _, tools, _, pending, state = chat.echo({"text": "second", "files": []}, state)
    assert tools.visible is False and state.busy
    # The queue was full: the answering event never ran, only the release after it.
    tools, state = chat.release(pending, state)
    assert tools.visible is True and not state.busy

    # A question echo refused (the tab was busy) leaves the busy tab as it is.
    state.busy = True
    _, tools, _, pending, state = chat.echo({"text": "third", "files": []}, state)
    assert pending is None and tools == gr.skip()
    assert chat.release(pending, state) == (gr.skip(), state) and state.busy


def test_a_comparisons_redraws_after_the_first_carry_the_two_answers_alone(tiny_engine, store,
                                                                          tmp_path):
    studio, uploads = _studio(tiny_engine, store, tmp_path)
    compare = Compare(studio, uploads)
    state = _consented()

    updates = list(compare.run_compare({"text": "which?", "files": []}, state, "samples",
                                       *LONG, None))
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
        # The chat as the first redraw drew it: a skipped Chatbot would cost the server more.
        assert update[0] == first[0] and "which?" in str(update[0])
        assert list(update[1:VIEW_SIZE + 1]) == [gr.skip()] * VIEW_SIZE
    assert [button.interactive for button in last[tail + 4:]] == [True] * 4
    assert _answers(store) == ["done", "done"]


def test_a_like_in_a_tab_whose_conversation_another_tab_erased_says_so_and_clears_it(
        tiny_engine, store, tmp_path, monkeypatch):
    """Two tabs of one browser: the second erases everything; a like in the first, still
    showing the conversation, records nothing, says that, and empties its chat."""
    from ui.feedback import Feedback
    from ui.history import History

    studio, uploads = _studio(tiny_engine, store, tmp_path)
    chat, history, feedback = Chat(studio, uploads), History(studio), Feedback(studio)
    first, second = _consented(), _consented()
    second.client_key = first.owner()
    *_, pending, _ = chat.echo({"text": "erased elsewhere", "files": []}, first)
    message_slots = list(chat.respond(pending, first, *SETTINGS, None))[-1][1]
    answer = next(i for i, slot in enumerate(message_slots) if slot.part == "answer")
    history.delete_my_data(second)
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    drawn = feedback.on_like(first, message_slots,
                             gr.LikeData(None, {"index": answer, "value": "", "liked": True}))
    assert warnings == [inert_html(JUDGED_GONE)]
    chatbot = drawn[0]
    assert (chatbot.value if isinstance(chatbot, gr.Chatbot) else chatbot) == []
    assert first.turns == [] and first.conversation_id is None
    with sqlite3.connect(store.path) as db:
        assert db.execute("select count(*) from feedback").fetchone() == (0,)
        assert db.execute("select count(*) from messages").fetchone() == (0,)
