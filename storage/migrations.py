"""The database schema, as named, append-only sqlite-utils migrations.

Never edit or reorder a migration that has shipped: add a new one at the end. `migrate(db)`
applies the pending ones, each in its own savepoint with the record of it having run (in
sqlite-utils' `_sqlite_migrations` table); the caller wraps the call in a write transaction
so two processes opening the same file at once apply them only once.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATION_SET = "vqa_studio"

migrations = Migrations(MIGRATION_SET)


@migrations(name="0001_initial_schema")
def _initial_schema(db: Database) -> None:
    db["conversations"].create(
        {
            "id": str,
            # sha256 of the browser's client key: the key is a bearer secret, so the database
            # (and its backups) keeps only a digest that cannot be replayed.
            "client_hash": str,
            "title": str,
            "consent_version": str,
            "consented_at": str,
            "created_at": str,
            # Last activity (new message, answer, feedback, rename); drives retention.
            "updated_at": str,
        },
        pk="id",
        not_null={
            "id",
            "client_hash",
            "title",
            "consent_version",
            "consented_at",
            "created_at",
            "updated_at",
        },
    )
    db["conversations"].create_index(["client_hash", "updated_at"])
    db["conversations"].create_index(["updated_at"])

    db["images"].create(
        {
            "sha256": str,
            "format": str,
            "width": int,
            "height": int,
            "byte_size": int,
            "created_at": str,
            # Refreshed on every upload of the same bytes, so retention never removes an
            # image someone has just uploaded but not yet sent.
            "stored_at": str,
        },
        pk="sha256",
        not_null={"sha256", "format", "width", "height", "byte_size", "created_at", "stored_at"},
    )

    db["messages"].create(
        {
            "id": str,
            "conversation_id": str,
            "parent_id": str,
            "role": str,
            "origin": str,
            "corrects_id": str,
            "text": str,
            "reasoning": str,
            "status": str,
            "model_id": str,
            "revision": str,
            "quantization": str,
            "adapter": str,
            "thinking": int,
            "thinking_budget": int,
            "sampling": str,
            "seed": int,
            "compare_group": str,
            "side": str,
            "reasoning_tokens": int,
            "answer_tokens": int,
            "time_to_first_token_s": float,
            "duration_s": float,
            "finish_reason": str,
            "budget_exhausted": int,
            "error": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={
            "id",
            "conversation_id",
            "role",
            "origin",
            "text",
            "reasoning",
            "status",
            "created_at",
            "updated_at",
        },
        defaults={"text": "", "reasoning": ""},
        foreign_keys=[
            ("conversation_id", "conversations", "id"),
            ("parent_id", "messages", "id"),
            ("corrects_id", "messages", "id"),
        ],
    )
    db["messages"].create_index(["conversation_id"])
    db["messages"].create_index(["parent_id"])
    db["messages"].create_index(["corrects_id"])
    db["messages"].create_index(["status"])

    db["message_images"].create(
        {"message_id": str, "position": int, "image_sha": str},
        pk=("message_id", "position"),
        not_null={"message_id", "position", "image_sha"},
        foreign_keys=[
            ("message_id", "messages", "id"),
            ("image_sha", "images", "sha256"),
        ],
    )
    db["message_images"].create_index(["image_sha"])

    db["feedback"].create(
        {
            "id": str,
            "conversation_id": str,
            "message_id": str,
            "client_hash": str,
            "kind": str,
            "reasons": str,  # JSON list of strings
            "comment": str,
            "other_message_id": str,
            # Always equal to message_id or other_message_id, so no foreign key of its own.
            "left_message_id": str,
            "edit_message_id": str,
            "created_at": str,
        },
        pk="id",
        not_null={"id", "conversation_id", "message_id", "client_hash", "kind", "created_at"},
        foreign_keys=[
            ("conversation_id", "conversations", "id"),
            ("message_id", "messages", "id"),
            ("other_message_id", "messages", "id"),
            ("edit_message_id", "messages", "id"),
        ],
    )
    db["feedback"].create_index(["conversation_id"])
    db["feedback"].create_index(["message_id"])
    db["feedback"].create_index(["other_message_id"])
    db["feedback"].create_index(["edit_message_id"])
    db["feedback"].create_index(["created_at"])


@migrations(name="0002_evaluation_runs")
def _evaluation_runs(db: Database) -> None:
    # One row per evaluation of a model (and its adapters) against the stored feedback.
    # Counts and metrics only: no user text, so erasing a user's data never touches it.
    db["evaluation_runs"].create(
        {
            "id": str,
            "created_at": str,
            "model_id": str,
            "adapters": str,  # JSON object: adapter name -> where it was loaded from
            "split": str,
            "eval_fraction": float,
            "snapshot": str,  # JSON object: what the data held when the run started
            "metrics": str,  # JSON object: every number the run produced
            "duration_s": float,
        },
        pk="id",
        not_null={
            "id",
            "created_at",
            "model_id",
            "adapters",
            "split",
            "eval_fraction",
            "snapshot",
            "metrics",
        },
    )
    db["evaluation_runs"].create_index(["created_at"])


def migrate(db: Database) -> list[str]:
    """Apply pending migrations; returns the names applied."""
    pending = [migration.name for migration in migrations.pending(db)]
    migrations.apply(db)
    return pending
