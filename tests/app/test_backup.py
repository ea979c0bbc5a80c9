"""`app.py backup` killed mid-copy, then run again: the backup ends whole, verified by hash,
with no partial files left behind."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from storage import Store
from storage.images import image_file
from testing.data import CONSENT, KEY, png_blob
from testing.waiting import wait_until
from tests.conftest import ROOT


def _store_with_images(path: Path, count: int) -> list[str]:
    with Store(path) as store:
        conversation = store.create_conversation(KEY, consent_version=CONSENT)
        shas = [store.put_image(png_blob((n, 2 * n, 3 * n), size=(64 + n, 48)))
                for n in range(count)]
        store.add_user_message(KEY, conversation, text="what is this?", image_shas=shas)
    return shas


def _backup(source: Path, dest: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "backup", str(dest),
                             "--db", str(source)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


def test_a_backup_killed_mid_copy_is_completed_and_verified_by_the_next_run(tmp_path):
    source = tmp_path / "live" / "studio.db"
    shas = _store_with_images(source, 6)
    images = source.parent / "images"
    # One image is served through a pipe, so the backup blocks inside that copy, half-written,
    # until the test kills it there: a kill mid-copy, deterministically.
    blocked = image_file(images, shas[3], "PNG")
    data = blocked.read_bytes()
    blocked.unlink()
    os.mkfifo(blocked)
    dest = tmp_path / "backup" / "studio.db"
    run = _backup(source, dest)
    with open(blocked, "wb") as pipe:
        pipe.write(data[: len(data) // 2])
        pipe.flush()
        assert wait_until(lambda: _leftovers(dest.parent / "images")), run.communicate()
        run.send_signal(signal.SIGKILL)
        run.wait()
    blocked.unlink()
    blocked.write_bytes(data)
    # What the kill left: a partial temporary file, and no partial file under an image's name.
    assert _leftovers(dest.parent / "images")
    copied = image_file(dest.parent / "images", shas[3], "PNG")
    assert not copied.exists()

    again = _backup(source, dest)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    for sha in shas:
        copy = image_file(dest.parent / "images", sha, "PNG")
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == sha
    assert _leftovers(dest.parent) == []
    with sqlite3.connect(dest) as db:
        assert db.execute("select count(*) from images").fetchone()[0] == len(shas)


def test_a_damaged_image_in_an_earlier_backup_is_repaired(tmp_path):
    source = tmp_path / "live" / "studio.db"
    shas = _store_with_images(source, 3)
    dest = tmp_path / "backup" / "studio.db"
    first = _backup(source, dest)
    assert first.wait(timeout=120) == 0
    damaged = image_file(dest.parent / "images", shas[1], "PNG")
    damaged.write_bytes(damaged.read_bytes()[:10])

    again = _backup(source, dest)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == shas[1]


def test_a_source_image_that_no_longer_matches_its_hash_fails_the_backup_clearly(tmp_path):
    source = tmp_path / "live" / "studio.db"
    shas = _store_with_images(source, 3)
    image_file(source.parent / "images", shas[0], "PNG").write_bytes(b"not the image")
    dest = tmp_path / "backup" / "studio.db"
    run = _backup(source, dest)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1
    assert err.strip().count("\n") == 0 and "no longer match their hash" in err
    # The others were copied, the bad bytes were not, and nothing partial was left.
    assert not image_file(dest.parent / "images", shas[0], "PNG").exists()
    for sha in shas[1:]:
        assert image_file(dest.parent / "images", sha, "PNG").exists()
    assert _leftovers(dest.parent) == []


def test_a_backup_runs_while_the_app_writes(tmp_path):
    """Backups taken one after another while a writer adds images all end whole."""
    source = tmp_path / "live" / "studio.db"
    _store_with_images(source, 1)
    stop = threading.Event()

    def write() -> None:
        with Store(source) as store:
            conversation = store.create_conversation(KEY, consent_version=CONSENT)
            n = 0
            while not stop.is_set():
                n += 1
                sha = store.put_image(png_blob((n % 256, 7, 9), size=(32 + n % 64, 16)))
                store.add_user_message(KEY, conversation, text="q", image_shas=[sha])

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(2):
            run = _backup(source, tmp_path / "backup" / "studio.db")
            _, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
    finally:
        stop.set()
        writer.join()
    dest = tmp_path / "backup"
    with sqlite3.connect(dest / "studio.db") as db:
        rows = db.execute("select sha256 from images").fetchall()
    for (sha,) in rows:
        copy = image_file(dest / "images", sha, "PNG")
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == sha
    assert _leftovers(dest) == []
