"""Faults keep the studio's contracts: a refused request stores nothing, a question the disk
has no room for stops its answer, a lone surrogate is replaced and its answer row closed.
Real engines (the tiny checkpoint, the remote engine against a scripted server) and a real
SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from engine.types import Sampling
from storage import Store
from studio.turns import ChatState, NotAnswered, Studio, TurnOptions
from tests.scripted_server import ScriptedServer, model_listing, send_json, send_stream

LONG = TurnOptions(sampling=Sampling(max_new_tokens=3000, temperature=0.0))


def _rows(store, sql, *params):
    with sqlite3.connect(store.path) as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, params).fetchall()


def _consented() -> ChatState:
    state = ChatState()
    state.consented = True
    return state


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "studio.db") as store:
        yield store


@pytest.fixture
def surrogate_server():
    def reply(handler):
        if handler.command == "GET":
            send_json(handler, 200, model_listing("served-model"))
        else:
            send_stream(handler, "half of a pair \ud83d", " and a lone one \udfff.")

    server = ScriptedServer(reply)
    yield server
    server.close()


def test_lone_surrogates_are_replaced_and_the_answer_row_closed(store, surrogate_server):
    from engine.remote import RemoteEngine

    engine = RemoteEngine(surrogate_server.url, "served-model")
    engine.load()
    try:
        studio = Studio(engine, store)
        state = _consented()
        updates = list(studio.ask(state, "what is \ud800 this?", [], TurnOptions()))
    finally:
        engine.close()
    assert updates[-1].done and updates[-1].stats.finish_reason == "stop"
    question = _rows(store, "select * from messages where role = 'user'")[0]
    answer = _rows(store, "select * from messages where role = 'assistant'")[0]
    assert question["text"] == "what is \ufffd this?"
    assert answer["status"] == "done" and answer["finish_reason"] == "stop"
    assert answer["text"] == "half of a pair \ufffd and a lone one \ufffd."
    # What the page shows is the same valid text.
    assert updates[-1].answer == answer["text"]


def test_a_request_refused_because_the_model_is_busy_stores_nothing(store, tmp_path):
    from engine.batching import BatchLimits
    from engine.local import LocalEngine

    # One answer at a time and one waiting: a third request is refused.
    engine = LocalEngine("tiny-random", quantize="none", device="cpu", max_waiting=1,
                         batch_limits=BatchLimits(max_batch_size=1, max_batch_tokens=8192))
    engine.load()
    studio = Studio(engine, store)
    running = studio.ask(_consented(), "first: a long answer", [], LONG, session_key="first")
    next(running)
    waiting_state = _consented()
    waiting = studio.ask(waiting_state, "second: waits its turn", [], LONG,
                         session_key="second")
    waiter = threading.Thread(target=lambda: next(waiting, None), daemon=True)
    waiter.start()
    # The engine queues a request before its question is stored (the prompt is read while
    # the disk writes), so wait for both: in line for the model, and kept in the file.
    deadline = time.monotonic() + 60
    while studio.queue_position("second") != 1 or not _rows(
            store, "select * from messages where text like 'second:%'"):
        assert time.monotonic() < deadline, "the second request never queued"
        time.sleep(0.05)

    refused = _consented()
    with pytest.raises(NotAnswered, match="busy"):
        list(studio.ask(refused, "third: refused", [], LONG, session_key="third"))
    assert _rows(store, "select * from messages where text like 'third:%'") == []
    assert refused.conversation_id is None and refused.turns == []
    # A question waiting in line is kept; the refused one was withdrawn, conversation too.
    assert {row["title"] for row in _rows(store, "select * from conversations")} == {
        "first: a long answer", "second: waits its turn"}

    studio.cancel("first")
    running.close()
    waiter.join(timeout=60)
    studio.cancel("second")
    waiting.close()


def test_a_question_the_disk_has_no_room_for_stops_its_answer_and_keeps_the_tab_usable(store):
    from engine.batching import BatchLimits
    from engine.local import LocalEngine
    from storage import OutOfSpace

    # One answer at a time: an answer left running would keep the next one waiting in line.
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         batch_limits=BatchLimits(max_batch_size=1, max_batch_tokens=8192))
    engine.load()
    studio = Studio(engine, store)
    state = _consented()
    connection = store._db().conn  # this thread's, which stores the question: full at once
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(OutOfSpace, match="out of disk space"):
        next(studio.ask(state, "why? " * 1000, [], LONG, session_key="tab"))
    assert studio.streaming == 0 and state.turns == []
    assert _rows(store, "select * from messages") == []

    connection.execute("PRAGMA max_page_count = 1073741823")  # room again
    asking = studio.ask(state, "and now?", [], LONG, session_key="tab")
    first = threading.Thread(target=lambda: next(asking), daemon=True)
    first.start()
    deadline = time.monotonic() + 60
    while (position := studio.queue_position("tab")) is None:
        assert time.monotonic() < deadline, "the new question never reached the model"
        time.sleep(0.01)
    assert position == 0  # decoding at once: nothing of the failed question runs before it
    first.join(timeout=60)
    studio.cancel("tab")
    updates = list(asking)
    assert updates[-1].done and updates[-1].stats.finish_reason == "cancelled"
    assert [row["text"] for row in _rows(store, "select * from messages where role = 'user'")
            ] == ["and now?"]


class _NoRoomForAnswers(Store):
    """A real store whose disk fills up between a question and its answer."""

    def start_answer(self, *args, **kwargs):
        from storage import OutOfSpace

        raise OutOfSpace("The server is out of disk space; nothing was saved.")


def test_an_answer_whose_row_cannot_be_written_stops_and_says_so(tiny_engine, tmp_path):
    from storage import OutOfSpace

    with _NoRoomForAnswers(tmp_path / "studio.db") as store:
        studio = Studio(tiny_engine, store)
        state = _consented()
        asking = studio.ask(state, "why?", [], LONG, session_key="tab")
        first = next(asking)  # goes out while the row is being written
        assert not first.done
        with pytest.raises(OutOfSpace, match="out of disk space"):
            list(asking)
        assert studio.streaming == 0  # the engine was stopped, not left decoding
        assert [row["role"] for row in _rows(store, "select * from messages")] == ["user"]
        # What was shown stays in the tab, stopped and marked as not stored.
        shown = state.turns[-1].answer
        assert shown.stats.finish_reason == "cancelled" and shown.answer_id is None


def test_a_comparison_whose_rows_cannot_be_written_says_so_and_offers_no_verdict(
        tiny_engine, tmp_path):
    from storage import OutOfSpace

    with _NoRoomForAnswers(tmp_path / "studio.db") as store:
        studio = Studio(tiny_engine, store)
        state = _consented()
        with pytest.raises(OutOfSpace, match="out of disk space"):
            list(studio.compare(state, "which?", [], LONG, "samples", session_key="tab"))
        assert studio.streaming == 0 and state.comparison is None
        assert [row["role"] for row in _rows(store, "select * from messages")] == ["user"]


class _FiguresRefused(Store):
    """A real store that refuses an answer's figures (as it refuses numbers SQLite cannot
    hold), and takes the same answer without them."""

    def finish_answer(self, answer_id, *, text, reasoning="", stats):
        from storage import InvalidRequest

        if stats.answer_tokens or stats.reasoning_tokens:
            raise InvalidRequest("answer_tokens must be a count.")
        return super().finish_answer(answer_id, text=text, reasoning=reasoning, stats=stats)


def test_an_answer_whose_figures_cannot_be_stored_keeps_its_text_and_later_turns(
        tiny_engine, tmp_path):
    short = TurnOptions(sampling=Sampling(max_new_tokens=4, temperature=0.0))
    with _FiguresRefused(tmp_path / "studio.db") as store:
        studio = Studio(tiny_engine, store)
        state = _consented()
        first = list(studio.ask(state, "first?", [], short, session_key="tab"))[-1]
        list(studio.ask(state, "second?", [], short, session_key="tab"))
        row = _rows(store, "select * from messages where id = ?", first.answer_id)[0]
        assert (row["status"], row["text"]) == ("done", first.answer)
        assert row["finish_reason"] == first.stats.finish_reason
        # Opened again, the conversation goes on past that answer.
        reopened = _consented()
        reopened.client_key = state.client_key
        studio.open_conversation(reopened, state.conversation_id)
        assert [turn.question.text for turn in reopened.turns] == ["first?", "second?"]
