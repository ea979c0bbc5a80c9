"""Conversations, answers, feedback and images through the public Store API."""

from __future__ import annotations

import sqlite3

import pytest

from storage import AnswerMeta, AnswerStats, ImageBlob, InvalidRequest, NotFound, Store
from testing.data import CONSENT, KEY, answer, png_blob


def rows(store: Store, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(store.path) as conn:
        result = conn.execute(sql, params).fetchall()
    conn.close()
    return result


def test_a_turn_is_stored_with_its_images_settings_and_stats(store):
    first = store.put_image(png_blob((255, 0, 0)))
    second = store.put_image(png_blob((0, 0, 255)))
    conversation = store.create_conversation(KEY, "Cats", consent_version=CONSENT)
    question = store.add_user_message(
        KEY, conversation, text="What differs?", image_shas=[second, first]
    )
    meta = AnswerMeta(
        model_id="tiny/qwen",
        revision="abc123",
        quantization="bnb-4bit",
        adapter="style",
        thinking=True,
        thinking_budget=256,
        sampling={"temperature": 0.7, "top_p": 0.9},
        seed=None,
    )
    answer_id = store.start_answer(KEY, conversation, parent_id=question, meta=meta)
    streaming = store.get_conversation(KEY, conversation).message(answer_id)
    assert streaming.status == "streaming"
    assert streaming.stats is None

    assert store.save_partial(answer_id, text="The col", reasoning="Look at")
    assert store.get_conversation(KEY, conversation).message(answer_id).text == "The col"
    stats = AnswerStats(
        reasoning_tokens=12,
        answer_tokens=5,
        time_to_first_token_s=0.25,
        duration_s=1.5,
        finish_reason="length",
        seed=4321,
        budget_exhausted=True,
    )
    assert store.finish_answer(
        answer_id, text="The colour.", reasoning="Look at both.", stats=stats
    )

    loaded = store.get_conversation(KEY, conversation)
    assert loaded.title == "Cats"
    assert loaded.consent_version == CONSENT
    assert loaded.consented_at
    stored_question, stored_answer = loaded.messages
    assert stored_question.role == "user"
    assert stored_question.image_shas == (second, first)
    assert stored_answer.parent_id == question
    assert stored_answer.text == "The colour."
    assert stored_answer.reasoning == "Look at both."
    assert stored_answer.status == "done"
    assert stored_answer.stats == stats
    # The seed the engine reported replaces the "pick one" request.
    assert stored_answer.meta == AnswerMeta(**{**meta.__dict__, "seed": 4321})


def test_figures_sqlite_cannot_hold_are_refused_and_the_answer_stays_open(store):
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Hi?")
    answer_id = store.start_answer(KEY, conversation, parent_id=question,
                                   meta=AnswerMeta(model_id="m"))
    for stats in (AnswerStats(answer_tokens=10**30), AnswerStats(reasoning_tokens=-1),
                  AnswerStats(seed=2**64)):
        with pytest.raises(InvalidRequest):
            store.finish_answer(answer_id, text="Hello.", stats=stats)
    assert store.get_conversation(KEY, conversation).message(answer_id).status == "streaming"
    assert store.finish_answer(answer_id, text="Hello.", stats=AnswerStats(answer_tokens=2))


def test_finished_answers_take_no_more_writes(store):
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Hi?")
    answer_id = answer(store, KEY, conversation, question, "Hello.")
    assert not store.save_partial(answer_id, text="overwritten")
    assert not store.finish_answer(answer_id, text="overwritten", stats=AnswerStats())
    assert not store.save_partial("01NOSUCHANSWER0000000000000", text="x")
    assert store.get_conversation(KEY, conversation).message(answer_id).text == "Hello."


def test_regenerated_compared_and_edited_answers_are_siblings(store):
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Count the dots.")
    first = answer(store, KEY, conversation, question, "Three.")
    regenerated = answer(store, KEY, conversation, question, "Four.")
    side_a = answer(store, KEY, conversation, question, "Two.", compare_group="g1", side="A")
    side_b = answer(store, KEY, conversation, question, "Five.", compare_group="g1", side="B")
    edited = store.add_edit(KEY, first, "There are four dots.")
    follow_up = store.add_user_message(KEY, conversation, text="Colours?", parent_id=edited)
    last = answer(store, KEY, conversation, follow_up, "Red.")

    loaded = store.get_conversation(KEY, conversation)
    siblings = loaded.children(question)
    assert [m.id for m in siblings] == [first, regenerated, side_a, side_b, edited]
    assert [m.text for m in siblings][:2] == ["Three.", "Four."]
    correction = loaded.message(edited)
    assert (correction.origin, correction.corrects_id) == ("edit", first)
    assert correction.meta is None
    assert loaded.message(side_b).meta.compare_group == "g1"
    assert loaded.message(side_b).meta.side == "B"
    assert [m.id for m in loaded.path(last)] == [question, edited, follow_up, last]
    assert [m.id for m in loaded.children(None)] == [question]
    edit_events = [m.vote for m in loaded.messages]
    assert edit_events == [None] * len(loaded.messages)
    assert rows(store, "SELECT kind, message_id, edit_message_id FROM feedback") == [
        ("edit", first, edited)
    ]
    assert [(f.kind, f.message_id, f.edit_message_id) for f in loaded.feedback] == [
        ("edit", first, edited)
    ]


def test_the_latest_vote_wins_and_every_vote_is_kept(store):
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Q")
    answer_id = answer(store, KEY, conversation, question, "A")

    store.add_feedback(KEY, answer_id, "like")
    store.add_feedback(
        KEY, answer_id, "dislike", reasons=["incomplete", "wrong"], comment="Missed one."
    )
    vote = store.get_conversation(KEY, conversation).message(answer_id).vote
    assert (vote.kind, vote.reasons, vote.comment) == (
        "dislike",
        ("incomplete", "wrong"),
        "Missed one.",
    )
    store.add_feedback(KEY, answer_id, "clear")
    assert store.get_conversation(KEY, conversation).message(answer_id).vote is None
    store.add_feedback(KEY, answer_id, "like")
    assert store.get_conversation(KEY, conversation).message(answer_id).vote.kind == "like"
    kinds = rows(store, "SELECT kind FROM feedback ORDER BY id")
    assert kinds == [("like",), ("dislike",), ("clear",), ("like",)]


def test_comparisons_record_the_verdict_and_a_change_of_mind(store):
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Q")
    left = answer(store, KEY, conversation, question, "left", compare_group="g", side="A")
    right = answer(store, KEY, conversation, question, "right", compare_group="g", side="B")

    store.add_pick(KEY, left, right, left)
    loaded = store.get_conversation(KEY, conversation)
    pick = loaded.message(right).comparison
    assert loaded.message(left).comparison == pick
    assert (pick.kind, pick.message_id, pick.other_message_id, pick.left_message_id) == (
        "pick",
        left,
        right,
        left,
    )

    store.add_pick(KEY, right, left, left)
    assert store.get_conversation(KEY, conversation).message(left).comparison.message_id == right
    store.add_feedback(KEY, left, "tie", other_message_id=right)
    assert store.get_conversation(KEY, conversation).message(right).comparison.kind == "tie"
    store.add_feedback(KEY, right, "both_bad", other_message_id=left)
    assert store.get_conversation(KEY, conversation).message(left).comparison.kind == "both_bad"
    assert len(rows(store, "SELECT id FROM feedback")) == 4


def test_malformed_feedback_is_refused(store):
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Q")
    one = answer(store, KEY, conversation, question, "one")
    two = answer(store, KEY, conversation, question, "two")
    follow_up = store.add_user_message(KEY, conversation, text="Q2", parent_id=one)
    elsewhere = answer(store, KEY, conversation, follow_up, "three")

    with pytest.raises(InvalidRequest):
        store.add_feedback(KEY, question, "like")  # a question is not an answer
    with pytest.raises(InvalidRequest):
        store.add_feedback(KEY, one, "love")
    with pytest.raises(InvalidRequest):
        store.add_feedback(KEY, one, "pick", other_message_id=two)
    with pytest.raises(InvalidRequest):
        store.add_feedback(KEY, one, "tie")  # needs the other answer
    with pytest.raises(InvalidRequest):
        store.add_feedback(KEY, one, "like", other_message_id=two)
    with pytest.raises(InvalidRequest):
        store.add_pick(KEY, one, elsewhere, one)  # answers to different questions
    with pytest.raises(InvalidRequest):
        store.add_pick(KEY, one, one, one)
    with pytest.raises(InvalidRequest):
        store.add_pick(KEY, one, two, elsewhere)  # left must be one of the two
    with pytest.raises(InvalidRequest):
        store.add_edit(KEY, one, "   ")
    with pytest.raises(NotFound):
        store.add_feedback(KEY, "01NOSUCHMESSAGE00000000000", "like")
    assert rows(store, "SELECT count(*) FROM feedback") == [(0,)]


def test_the_tree_only_links_questions_to_answers_of_the_same_conversation(store):
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    other = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Q")
    answer_id = answer(store, KEY, conversation, question, "A")

    with pytest.raises(InvalidRequest):
        store.add_user_message(KEY, conversation, text="Q2", parent_id=question)
    with pytest.raises(InvalidRequest):
        store.add_user_message(KEY, other, text="Q2", parent_id=answer_id)
    with pytest.raises(InvalidRequest):
        store.start_answer(KEY, conversation, parent_id=answer_id, meta=AnswerMeta("m"))
    with pytest.raises(InvalidRequest):
        store.start_answer(KEY, other, parent_id=question, meta=AnswerMeta("m"))
    with pytest.raises(InvalidRequest):
        store.add_user_message(KEY, conversation, text="  ")
    with pytest.raises(NotFound):
        store.add_user_message(KEY, conversation, text="Q", image_shas=["0" * 64])


def test_a_conversation_needs_a_consent_version(store):
    with pytest.raises(InvalidRequest):
        store.create_conversation(KEY, "t", consent_version=" ")
    with pytest.raises(InvalidRequest):
        store.create_conversation("", "t", consent_version=CONSENT)
    assert store.list_conversations(KEY) == []


def test_recovery_marks_answers_left_streaming_as_interrupted(tmp_path):
    path = tmp_path / "crashy.db"
    first = Store(path)
    conversation = first.create_conversation(KEY, consent_version=CONSENT)
    question = first.add_user_message(KEY, conversation, text="Q")
    answer_id = first.start_answer(KEY, conversation, parent_id=question, meta=AnswerMeta("m"))
    first.save_partial(answer_id, text="half an ans")
    first.close()

    observer = Store(path, recover=False)
    assert observer.recovered == 0
    assert observer.get_conversation(KEY, conversation).message(answer_id).status == "streaming"
    observer.close()

    reopened = Store(path)
    assert reopened.recovered == 1
    recovered = reopened.get_conversation(KEY, conversation).message(answer_id)
    assert (recovered.status, recovered.stats.finish_reason, recovered.text) == (
        "done",
        "interrupted",
        "half an ans",
    )
    assert reopened.recover() == 0
    reopened.close()


def test_identical_images_are_stored_once(store):
    blob = png_blob((10, 20, 30), size=(16, 9))
    sha = store.put_image(blob)
    assert store.put_image(blob) == sha
    assert store.put_image(ImageBlob(blob.data, "png", 16, 9)) == sha
    other = store.put_image(png_blob((30, 20, 10), size=(16, 9)))
    assert other != sha

    assert rows(store, "SELECT count(*) FROM images") == [(2,)]
    path = store.image_path(sha)
    assert path == store.images_dir / sha[:2] / f"{sha}.png"
    assert path.read_bytes() == blob.data
    assert len([p for p in store.images_dir.rglob("*") if p.is_file()]) == 2
    info = store.image_info(sha)
    assert (info.format, info.width, info.height, info.byte_size) == ("PNG", 16, 9, len(blob.data))
    with pytest.raises(NotFound):
        store.image_path("f" * 64)
    with pytest.raises(InvalidRequest):
        store.put_image(ImageBlob(b"", "PNG", 1, 1))


def test_listing_renaming_and_stats(store):
    older = store.create_conversation(KEY, "Older", consent_version=CONSENT)
    newer = store.create_conversation(KEY, "Newer", consent_version=CONSENT)
    question = store.add_user_message(KEY, older, text="Q")
    liked = answer(store, KEY, older, question, "A")
    store.add_feedback(KEY, liked, "like")
    unfinished = store.start_answer(KEY, older, parent_id=question, meta=AnswerMeta("m"))
    store.finish_answer(unfinished, text="", stats=AnswerStats(finish_reason="cancelled"))
    store.rename_conversation(KEY, newer, "  Renamed  ")

    listed = store.list_conversations(KEY)
    assert [(c.id, c.title, c.message_count) for c in listed] == [
        (newer, "Renamed", 0),
        (older, "Older", 3),
    ]
    stats = store.stats()
    assert (stats.conversations, stats.clients, stats.user_messages, stats.answers) == (2, 1, 1, 2)
    assert stats.answers_by_finish_reason == {"cancelled": 1, "stop": 1}
    assert stats.feedback_by_kind == {"like": 1}
    assert list(stats.feedback_per_day.values()) == [1]
