"""The users' verdicts on side-by-side answers, as an evaluation counts them.

`verdicts(store)` reads what users decided about the two answers of each comparison: the
latest pick, tie or "both bad" on two sibling answers that share a `compare_group`, with the
settings that produced each side (model, adapter, thinking). Votes, edits and judgements of
answers outside a comparison are not verdicts. Stored evaluation runs themselves are kept
by the store (`Store.add_evaluation_run`, `Store.list_evaluation_runs`).

Nothing here knows about models, Gradio or the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from storage.judgements import latest_pair_verdicts
from storage.records import AnswerMeta
from storage.store import Store

VerdictKind = Literal["pick", "tie", "both_bad"]


@dataclass(frozen=True)
class Verdict:
    """One user's current verdict on the two answers of a comparison. For a pick, `first`
    is the chosen answer; for a tie or "both bad" the order carries no meaning."""

    kind: VerdictKind
    first: AnswerMeta
    second: AnswerMeta
    decided_at: str
    conversation_id: str
    feedback_id: str


def verdicts(store: Store) -> Iterator[Verdict]:
    """Every comparison's current verdict, conversation by conversation, oldest first."""
    for conversation in store.iter_conversations():
        by_id = {message.id: message for message in conversation.messages}
        for verdict in latest_pair_verdicts(conversation):
            first = by_id.get(verdict.message_id)
            second = by_id.get(verdict.other_message_id or "")
            if first is None or second is None or first.meta is None or second.meta is None:
                continue  # a correction takes part: no model produced that side
            group = first.meta.compare_group
            if group is None or group != second.meta.compare_group:
                continue
            yield Verdict(
                kind=verdict.kind,  # type: ignore[arg-type]
                first=first.meta,
                second=second.meta,
                decided_at=verdict.created_at,
                conversation_id=conversation.id,
                feedback_id=verdict.id,
            )
