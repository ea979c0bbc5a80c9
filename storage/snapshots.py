"""A live database on local disk, with consistent snapshots kept in slower durable storage.

Some durable storage (a Hugging Face Space's /data, mounted from a bucket) cannot host SQLite's
write-ahead log and locks. The live database and its images stay on local disk; a snapshot
folder in durable storage holds `studio.db`, a single-file copy taken with SQLite's online
backup and renamed into place, and `images/`, content-addressed files written once each through
a temporary name. `take_snapshot` refreshes it (only new images are copied; erased ones are
removed); `restore` brings it back onto an empty local disk, the database last, so an
interrupted restore is simply done again. What was written after the last snapshot is lost if
the machine goes away without a clean shutdown.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import threading
from pathlib import Path

from storage import images
from storage.store import Store

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "studio.db"
# The periodic snapshot and the one at shutdown must not write the same folder at once.
_writing = threading.Lock()


def take_snapshot(store: Store, folder: Path) -> Path:
    """Refresh the snapshot in `folder` from the live `store`; returns the database copy."""
    with _writing:
        copy = store.backup(folder / SNAPSHOT_NAME, images_dir=folder / "images",
                            verify_existing=False, prune=True)
    log.info("snapshot of %s written to %s", store.path, folder)
    return copy


def restore(folder: Path, db_path: Path, images_dir: Path | None = None) -> bool:
    """Copy the snapshot in `folder` to `db_path` (and its images beside it) when there is a
    snapshot and no database at `db_path` yet. Returns whether it restored."""
    snapshot = folder / SNAPSHOT_NAME
    if db_path.exists() or not snapshot.exists():
        return False
    images_dir = images_dir or db_path.parent / "images"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=db_path.parent, prefix=f".{db_path.name}.")
    os.close(fd)
    try:
        source = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
        target = sqlite3.connect(temporary)
        try:
            source.backup(target)
            wanted = target.execute("SELECT sha256, format FROM images").fetchall()
        finally:
            target.close()
            source.close()
        images.remove_partial_copies(images_dir)
        damaged = [sha for sha, image_format in wanted
                   if not images.copy_verified(folder / "images", images_dir, sha, image_format)]
        if damaged:
            # The conversations are worth more than refusing to start over a few images.
            log.warning("%d image(s) of the snapshot in %s do not match their hash and were "
                        "not restored (first: %s)", len(damaged), folder, damaged[0])
        os.replace(temporary, db_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    log.info("restored %s from the snapshot in %s (%d images)", db_path, folder, len(wanted))
    return True
