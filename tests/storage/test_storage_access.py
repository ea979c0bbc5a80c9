"""A client key reaches only its own conversations: others' look exactly like missing ones."""

from __future__ import annotations

import pytest

from storage import AnswerMeta, NotFound
from testing.data import CONSENT, KEY, OTHER_KEY, answer


def test_another_key_cannot_read_change_or_vote_on_a_conversation(store):
    conversation = store.create_conversation(KEY, "Mine", consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Q")
    one = answer(store, KEY, conversation, question, "one")
    two = answer(store, KEY, conversation, question, "two")
    before = store.get_conversation(KEY, conversation)

    attempts = {
        "read": lambda: store.get_conversation(OTHER_KEY, conversation),
        "rename": lambda: store.rename_conversation(OTHER_KEY, conversation, "Theirs"),
        "delete": lambda: store.delete_conversation(OTHER_KEY, conversation),
        "ask": lambda: store.add_user_message(OTHER_KEY, conversation, text="Q", parent_id=one),
        "answer": lambda: store.start_answer(
            OTHER_KEY, conversation, parent_id=question, meta=AnswerMeta("m")
        ),
        "like": lambda: store.add_feedback(OTHER_KEY, one, "like"),
        "dislike": lambda: store.add_feedback(OTHER_KEY, one, "dislike", reasons=["x"]),
        "tie": lambda: store.add_feedback(OTHER_KEY, one, "tie", other_message_id=two),
        "both_bad": lambda: store.add_feedback(OTHER_KEY, one, "both_bad", other_message_id=two),
        "pick": lambda: store.add_pick(OTHER_KEY, one, two, one),
        "edit": lambda: store.add_edit(OTHER_KEY, one, "better"),
    }
    for name, attempt in attempts.items():
        with pytest.raises(NotFound):
            attempt()
            pytest.fail(f"{name} succeeded with another key")

    assert store.list_conversations(OTHER_KEY) == []
    assert store.get_conversation(KEY, conversation) == before
    assert store.stats().feedback_by_kind == {}
    # Erasing the other user's data leaves this one's alone.
    assert store.delete_user_data(OTHER_KEY).conversations == 0
    assert store.get_conversation(KEY, conversation) == before


def test_another_key_cannot_mix_foreign_messages_into_its_own_conversation(store):
    mine = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, mine, text="Q")
    my_answer = answer(store, KEY, mine, question, "A")

    theirs = store.create_conversation(OTHER_KEY, consent_version=CONSENT)
    their_question = store.add_user_message(OTHER_KEY, theirs, text="Q")
    their_answer = answer(store, OTHER_KEY, theirs, their_question, "B")

    with pytest.raises(NotFound):
        store.add_user_message(OTHER_KEY, theirs, text="Q", parent_id=my_answer)
    with pytest.raises(NotFound):
        store.start_answer(OTHER_KEY, theirs, parent_id=question, meta=AnswerMeta("m"))
    with pytest.raises(NotFound):
        store.add_pick(OTHER_KEY, their_answer, my_answer, their_answer)
    with pytest.raises(NotFound):
        store.add_feedback(OTHER_KEY, their_answer, "tie", other_message_id=my_answer)
    assert [c.id for c in store.list_conversations(OTHER_KEY)] == [theirs]
    assert [c.id for c in store.list_conversations(KEY)] == [mine]
