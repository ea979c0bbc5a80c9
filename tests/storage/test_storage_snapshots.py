"""Snapshots of a live database into durable storage, and their restore onto an empty disk."""

from __future__ import annotations

import hashlib
import sqlite3

from storage import Store
from storage.images import image_file
from storage.snapshots import restore, take_snapshot
from testing.data import CONSENT, KEY, answer, png_blob


def test_a_snapshot_is_one_consistent_file_and_written_once_images(store, tmp_path):
    durable = tmp_path / "data" / "vqa-studio"
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    sha = store.put_image(png_blob((1, 2, 3)))
    question = store.add_user_message(KEY, conversation, text="what?", image_shas=[sha])
    answer(store, KEY, conversation, question, "a cat")

    copy = take_snapshot(store, durable)
    # No write-ahead log or lock file beside it: a bucket mount holds one plain file.
    assert sorted(p.name for p in durable.iterdir()) == ["images", "studio.db"]
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("select count(*) from messages").fetchone()[0] == 2
    image = image_file(durable / "images", sha, "PNG")
    first_write = image.stat().st_mtime_ns
    take_snapshot(store, durable)
    assert image.stat().st_mtime_ns == first_write  # an image is written once


def test_erased_data_leaves_the_next_snapshot(store, tmp_path):
    durable = tmp_path / "durable"
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    sha = store.put_image(png_blob((9, 9, 9)))
    store.add_user_message(KEY, conversation, text="mine", image_shas=[sha])
    take_snapshot(store, durable)
    assert image_file(durable / "images", sha, "PNG").exists()

    store.delete_conversation(KEY, conversation)
    take_snapshot(store, durable)
    assert not image_file(durable / "images", sha, "PNG").exists()
    with sqlite3.connect(durable / "studio.db") as db:
        assert db.execute("select count(*) from messages").fetchone()[0] == 0


def test_an_empty_disk_is_restored_from_the_snapshot_and_a_full_one_is_left_alone(store,
                                                                                  tmp_path):
    durable = tmp_path / "durable"
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    sha = store.put_image(png_blob((4, 5, 6)))
    store.add_user_message(KEY, conversation, text="kept?", image_shas=[sha])
    take_snapshot(store, durable)

    fresh = tmp_path / "restarted" / "studio.db"
    assert restore(durable, fresh) is True
    with Store(fresh) as restored:
        messages = restored.get_conversation(KEY, conversation).messages
        assert [m.text for m in messages] == ["kept?"]
        data = restored.image_path(sha).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
        answer(restored, KEY, conversation, messages[0].id, "after the restart")
    # The local database wins over an older snapshot.
    assert restore(durable, fresh) is False
    with Store(fresh) as again:
        assert len(again.get_conversation(KEY, conversation).messages) == 2


def test_without_a_snapshot_nothing_is_restored(tmp_path):
    assert restore(tmp_path / "never-written", tmp_path / "local" / "studio.db") is False
    assert not (tmp_path / "local" / "studio.db").exists()
