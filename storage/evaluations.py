"""Stored evaluation runs, and the users' verdicts on side-by-side answers.

`save_run(store, ...)` keeps one evaluation: the model, its adapters, the split, a snapshot
of the data it saw (`data_snapshot`: counts plus the latest feedback event, so two runs can
be told apart by what they were computed on), every metric as JSON, and how long it took.
`list_runs(store)` returns them newest first. Runs hold counts and metrics only, never user
text, so erasing a user's data leaves them as they are.

`verdicts(store)` reads what users decided about the two answers of each comparison: the
latest pick, tie or "both bad" on two sibling answers that share a `compare_group`, with the
settings that produced each side (model, adapter, thinking). Votes, edits and judgements of
answers outside a comparison are not verdicts.

Nothing here knows about models, Gradio or the engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from storage.examples import _Feedback
from storage.ids import new_id
from storage.records import AnswerMeta
from storage.store import Store

VerdictKind = Literal["pick", "tie", "both_bad"]


@dataclass(frozen=True)
class EvaluationRun:
    id: str
    created_at: str
    model_id: str
    # Adapter name -> where it was loaded from.
    adapters: Mapping[str, str]
    split: str
    eval_fraction: float
    snapshot: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    duration_s: float | None = None


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


def data_snapshot(store: Store) -> dict[str, Any]:
    """Counts of what is stored now, and the latest feedback event's id and time."""
    with store._read() as db:
        def scalar(sql: str) -> int:
            return db.execute(sql).fetchone()[0]

        latest = db.execute(
            "SELECT id, created_at FROM feedback ORDER BY created_at DESC, id DESC LIMIT 1"
        ).fetchone()
        return {
            "conversations": scalar("SELECT count(*) FROM conversations"),
            "answers": scalar("SELECT count(*) FROM messages WHERE role = 'assistant'"),
            "feedback": scalar("SELECT count(*) FROM feedback"),
            "latest_feedback_id": latest[0] if latest else None,
            "latest_feedback_at": latest[1] if latest else None,
        }


def save_run(
    store: Store,
    *,
    model_id: str,
    adapters: Mapping[str, str],
    split: str,
    eval_fraction: float,
    snapshot: Mapping[str, Any],
    metrics: Mapping[str, Any],
    duration_s: float | None = None,
) -> EvaluationRun:
    """Store one run; returns it as it will be read back."""
    run = EvaluationRun(
        id=new_id(),
        created_at=store._now(),
        model_id=model_id,
        adapters=dict(adapters),
        split=split,
        eval_fraction=float(eval_fraction),
        snapshot=dict(snapshot),
        metrics=dict(metrics),
        duration_s=duration_s,
    )
    row = {
        "id": run.id,
        "created_at": run.created_at,
        "model_id": run.model_id,
        "adapters": json.dumps(run.adapters, sort_keys=True),
        "split": run.split,
        "eval_fraction": run.eval_fraction,
        # allow_nan=False: a NaN would be written as a bare token that JSON readers refuse.
        "snapshot": json.dumps(run.snapshot, sort_keys=True, allow_nan=False),
        "metrics": json.dumps(run.metrics, sort_keys=True, allow_nan=False),
        "duration_s": run.duration_s,
    }
    with store._write() as db:
        db["evaluation_runs"].insert(row)
    return _run_from_row(row)


def list_runs(store: Store, *, limit: int | None = None) -> list[EvaluationRun]:
    """Stored runs, newest first."""
    sql = "SELECT * FROM evaluation_runs ORDER BY created_at DESC, id DESC"
    params: list[Any] = []
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [_run_from_row(row) for row in store._db().query(sql, params)]


def _run_from_row(row: Mapping[str, Any]) -> EvaluationRun:
    return EvaluationRun(
        id=row["id"],
        created_at=row["created_at"],
        model_id=row["model_id"],
        adapters=json.loads(row["adapters"]),
        split=row["split"],
        eval_fraction=row["eval_fraction"],
        snapshot=json.loads(row["snapshot"]),
        metrics=json.loads(row["metrics"]),
        duration_s=row["duration_s"],
    )


def verdicts(store: Store) -> Iterator[Verdict]:
    """Every comparison's current verdict, conversation by conversation, oldest first."""
    for conversation in store.iter_conversations():
        by_id = {message.id: message for message in conversation.messages}
        state = _Feedback(conversation.feedback)
        for verdict in sorted(state.pairs.values(), key=lambda event: (event.created_at, event.id)):
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
