"""Migrating an empty database produces exactly the schema the store relies on."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database

from storage import Store
from storage.migrations import MIGRATION_SET, migrations

# table -> [(column, type, not null)], in declaration order; the primary key is listed apart.
EXPECTED_COLUMNS = {
    "evaluation_runs": [
        ("id", "TEXT", True),
        ("created_at", "TEXT", True),
        ("model_id", "TEXT", True),
        ("adapters", "TEXT", True),
        ("split", "TEXT", True),
        ("eval_fraction", "REAL", True),
        ("snapshot", "TEXT", True),
        ("metrics", "TEXT", True),
        ("duration_s", "REAL", False),
    ],
    "conversations": [
        ("id", "TEXT", True),
        ("client_hash", "TEXT", True),
        ("title", "TEXT", True),
        ("consent_version", "TEXT", True),
        ("consented_at", "TEXT", True),
        ("created_at", "TEXT", True),
        ("updated_at", "TEXT", True),
    ],
    "images": [
        ("sha256", "TEXT", True),
        ("format", "TEXT", True),
        ("width", "INTEGER", True),
        ("height", "INTEGER", True),
        ("byte_size", "INTEGER", True),
        ("created_at", "TEXT", True),
        ("stored_at", "TEXT", True),
    ],
    "messages": [
        ("id", "TEXT", True),
        ("conversation_id", "TEXT", True),
        ("parent_id", "TEXT", False),
        ("role", "TEXT", True),
        ("origin", "TEXT", True),
        ("corrects_id", "TEXT", False),
        ("text", "TEXT", True),
        ("reasoning", "TEXT", True),
        ("status", "TEXT", True),
        ("model_id", "TEXT", False),
        ("revision", "TEXT", False),
        ("quantization", "TEXT", False),
        ("adapter", "TEXT", False),
        ("thinking", "INTEGER", False),
        ("thinking_budget", "INTEGER", False),
        ("sampling", "TEXT", False),
        ("seed", "INTEGER", False),
        ("compare_group", "TEXT", False),
        ("side", "TEXT", False),
        ("reasoning_tokens", "INTEGER", False),
        ("answer_tokens", "INTEGER", False),
        ("time_to_first_token_s", "REAL", False),
        ("duration_s", "REAL", False),
        ("finish_reason", "TEXT", False),
        ("budget_exhausted", "INTEGER", False),
        ("error", "TEXT", False),
        ("created_at", "TEXT", True),
        ("updated_at", "TEXT", True),
    ],
    "message_images": [
        ("message_id", "TEXT", True),
        ("position", "INTEGER", True),
        ("image_sha", "TEXT", True),
    ],
    "feedback": [
        ("id", "TEXT", True),
        ("conversation_id", "TEXT", True),
        ("message_id", "TEXT", True),
        ("client_hash", "TEXT", True),
        ("kind", "TEXT", True),
        ("reasons", "TEXT", False),
        ("comment", "TEXT", False),
        ("other_message_id", "TEXT", False),
        ("left_message_id", "TEXT", False),
        ("edit_message_id", "TEXT", False),
        ("created_at", "TEXT", True),
    ],
    "_sqlite_migrations": [
        ("id", "INTEGER", False),
        ("migration_set", "TEXT", False),
        ("name", "TEXT", False),
        ("applied_at", "TEXT", False),
    ],
}

EXPECTED_PRIMARY_KEYS = {
    "evaluation_runs": ["id"],
    "conversations": ["id"],
    "images": ["sha256"],
    "messages": ["id"],
    "message_images": ["message_id", "position"],
    "feedback": ["id"],
    "_sqlite_migrations": ["id"],
}

# Named indexes (the automatic primary-key ones aside): name -> (table, columns, unique).
EXPECTED_INDEXES = {
    "idx_evaluation_runs_created_at": ("evaluation_runs", ["created_at"], False),
    "idx_conversations_client_hash_updated_at": (
        "conversations",
        ["client_hash", "updated_at"],
        False,
    ),
    "idx_conversations_updated_at": ("conversations", ["updated_at"], False),
    "idx_messages_conversation_id": ("messages", ["conversation_id"], False),
    "idx_messages_parent_id": ("messages", ["parent_id"], False),
    "idx_messages_corrects_id": ("messages", ["corrects_id"], False),
    "idx_messages_status": ("messages", ["status"], False),
    "idx_message_images_image_sha": ("message_images", ["image_sha"], False),
    "idx_feedback_conversation_id": ("feedback", ["conversation_id"], False),
    "idx_feedback_message_id": ("feedback", ["message_id"], False),
    "idx_feedback_other_message_id": ("feedback", ["other_message_id"], False),
    "idx_feedback_edit_message_id": ("feedback", ["edit_message_id"], False),
    "idx_feedback_created_at": ("feedback", ["created_at"], False),
    "idx__sqlite_migrations_migration_set_name": (
        "_sqlite_migrations",
        ["migration_set", "name"],
        True,
    ),
}

EXPECTED_FOREIGN_KEYS = {
    ("messages", "conversation_id", "conversations", "id"),
    ("messages", "parent_id", "messages", "id"),
    ("messages", "corrects_id", "messages", "id"),
    ("message_images", "message_id", "messages", "id"),
    ("message_images", "image_sha", "images", "sha256"),
    ("feedback", "conversation_id", "conversations", "id"),
    ("feedback", "message_id", "messages", "id"),
    ("feedback", "other_message_id", "messages", "id"),
    ("feedback", "edit_message_id", "messages", "id"),
}


def test_migrating_an_empty_database_gives_the_expected_schema(tmp_path):
    path = tmp_path / "empty.db"
    Store(path).close()

    db = Database(path)
    assert set(db.table_names()) == set(EXPECTED_COLUMNS)
    for table, expected in EXPECTED_COLUMNS.items():
        assert [(c.name, c.type) for c in db[table].columns] == [
            (name, kind) for name, kind, _ in expected
        ], table
        not_null = {c.name for c in db[table].columns if c.notnull}
        assert not_null == {name for name, _, required in expected if required}, table
        assert db[table].pks == EXPECTED_PRIMARY_KEYS[table], table

    indexes = {
        index.name: (table, index.columns, bool(index.unique))
        for table in db.table_names()
        for index in db[table].indexes
        if not index.name.startswith("sqlite_autoindex_")
    }
    assert indexes == EXPECTED_INDEXES

    foreign_keys = {
        (fk.table, fk.column, fk.other_table, fk.other_column)
        for table in db.table_names()
        for fk in db[table].foreign_keys
    }
    assert foreign_keys == EXPECTED_FOREIGN_KEYS

    assert [m.name for m in migrations.applied(db)] == [
        "0001_initial_schema", "0002_evaluation_runs"]
    assert db.journal_mode == "wal"
    db.close()


def test_reopening_applies_nothing_twice(tmp_path):
    path = tmp_path / "twice.db"
    Store(path).close()
    Store(path).close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [MIGRATION_SET]
        ).fetchall()
    conn.close()
    assert rows == [("0001_initial_schema",), ("0002_evaluation_runs",)]
