"""The studio's flows without a browser: the real tiny engine and a real SQLite file."""

from __future__ import annotations

import random
import sqlite3
import threading
from dataclasses import replace

import pytest
from PIL import Image

from engine.errors import ImageError, RequestError
from engine.types import Sampling
from storage import NotFound, Store
from studio.turns import ChatState, Studio, TurnOptions

FAST = TurnOptions(thinking=False, sampling=Sampling(max_new_tokens=12, temperature=0.0, seed=3))


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "studio.db") as store:
        yield store


@pytest.fixture
def studio(tiny_engine, store):
    return Studio(tiny_engine, store)


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (80, 60), (220, 30, 30)).save(path)
    return str(path)


def _consented() -> ChatState:
    state = ChatState()
    state.consented = True
    return state


def _run(iterator):
    updates = list(iterator)
    return updates[-1] if updates else None


def _rows(store, sql):
    with sqlite3.connect(store.path) as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql).fetchall()


def _count(store, table):
    return len(_rows(store, f"select * from {table}"))


def test_a_turn_is_stored_question_first_then_the_answer(studio, store, image_path):
    state = _consented()
    updates = list(studio.ask(state, "What colour is it?", [image_path], FAST))
    assert updates[-1].done and updates[-1].stats.answer_tokens == 12
    conversation = store.get_conversation(state.client_key, state.conversation_id)
    question, answer = conversation.messages
    assert question.role == "user" and question.text == "What colour is it?"
    assert len(question.image_shas) == 1
    assert answer.parent_id == question.id and answer.status == "done"
    assert answer.text == updates[-1].answer
    assert answer.meta.model_id == "tiny-random" and answer.meta.seed == 3
    assert answer.stats.finish_reason == "length"


def test_second_turn_continues_from_the_first_answer(studio, store, image_path):
    state = _consented()
    _run(studio.ask(state, "First?", [image_path], FAST))
    _run(studio.ask(state, "And then?", [], FAST))
    conversation = store.get_conversation(state.client_key, state.conversation_id)
    q1, a1, q2, a2 = conversation.messages
    assert q2.parent_id == a1.id and a2.parent_id == q2.id
    assert [m.role for m in state.history()] == ["user", "assistant", "user", "assistant"]


def test_without_consent_nothing_is_stored(studio, store, image_path):
    state = ChatState()
    last = _run(studio.ask(state, "What is it?", [image_path], FAST))
    assert last.answer
    for table in ("conversations", "messages", "images", "feedback"):
        assert _count(store, table) == 0
    assert studio.vote(state, last.answer_id, True).startswith("Feedback is only kept")


def test_a_refused_image_stores_nothing(studio, store, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    state = _consented()
    with pytest.raises(ImageError):
        _run(studio.ask(state, "What is it?", [str(fake)], FAST))
    assert _count(store, "messages") == 0 and _count(store, "images") == 0
    assert state.turns == []


def test_regenerate_keeps_the_old_answer_as_a_sibling(studio, store, image_path):
    state = _consented()
    first = _run(studio.ask(state, "Describe it", [image_path], FAST))
    second_options = TurnOptions(sampling=Sampling(max_new_tokens=12, temperature=1.0, seed=9))
    second = _run(studio.regenerate(state, second_options))
    turn = state.turns[-1]
    assert turn.answer.answer_id == second.answer_id
    assert [e.answer_id for e in turn.earlier] == [first.answer_id]
    conversation = store.get_conversation(state.client_key, state.conversation_id)
    answers = conversation.children(turn.question_id)
    assert {a.id for a in answers} == {first.answer_id, second.answer_id}


def test_edit_stores_the_correction_and_continues_from_it(studio, store, image_path):
    state = _consented()
    original = _run(studio.ask(state, "Describe it", [image_path], FAST))
    assert studio.edit(state, 0, "A red rectangle.") == "Saved your correction."
    turn = state.turns[0]
    assert turn.answer.answer == "A red rectangle." and turn.earlier[0] is original
    conversation = store.get_conversation(state.client_key, state.conversation_id)
    edit = conversation.message(turn.answer.answer_id)
    assert edit.origin == "edit" and edit.corrects_id == original.answer_id
    kinds = [r["kind"] for r in _rows(store, "select kind from feedback")]
    assert kinds == ["edit"]
    assert state.history()[-1].text == "A red rectangle."


def test_a_correction_is_of_the_answer_the_editor_was_opened_on(studio, store, image_path):
    """The editor holds one answer's text; paging or regenerating meanwhile does not move
    the correction to another answer, and leaving the question refuses it."""
    state = _consented()
    first = _run(studio.ask(state, "Describe it", [image_path], FAST))
    assert studio.open_editor(state) == first.answer
    _run(studio.regenerate(state, FAST))  # a second answer is shown now
    assert studio.save_correction(state, "A red rectangle.") == "Saved your correction."
    turn = state.turns[0]
    conversation = store.get_conversation(state.client_key, state.conversation_id)
    assert conversation.message(turn.answer.answer_id).corrects_id == first.answer_id
    second = turn.versions[1]
    studio.open_editor(state)  # on the correction, then paged back to the second answer
    studio.select(state, 0, -1)
    studio.save_correction(state, "A red square.")
    conversation = store.get_conversation(state.client_key, state.conversation_id)
    assert conversation.message(turn.answer.answer_id).corrects_id == turn.versions[2].answer_id
    assert turn.versions[2].answer_id != second.answer_id
    # Opened, then the tab went on to another question, or another conversation.
    studio.open_editor(state)
    _run(studio.ask(state, "And then?", [], FAST))
    with pytest.raises(RequestError, match="no longer the last one shown"):
        studio.save_correction(state, "Not this one.")
    studio.open_editor(state)
    studio.leave(state, "tab")
    state.reset()
    _run(studio.ask(state, "Something else", [image_path], FAST))
    with pytest.raises(RequestError, match="no longer the last one shown"):
        studio.save_correction(state, "Not this one.")
    texts = [r["text"] for r in _rows(store, "select text from messages where origin = 'edit'")]
    assert texts == ["A red rectangle.", "A red square."]


def test_an_answer_still_streaming_cannot_be_rated(studio, store, image_path):
    """The page shows the streaming answer where the turn's last answer was: a vote then
    would go to that one, or be refused as not shown."""
    state = _consented()
    streaming = studio.ask(state, "Describe it", [image_path], FAST)
    next(streaming)
    with pytest.raises(RequestError, match="Wait until this answer has finished"):
        studio.rate(state, 0, True)
    first = _run(streaming)
    streaming = studio.regenerate(state, FAST)
    next(streaming)
    with pytest.raises(RequestError, match="Wait until this answer has finished"):
        studio.rate(state, 0, False)
    second = _run(streaming)
    studio.rate(state, 0, True)
    rows = _rows(store, "select message_id, kind from feedback")
    assert [(r["message_id"], r["kind"]) for r in rows] == [(second.answer_id, "like")]
    assert first.answer_id != second.answer_id


def test_votes_are_recorded_and_a_change_of_mind_kept(studio, store, image_path):
    state = _consented()
    answer = _run(studio.ask(state, "Describe it", [image_path], FAST))
    studio.vote(state, answer.answer_id, True)
    studio.vote(state, answer.answer_id, False, ["Incomplete", "Other"], "too short")
    rows = _rows(store, "select kind, reasons, comment from feedback order by id")
    assert [r["kind"] for r in rows] == ["like", "dislike"]
    assert "Incomplete" in rows[1]["reasons"] and rows[1]["comment"] == "too short"
    stored = store.get_conversation(state.client_key, state.conversation_id)
    assert stored.message(answer.answer_id).vote.kind == "dislike"


def test_compare_stores_two_sides_and_the_pick_continues(studio, store, image_path):
    state = _consented()
    pairs = list(studio.compare(state, "Which shape?", [image_path], FAST, "thinking",
                                rng=random.Random(1)))
    left, right = pairs[-1]
    assert left.done and right.done and {left.label, right.label} == {
        "Thinking on", "Thinking off"}
    message = studio.judge(state, "B")
    assert "right answer" in message
    assert state.turns[-1].answer is right
    rows = _rows(store, "select side, compare_group from messages where role = 'assistant'")
    assert sorted(r["side"] for r in rows) == ["A", "B"]
    assert len({r["compare_group"] for r in rows}) == 1
    pick = _rows(store, "select * from feedback")[0]
    assert pick["kind"] == "pick"
    assert pick["message_id"] == right.answer_id
    assert pick["other_message_id"] == left.answer_id
    assert pick["left_message_id"] == left.answer_id


class _Recording:
    """The real engine, with the requests it was sent kept for the test to read."""

    def __init__(self, engine) -> None:
        self.engine, self.requests = engine, []

    def stream(self, request):
        self.requests.append(request)
        return self.engine.stream(request)

    def __getattr__(self, name):
        return getattr(self.engine, name)


@pytest.mark.parametrize("next_step", ["ask", "compare"])
def test_asking_on_without_a_verdict_shows_the_model_what_is_stored(tiny_engine, store,
                                                                      image_path, next_step):
    """No verdict: the conversation continues from the left answer, in the store and in what
    the model reads (through the API, nothing settled the comparison first)."""
    engine = _Recording(tiny_engine)
    studio, state = Studio(engine, store), _consented()
    left, _ = list(studio.compare(state, "Which shape?", [image_path], FAST, "samples",
                                  rng=random.Random(1)))[-1]
    if next_step == "ask":
        _run(studio.ask(state, "And its colour?", [], FAST))
    else:
        list(studio.compare(state, "And its colour?", [], FAST, "samples"))
    read = engine.requests[-1].messages
    assert [(m.role, m.text) for m in read] == [
        ("user", "Which shape?"), ("assistant", left.answer), ("user", "And its colour?")]
    question = _rows(store, "select parent_id from messages where text = 'And its colour?'")
    assert question[0]["parent_id"] == left.answer_id


def test_tie_and_both_bad_are_recorded(studio, store, image_path):
    state = _consented()
    _run(studio.compare(state, "Which shape?", [image_path], FAST, "samples"))
    studio.judge(state, "tie")
    _run(studio.compare(state, "And now?", [], FAST, "samples"))
    studio.judge(state, "both_bad")
    kinds = [r["kind"] for r in _rows(store, "select kind from feedback order by id")]
    assert kinds == ["tie", "both_bad"]
    with pytest.raises(RequestError):
        studio.judge(state, "A")


def test_open_conversation_restores_the_branch(studio, store, image_path):
    state = _consented()
    _run(studio.ask(state, "First?", [image_path], FAST))
    _run(studio.regenerate(state, FAST))
    _run(studio.ask(state, "Second?", [], FAST))
    fresh = ChatState(client_key=state.client_key, consented=True)
    studio.open_conversation(fresh, state.conversation_id)
    assert [t.question.text for t in fresh.turns] == ["First?", "Second?"]
    assert fresh.turns[0].answer.answer_id == state.turns[0].answer.answer_id
    assert len(fresh.turns[0].earlier) == 1
    assert fresh.turns[0].question.images[0].size == (80, 60)
    # And it continues from there.
    _run(studio.ask(fresh, "Third?", [], FAST))
    conversation = store.get_conversation(state.client_key, state.conversation_id)
    third = [m for m in conversation.messages if m.text == "Third?"][0]
    assert third.parent_id == fresh.turns[1].answer.answer_id


def test_another_browser_cannot_open_the_conversation(studio, image_path):
    state = _consented()
    _run(studio.ask(state, "Mine", [image_path], FAST))
    stranger = _consented()
    with pytest.raises(NotFound, match="No such conversation"):
        studio.open_conversation(stranger, state.conversation_id)


def test_delete_my_data_removes_everything_of_this_browser(studio, store, image_path):
    state = _consented()
    _run(studio.ask(state, "Mine", [image_path], FAST))
    other = _consented()
    _run(studio.ask(other, "Theirs", [], FAST))
    counts = studio.delete_my_data(state)
    assert counts.conversations == 1 and counts.images == 1
    assert studio.conversations(state) == []
    assert len(studio.conversations(other)) == 1
    assert state.turns == []


def test_model_not_loaded_refuses_before_storing(store, image_path):
    from engine.errors import ModelNotReady
    from engine.local import LocalEngine

    studio = Studio(LocalEngine("tiny-random"), store)
    with pytest.raises(ModelNotReady):
        _run(studio.ask(_consented(), "Hello?", [image_path], FAST))
    assert _count(store, "messages") == 0


def test_an_abandoned_stream_closes_its_answer_as_cancelled(studio, store, image_path):
    state = _consented()
    options = TurnOptions(sampling=Sampling(max_new_tokens=2000, temperature=0.0))
    turn = studio.ask(state, "Long answer please", [image_path], options)
    seen = next(update for update in turn if len(update.answer) > 0)
    turn.close()  # what a closed browser tab does to the handler
    rows = _rows(store, "select status, finish_reason, answer_tokens, duration_s, text "
                        "from messages where role = 'assistant'")
    assert [(r["status"], r["finish_reason"]) for r in rows] == [("done", "cancelled")]
    # What really happened is stored: the engine's own counts, not made-up zeros.
    (row,) = rows
    assert 1 <= row["answer_tokens"] < 2000 and row["duration_s"] > 0
    assert row["text"].startswith(seen.answer)
    # The partial answer stays in the conversation, so the next question follows it.
    assert state.turns[-1].answer.stats.finish_reason == "cancelled"
    assert [m.role for m in state.history()] == ["user", "assistant"]


def test_compare_base_against_an_adapter_records_which_is_which(store, tmp_path, image_path):
    from engine.local import LocalEngine
    from engine.tiny import ensure_tiny
    from testing.lora import train_lora

    adapter_dir = tmp_path / "tuned"
    train_lora(ensure_tiny("qwen3_5"), adapter_dir, question="What is it?", target="A cat.")
    # Two variants: the one chosen in the settings is the adapter side, else the first.
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         adapters={"tuned": adapter_dir, "again": adapter_dir})
    engine.load()
    studio = Studio(engine, store)
    assert studio.compare_modes()["adapter"] == (
        "Base vs adapter (the variant chosen, else tuned)")
    state = _consented()
    left, right = _run(studio.compare(state, "What is it?", [image_path], FAST, "adapter"))
    studio.judge(state, "A")
    rows = _rows(store, "select side, adapter from messages where role = 'assistant'")
    by_side = {r["side"]: r["adapter"] for r in rows}
    assert sorted(by_side.values(), key=str) == [None, "tuned"]
    assert {left.adapter, right.adapter} == {None, "tuned"}
    # The side shown on the left is recorded with the pick.
    pick = _rows(store, "select * from feedback")[0]
    assert pick["left_message_id"] == left.answer_id


def test_any_message_of_a_shown_answer_rates_that_answer(studio, store, image_path):
    state = _consented()
    first = _run(studio.ask(state, "Describe it", [image_path], FAST))
    second = _run(studio.regenerate(state, FAST))
    studio.rate(state, 0, True)
    studio.select(state, 0, -1)
    studio.rate(state, 0, False)
    studio.explain_dislike(state, ["Incomplete"], "short")
    rows = _rows(store, "select message_id, kind, reasons from feedback order by id")
    assert [(r["message_id"], r["kind"]) for r in rows] == [
        (second.answer_id, "like"), (first.answer_id, "dislike"), (first.answer_id, "dislike")]
    assert "Incomplete" in rows[2]["reasons"]
    assert state.turns[0].answer is first and first.vote == "dislike"
    # The next question continues from the answer shown.
    _run(studio.ask(state, "And then?", [], FAST))
    conversation = store.get_conversation(state.client_key, state.conversation_id)
    follow_up = [m for m in conversation.messages if m.text == "And then?"][0]
    assert follow_up.parent_id == first.answer_id


def test_a_dislikes_reasons_stay_with_the_answer_disliked(studio, store, image_path):
    """The reasons are sent after the dislike: by then the tab may show another answer of the
    turn, or another conversation. They are recorded on the answer that was disliked."""
    state = _consented()
    first = _run(studio.ask(state, "Describe it", [image_path], FAST))
    conversation_id = state.conversation_id
    studio.rate(state, 0, False)
    second = _run(studio.regenerate(state, FAST))  # now showing the second answer
    studio.explain_dislike(state, ["Incomplete"], "regenerated meanwhile")
    studio.rate(state, 0, False)
    studio.select(state, 0, -1)  # back to the first
    studio.explain_dislike(state, ["Wrong"], "paged back meanwhile")
    studio.rate(state, 0, False)
    studio.leave(state, "tab")
    state.reset()  # "New chat"
    studio.explain_dislike(state, ["Unsafe"], "left meanwhile")
    rows = _rows(store, "select message_id, reasons, comment from feedback order by rowid")
    assert [(r["message_id"], r["comment"]) for r in rows] == [
        (first.answer_id, None), (first.answer_id, "regenerated meanwhile"),
        (second.answer_id, None), (second.answer_id, "paged back meanwhile"),
        (first.answer_id, None), (first.answer_id, "left meanwhile")]
    # Sent twice, or after the answer was erased: said, not stored.
    with pytest.raises(RequestError, match="no longer here"):
        studio.explain_dislike(state, ["Unsafe"], "again")
    studio.open_conversation(state, conversation_id)
    studio.rate(state, 0, False)
    studio.delete_conversation(state, conversation_id)
    with pytest.raises(RequestError, match="no longer here"):
        studio.explain_dislike(state, ["Unsafe"], "after erasure")
    # Erased by the browser's other tab while this one went on to another conversation.
    other = _consented()
    other.client_key = state.owner()
    _run(studio.ask(state, "Describe it", [image_path], FAST))
    disliked_in = state.conversation_id
    studio.rate(state, 0, False)
    studio.leave(state, "tab")
    state.reset()
    _run(studio.ask(state, "Something else", [image_path], FAST))
    studio.delete_conversation(other, disliked_in)
    with pytest.raises(RequestError, match="no longer here"):
        studio.explain_dislike(state, ["Unsafe"], "erased elsewhere")
    assert state.turns and state.conversation_id is not None


def test_a_reopened_conversation_follows_the_branch_it_went_on_from(studio, store,
                                                                    image_path):
    """Paged back to the first answer and asked on from it: reopened, the conversation shows
    that answer and the follow-up, and continues from there."""
    state = _consented()
    first = _run(studio.ask(state, "Describe it", [image_path], FAST))
    _run(studio.regenerate(state, FAST))
    studio.select(state, 0, -1)
    follow_up = _run(studio.ask(state, "And then?", [], FAST))
    conversation_id = state.conversation_id
    studio.leave(state, "tab")
    state.reset()
    studio.open_conversation(state, conversation_id)
    assert [t.question.text for t in state.turns] == ["Describe it", "And then?"]
    assert state.turns[0].answer.answer_id == first.answer_id
    assert state.turns[0].position() == 0 and len(state.turns[0].versions) == 2
    assert state.turns[1].answer.answer_id == follow_up.answer_id
    last = _run(studio.ask(state, "And after that?", [], FAST))
    stored = store.get_conversation(state.client_key, conversation_id)
    asked = [m for m in stored.messages if m.text == "And after that?"][0]
    assert asked.parent_id == follow_up.answer_id and last.answer_id


def test_a_tab_whose_conversation_was_deleted_in_another_tab_is_told_and_starts_afresh(
        studio, store, image_path):
    """Two tabs of one browser share its data: one deletes it, and the other, still showing
    the conversation, is told so once instead of failing at every question."""
    shown, other = _consented(), _consented()
    other.client_key = shown.owner()
    for action in (lambda: studio.rate(shown, 0, True),
                   lambda: studio.edit(shown, 0, "A correction."),
                   lambda: _run(studio.regenerate(shown, FAST)),
                   lambda: _run(studio.ask(shown, "And then?", [], FAST))):
        _run(studio.ask(shown, "Describe it", [image_path], FAST))
        studio.delete_my_data(other)
        with pytest.raises(RequestError, match="deleted"):
            action()
        assert shown.turns == [] and shown.conversation_id is None
        assert _count(store, "messages") == 0
    _run(studio.ask(shown, "A new start?", [], FAST))
    assert [r["text"] for r in _rows(store, "select text from messages where role = 'user'")
            ] == ["A new start?"]


def test_an_untouched_seed_gives_a_new_stored_sample_each_time(studio, store, image_path):
    state = _consented()
    options = TurnOptions(sampling=Sampling(max_new_tokens=12, temperature=1.0, seed=None))
    first = _run(studio.ask(state, "Describe it", [image_path], options))
    second = _run(studio.regenerate(state, options))
    rows = _rows(store, "select seed from messages where role = 'assistant' order by id")
    seeds = [r["seed"] for r in rows]
    assert None not in seeds and seeds[0] != seeds[1]
    assert seeds == [first.stats.seed, second.stats.seed]


def test_saving_stopped_in_one_tab_stops_in_the_browsers_other_tabs(studio, store):
    """Tabs of one browser share its client key; the browser's latest word on saving counts
    in each, until one of its tabs consents again."""
    first, second = _consented(), ChatState()
    second.client_key, second.consented = first.owner(), True
    _run(studio.ask(second, "kept?", [], FAST))
    assert _count(store, "messages") == 2
    studio.withdraw_consent(first)
    _run(studio.ask(second, "not kept", [], FAST))
    assert _count(store, "messages") == 2 and not second.consented
    # Ticked again, it keeps the conversation so far, as it says, and what follows.
    assert "1 question" in studio.give_consent(second)
    _run(studio.ask(second, "kept again", [], FAST))
    assert _count(store, "messages") == 6
    assert not studio.storing(first)  # the tab that stopped stays stopped


def test_consent_mid_conversation_stores_the_whole_conversation(studio, store, image_path):
    state = ChatState()
    _run(studio.ask(state, "First?", [image_path], FAST))
    _run(studio.regenerate(state, FAST))
    studio.rate(state, 0, True)  # the thumb the page shows is kept with the answer
    studio.edit(state, 0, "A red rectangle.")
    _run(studio.ask(state, "Second?", [], FAST))
    assert _count(store, "messages") == 0
    assert "2 questions" in studio.give_consent(state)
    liked = state.turns[0].versions[1]
    feedback = _rows(store, "select * from feedback order by rowid")
    assert [(r["message_id"], r["kind"]) for r in feedback] == [
        (liked.answer_id, "like"), (liked.answer_id, "edit")]  # liked, then corrected
    conversation = store.get_conversation(state.client_key, state.conversation_id)
    by_text = {m.text: m for m in conversation.messages if m.role == "user"}
    first, second = by_text["First?"], by_text["Second?"]
    assert first.parent_id is None and len(first.image_shas) == 1
    answers = conversation.children(first.id)
    assert sorted(a.origin for a in answers) == ["edit", "generated", "generated"]
    edit = [a for a in answers if a.origin == "edit"][0]
    assert second.parent_id == edit.id and edit.text == "A red rectangle."
    assert all(a.status == "done" and a.meta is not None for a in answers
               if a.origin == "generated")
    # And it goes on from there, with feedback.
    answer = _run(studio.ask(state, "Third?", [], FAST))
    assert studio.rate(state, 2, True) == "Thanks for the feedback."
    third = store.get_conversation(state.client_key, state.conversation_id).message(
        answer.answer_id)
    assert third.vote.kind == "like"


def test_a_conversation_left_during_compare_does_not_break_the_next_question(
        studio, store, image_path):
    state = _consented()
    pairs = studio.compare(state, "Which?", [image_path], FAST, "samples")
    next(pairs)
    state.reset()  # New conversation while the two answers stream
    _run(pairs)
    assert state.comparison is None and state.turns == []
    last = _run(studio.ask(state, "Fresh start", [], FAST))
    assert last.done and [t.question.text for t in state.turns] == ["Fresh start"]


def test_the_two_sides_of_a_comparison_stream_at_the_same_time(studio, store, image_path):
    state = _consented()
    options = TurnOptions(sampling=Sampling(max_new_tokens=40, temperature=0.0, seed=5))
    both_moving = False
    for left, right in studio.compare(state, "Which?", [image_path], options, "samples"):
        # Seen mid-way: both have text and neither has finished.
        if left.answer and right.answer and not left.done and not right.done:
            both_moving = True
    assert both_moving
    rows = _rows(store, "select side, status, answer_tokens from messages"
                        " where role = 'assistant' order by side")
    assert [(r["side"], r["status"]) for r in rows] == [("A", "done"), ("B", "done")]
    assert all(0 < r["answer_tokens"] <= 40 for r in rows)


def test_the_thinking_budget_is_stored_only_when_it_was_applied(studio, store):
    thinking = TurnOptions(thinking=True, thinking_budget=4,
                           sampling=Sampling(max_new_tokens=12, temperature=0.0, seed=3))
    state = _consented()
    _run(studio.ask(state, "Think first", [], thinking))
    _run(studio.ask(state, "Now answer directly", [], replace(thinking, thinking=False)))
    rows = _rows(store, "select thinking, thinking_budget from messages "
                        "where role = 'assistant' order by created_at")
    assert [(r["thinking"], r["thinking_budget"]) for r in rows] == [(1, 4), (0, None)]


def test_a_template_that_always_thinks_is_stored_as_thinking_within_its_budget(store):
    """Asked not to think, a model whose template always thinks still does: the answer says
    so, and the budget sent with the request is the one that capped its reasoning."""
    from engine.local import LocalEngine

    engine = LocalEngine("tiny-random:qwen3_vl_thinking")
    engine.load()
    try:
        options = TurnOptions(thinking=False, thinking_budget=4,
                              sampling=Sampling(max_new_tokens=24, temperature=0.0, seed=3))
        last = _run(Studio(engine, store).ask(_consented(), "Directly, please", [], options))
        assert last.stats.budget_exhausted and last.stats.reasoning_tokens < 24
        rows = _rows(store, "select thinking, thinking_budget, reasoning_tokens from messages "
                            "where role = 'assistant'")
        assert [(r["thinking"], r["thinking_budget"]) for r in rows] == [(1, 4)]
    finally:
        engine.close()


def test_stop_returns_once_the_sessions_answer_is_closed_and_stored(studio, store):
    """Leaving a conversation mid-answer: when `stop` returns the answer row is already
    closed as cancelled, so the tab can ask again at once."""
    import threading

    options = TurnOptions(thinking=False,
                          sampling=Sampling(max_new_tokens=4000, temperature=0.0, seed=1))
    started = threading.Event()
    finished: list = []

    def consume():
        for update in studio.ask(_consented(), "A long one", [], options, session_key="tab"):
            if update.answer:
                started.set()
            finished.append(update)

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert started.wait(timeout=120)
    assert studio.stop("tab")
    rows = _rows(store, "select status, finish_reason, answer_tokens from messages "
                        "where role = 'assistant'")
    assert [(r["status"], r["finish_reason"]) for r in rows] == [("done", "cancelled")]
    assert 0 < rows[0]["answer_tokens"] < 4000
    consumer.join(timeout=60)
    assert finished[-1].done and studio.stop("tab")  # nothing left: returns at once


class _SlowAnswerRows(Store):
    """A real store whose answer rows open only when the test says so."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.open_rows = threading.Event()

    def start_answer(self, *args, **kwargs):
        self.open_rows.wait(timeout=60)
        return super().start_answer(*args, **kwargs)


def test_the_first_update_does_not_wait_for_the_answer_row(tiny_engine, tmp_path, image_path):
    with _SlowAnswerRows(tmp_path / "studio.db") as store:
        studio = Studio(tiny_engine, store)
        state = _consented()
        turn = studio.ask(state, "what colour?", [image_path], FAST, session_key="tab")
        first = next(turn)
        # Shown while the row is still waiting to be written; the question is stored.
        assert first.answer_id is None and not first.done
        assert [row["role"] for row in _rows(store, "select * from messages")] == ["user"]
        store.open_rows.set()
        last = _run(turn)
        (row,) = _rows(store, "select * from messages where role = 'assistant'")
        assert last.done and last.answer_id == row["id"]
        assert (row["text"], row["status"]) == (last.answer, "done")
        assert state.last_answer_id() == row["id"]
