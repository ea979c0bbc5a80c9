"""A full disk: writes fail with a message that says so and save nothing; erasure still works
or says plainly that it could not, and so does every listener of erasures.

SQLite's own "database or disk is full" (SQLITE_FULL) is produced by capping the store's
connection at the pages it already has (`PRAGMA max_page_count`), which is what a full disk
gives SQLite too.
"""

from __future__ import annotations

import sqlite3

import pytest

from storage import OutOfSpace
from testing.data import png_blob

KEY = "full-disk-client-key-0123456789abcdef"


def _cap_at_current_size(store) -> None:
    connection = store._db().conn  # the connection this thread writes through
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")


def _count(store, table):
    with sqlite3.connect(store.path) as db:
        return db.execute(f"select count(*) from {table}").fetchone()[0]


def test_a_full_disk_says_so_and_saves_nothing(store):
    conversation = store.create_conversation(KEY, "kept", consent_version="v1")
    store.add_user_message(KEY, conversation, text="a question that was saved")
    _cap_at_current_size(store)
    with pytest.raises(OutOfSpace, match="out of disk space: nothing was saved"):
        store.add_user_message(KEY, conversation, text="x" * 200_000)
    assert _count(store, "messages") == 1


def test_erasure_on_a_full_disk_works_or_says_it_could_not(store):
    erased = []
    store.on_erasure(erased.append)
    sha = store.put_image(png_blob((10, 20, 30)))
    conversation = store.create_conversation(KEY, "mine", consent_version="v1")
    store.add_user_message(KEY, conversation, text="erase me", image_shas=[sha])
    _cap_at_current_size(store)
    try:
        counts = store.delete_user_data(KEY)
    except OutOfSpace as refused:
        assert "could not be deleted" in str(refused)
        assert _count(store, "messages") == 1  # nothing changed, as it says
    else:
        assert counts.conversations == 1 and counts.images == 1
        assert _count(store, "messages") == 0 and _count(store, "images") == 0
        assert erased == [[sha]]
