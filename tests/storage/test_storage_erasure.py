"""Erasure and retention remove a user's rows and image files, and nothing of anyone else."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from storage import AnswerMeta, ErasureCounts, InvalidRequest, NotFound, Store
from testing.data import CONSENT, KEY, OTHER_KEY, answer, png_blob

SECRET = "alice-private-words"


def everything_in(store: Store) -> bytes:
    """The database and its write-ahead log as raw bytes."""
    data = b""
    for suffix in ("", "-wal"):
        path = store.path.with_name(store.path.name + suffix)
        if path.exists():
            data += path.read_bytes()
    return data


def table_counts(store: Store) -> dict[str, int]:
    with sqlite3.connect(store.path) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("conversations", "messages", "message_images", "feedback", "images")
        }
    conn.close()
    return counts


def test_erasing_a_user_leaves_nothing_of_them_but_keeps_shared_images(store):
    shared = png_blob((1, 2, 3))
    alice_only = store.put_image(png_blob((200, 100, 50)))
    shared_sha = store.put_image(shared)

    conversation = store.create_conversation(KEY, f"{SECRET} title", consent_version=CONSENT)
    question = store.add_user_message(
        KEY, conversation, text=f"{SECRET} question", image_shas=[alice_only, shared_sha]
    )
    first = answer(store, KEY, conversation, question, f"{SECRET} answer")
    second = answer(store, KEY, conversation, question, "second answer")
    store.add_feedback(KEY, first, "dislike", reasons=["wrong"], comment=f"{SECRET} comment")
    store.add_pick(KEY, second, first, first)
    store.add_edit(KEY, first, f"{SECRET} corrected")
    follow_up = store.add_user_message(KEY, conversation, text="again", image_shas=[alice_only])
    unfinished = store.start_answer(
        KEY, conversation, parent_id=follow_up, meta=AnswerMeta(model_id="tiny/model")
    )
    store.save_partial(unfinished, text=f"{SECRET} partial")
    store.create_conversation(KEY, "empty", consent_version=CONSENT)

    bob_conversation = store.create_conversation(OTHER_KEY, "Bob", consent_version=CONSENT)
    bob_question = store.add_user_message(
        OTHER_KEY, bob_conversation, text="Bob asks", image_shas=[shared_sha]
    )
    bob_answer = answer(store, OTHER_KEY, bob_conversation, bob_question, "Bob's answer")
    store.add_feedback(OTHER_KEY, bob_answer, "like")
    alice_file = store.image_path(alice_only)
    assert SECRET.encode() in everything_in(store)

    counts = store.delete_user_data(KEY)

    assert counts == ErasureCounts(conversations=2, messages=6, feedback=3, images=1)
    assert store.list_conversations(KEY) == []
    with pytest.raises(NotFound):
        store.get_conversation(KEY, conversation)
    assert table_counts(store) == {
        "conversations": 1,
        "messages": 2,
        "message_images": 1,
        "feedback": 1,
        "images": 1,
    }
    assert not alice_file.exists()
    with pytest.raises(NotFound):
        store.image_path(alice_only)
    assert store.image_path(shared_sha).read_bytes() == shared.data
    files = [p for p in store.images_dir.rglob("*") if p.is_file()]
    assert files == [store.image_path(shared_sha)]
    # Not even deleted copies of the text or the key's digest remain in the files.
    raw = everything_in(store)
    assert SECRET.encode() not in raw
    assert hashlib.sha256(KEY.encode()).hexdigest().encode() not in raw
    assert [m.text for m in store.get_conversation(OTHER_KEY, bob_conversation).messages] == [
        "Bob asks",
        "Bob's answer",
    ]


def test_deleting_one_conversation_keeps_images_the_other_still_shows(store):
    sha = store.put_image(png_blob((9, 9, 9)))
    kept = store.create_conversation(KEY, consent_version=CONSENT)
    store.add_user_message(KEY, kept, text="Q", image_shas=[sha])
    dropped = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, dropped, text="Q", image_shas=[sha, sha])
    answer(store, KEY, dropped, question, "A")

    counts = store.delete_conversation(KEY, dropped)

    assert counts == ErasureCounts(conversations=1, messages=2, feedback=0, images=0)
    assert store.image_path(sha).exists()
    assert [c.id for c in store.list_conversations(KEY)] == [kept]
    assert store.delete_conversation(KEY, kept).images == 1
    assert not any(p.is_file() for p in store.images_dir.rglob("*"))


class Clock:
    """A settable clock for retention tests."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def test_purge_removes_conversations_and_images_idle_longer_than_the_retention(tmp_path):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = Clock(start)
    store = Store(tmp_path / "retention.db", clock=clock)
    old_image = store.put_image(png_blob((1, 1, 1)))
    never_sent = store.put_image(png_blob((2, 2, 2)))
    uploaded_again = store.put_image(png_blob((3, 3, 3)))
    stale = store.create_conversation(KEY, "stale", consent_version=CONSENT)
    store.add_user_message(KEY, stale, text="old", image_shas=[old_image])
    revived = store.create_conversation(OTHER_KEY, "revived", consent_version=CONSENT)
    revived_question = store.add_user_message(OTHER_KEY, revived, text="old too")
    revived_answer = answer(store, OTHER_KEY, revived, revived_question, "A")

    clock.now = start + timedelta(days=20)
    store.add_feedback(OTHER_KEY, revived_answer, "like")  # activity keeps it
    store.put_image(png_blob((3, 3, 3)))
    fresh = store.create_conversation(KEY, "fresh", consent_version=CONSENT)

    clock.now = start + timedelta(days=35)
    counts = store.purge_older_than(30)

    assert counts == ErasureCounts(conversations=1, messages=1, feedback=0, images=2)
    assert [c.id for c in store.list_conversations(KEY)] == [fresh]
    assert [c.id for c in store.list_conversations(OTHER_KEY)] == [revived]
    for gone in (old_image, never_sent):
        with pytest.raises(NotFound):
            store.image_path(gone)
    assert store.image_path(uploaded_again).exists()

    # An explicit moment overrides the clock: everything is older than 0 days from the future.
    later = start + timedelta(days=100)
    assert store.purge_older_than(0, now=later).conversations == 2
    assert store.stats().conversations == 0
    assert not any(p.is_file() for p in store.images_dir.rglob("*"))
    store.close()


def test_withdrawing_an_unanswered_question_takes_its_conversation_and_lone_images(store):
    shared = store.put_image(png_blob((9, 9, 9)))
    lone = store.put_image(png_blob((1, 2, 3)))
    kept = store.create_conversation(KEY, consent_version=CONSENT)
    asked = store.add_user_message(KEY, kept, text="Q", image_shas=[shared])
    answered = answer(store, KEY, kept, asked, "A")
    follow_up = store.add_user_message(KEY, kept, text=SECRET, image_shas=[lone, shared],
                                       parent_id=answered)
    fresh = store.create_conversation(KEY, consent_version=CONSENT)
    opening = store.add_user_message(KEY, fresh, text=SECRET, image_shas=[lone])

    lone_file = store.image_path(lone)
    assert store.withdraw_question(OTHER_KEY, follow_up) == ErasureCounts()  # not theirs
    assert store.withdraw_question(KEY, follow_up) == ErasureCounts(messages=1)
    # The conversation keeps what was answered; the image another question shows stays.
    assert [m.id for m in store.get_conversation(KEY, kept).messages] == [asked, answered]
    assert store.image_path(lone).exists()

    assert store.withdraw_question(KEY, opening) == ErasureCounts(
        conversations=1, messages=1, images=1)
    assert [c.id for c in store.list_conversations(KEY)] == [kept]
    assert not lone_file.exists() and store.image_path(shared).exists()
    assert SECRET.encode() not in everything_in(store)
    assert store.withdraw_question(KEY, opening) == ErasureCounts()  # already gone


def test_a_question_with_an_answer_is_not_withdrawn(store):
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Q")
    reply = answer(store, KEY, conversation, question, "A")
    with pytest.raises(InvalidRequest, match="has an answer"):
        store.withdraw_question(KEY, question)
    with pytest.raises(InvalidRequest, match="Only a question"):
        store.withdraw_question(KEY, reply)
    assert table_counts(store)["messages"] == 2
