"""Many threads writing at once, and backups taken while others write."""

from __future__ import annotations

import sqlite3
import threading
import time

from storage import Store
from testing.data import CONSENT, KEY, answer, png_blob

THREADS = 16
WRITE_FOR_S = 2.0


def test_sixteen_threads_writing_feedback_lose_nothing_and_never_fail(store):
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    question = store.add_user_message(KEY, conversation, text="Q")
    answers = [answer(store, KEY, conversation, question, f"answer {n}") for n in range(4)]
    acknowledged = [0] * THREADS
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def writer(index: int) -> None:
        key = f"writer-{index}"
        try:
            # Half the threads vote in one shared conversation, half also build their own.
            if index % 2:
                own = store.create_conversation(key, consent_version=CONSENT)
                own_question = store.add_user_message(key, own, text="mine")
                target_key, targets = key, [answer(store, key, own, own_question, "a")]
            else:
                target_key, targets = KEY, answers
            # The timeout only keeps a failed thread from stranding the others.
            start.wait(timeout=60)
            deadline = time.monotonic() + WRITE_FOR_S
            count = 0
            while time.monotonic() < deadline:
                kind = "like" if count % 2 else "dislike"
                store.add_feedback(target_key, targets[count % len(targets)], kind, reasons=["r"])
                count += 1
                acknowledged[index] = count
        except BaseException as error:  # noqa: BLE001 - every failure is the finding
            failures.append(error)
            start.abort()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert all(count > 0 for count in acknowledged)
    with sqlite3.connect(store.path) as conn:
        stored = conn.execute("SELECT count(*) FROM feedback").fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert stored == sum(acknowledged)


def test_a_backup_taken_while_writing_is_a_consistent_snapshot(store, tmp_path):
    sha = store.put_image(png_blob((5, 6, 7)))
    conversation = store.create_conversation(KEY, consent_version=CONSENT)
    stop = threading.Event()
    failures: list[BaseException] = []
    turns = [0]

    def writer() -> None:
        parent = None
        try:
            while not stop.is_set():
                question = store.add_user_message(
                    KEY, conversation, text="Q", image_shas=[sha], parent_id=parent
                )
                parent = answer(store, KEY, conversation, question, "A")
                # One transaction writes both the edit message and its feedback row.
                store.add_edit(KEY, parent, "corrected")
                turns[0] += 1
        except BaseException as error:  # noqa: BLE001
            failures.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while turns[0] < 3:
            time.sleep(0.01)
        backups = [store.backup(tmp_path / "backups" / f"copy-{n}.db") for n in range(3)]
    finally:
        stop.set()
        thread.join()
    assert failures == []

    for path in backups:
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        edits = conn.execute("SELECT count(*) FROM messages WHERE origin = 'edit'").fetchone()[0]
        edit_events = conn.execute("SELECT count(*) FROM feedback WHERE kind = 'edit'").fetchone()[
            0
        ]
        assert edits == edit_events >= 3
        conn.close()
        copy = Store(path, recover=False)
        assert copy.get_conversation(KEY, conversation).messages
        assert copy.image_path(sha).read_bytes() == store.image_path(sha).read_bytes()
        assert copy.images_dir == tmp_path / "backups" / "images"
        copy.close()
