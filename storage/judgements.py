"""The current state of a conversation's judgements, read one way for every reader.

Feedback is stored as events, oldest first, and never rewritten: a later like replaces an
earlier dislike of the same answer, "clear" withdraws a vote, a later verdict on the same two
answers replaces an earlier one, a later edit of an answer replaces an earlier one.
`CurrentFeedback(events)` applies that rule once; the training examples and the evaluation's
verdicts both read it from here, so they can never disagree about what a user decided.
"""

from __future__ import annotations

from storage.records import PAIR_KINDS, VOTE_KINDS, Conversation, Feedback


class CurrentFeedback:
    """The current state of a conversation's feedback: latest vote per answer, latest
    verdict per pair of answers, latest edit per corrected answer."""

    def __init__(self, events: tuple[Feedback, ...]) -> None:
        self.votes: dict[str, Feedback] = {}
        self.pairs: dict[frozenset[str], Feedback] = {}
        self.edits: dict[str, Feedback] = {}
        for event in events:  # oldest first, so later events overwrite
            if event.kind in VOTE_KINDS:
                if event.kind == "clear":
                    self.votes.pop(event.message_id, None)
                else:
                    self.votes[event.message_id] = event
            elif event.kind in PAIR_KINDS and event.other_message_id is not None:
                self.pairs[frozenset((event.message_id, event.other_message_id))] = event
            elif event.kind == "edit" and event.edit_message_id is not None:
                self.edits[event.message_id] = event

    def vote(self, message_id: str) -> str | None:
        event = self.votes.get(message_id)
        return event.kind if event else None


def latest_pair_verdicts(conversation: Conversation) -> list[Feedback]:
    """The current pick, tie or "both bad" of every pair of the conversation's answers that
    was judged, oldest first: a later verdict on the same two answers replaces an earlier one,
    as it does for the examples."""
    pairs = CurrentFeedback(conversation.feedback).pairs.values()
    return sorted(pairs, key=lambda event: (event.created_at, event.id))
