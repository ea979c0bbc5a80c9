"""Gradio's upload folder, seen from the studio.

Uploads are dropped once their turn has taken them (the studio keeps cleaned copies only while
the session lives, and the store only with consent), except the examples' images; erased
images lose every copy Gradio made of them there.

Gradio names an upload after its bytes, so two visitors who upload the same picture share one
file. `UploadTracker`, an ASGI middleware in front of the upload route, counts each upload of
a file (`Uploads.hold`); a turn that takes the file uses up one count, and the file goes only
with the last, so one visitor's question never deletes the image another is about to send.
An upload is counted only once the route answers, after it stored the file: a turn that takes
the last count while uploads are under way waits for them to end before the file goes, since
one of them may have just stored the same file and not yet been counted.
A file uploaded but never sent keeps its count; a public app's cache clean-up removes it.
`is_upload(scope)` says which requests are uploads, for this middleware and `ui.limits`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from collections import Counter
from pathlib import Path

# Counts kept before those of files already gone are dropped: abandoned uploads stay counted
# until then, and memory stays bounded.
MAX_COUNTED = 10_000


def is_upload(scope: dict) -> bool:
    """An ASGI request to Gradio's upload route (under any root path)."""
    return (scope.get("type") == "http" and scope.get("method") == "POST"
            and scope.get("path", "").rstrip("/").endswith("/upload"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Uploads:
    def __init__(self, root: Path, keep: set[str]) -> None:
        self.root = root.resolve()
        self.keep = keep  # sha256 of files never dropped: the examples' images
        self._pending: Counter[Path] = Counter()  # uploads of each file no turn took yet
        self._lock = threading.Lock()
        self._uploads = itertools.count()
        self._uploading: set[int] = set()  # uploads under way, by number (`upload_started`)
        # Files whose last count was taken while uploads were under way, with those uploads:
        # each goes once they all ended, unless one of them counted it again.
        self._waiting: list[tuple[Path, set[int]]] = []

    def hold(self, paths: list[str]) -> None:
        """Gradio stored an upload at each of `paths`: keep the file for one more turn."""
        with self._lock:
            for name in paths:
                path = Path(name).resolve()
                if path.is_relative_to(self.root):
                    self._pending[path] += 1
            if len(self._pending) > MAX_COUNTED:
                for path in [p for p in self._pending if not p.exists()]:
                    del self._pending[path]

    def upload_started(self) -> int:
        """An upload begins (the tracker calls this): its number for `upload_ended`."""
        with self._lock:
            number = next(self._uploads)
            self._uploading.add(number)
            return number

    def upload_ended(self, number: int) -> None:
        """Upload `number` was answered (and counted by `hold`), or failed."""
        with self._lock:
            self._uploading.discard(number)
            for _path, under_way in self._waiting:
                under_way.discard(number)
            ready = [path for path, under_way in self._waiting if not under_way]
            self._waiting = [entry for entry in self._waiting if entry[1]]
            doomed = [path for path in ready if not self._pending[path]]
        for path in doomed:
            self._remove(path)

    def discard(self, paths: list[str]) -> None:
        """A turn took these uploads: each file goes unless another upload of it is waiting."""
        for name in paths:
            path = Path(name).resolve()
            if not path.is_relative_to(self.root) or not path.is_file():
                continue
            with self._lock:
                if self._pending[path] > 1:
                    self._pending[path] -= 1
                    continue
                self._pending.pop(path, None)
                if self._uploading:
                    self._waiting.append((path, set(self._uploading)))
                    continue
            self._remove(path)

    def _remove(self, path: Path) -> None:
        try:
            if sha256(path) in self.keep:
                return
            path.unlink()
            path.parent.rmdir()  # Gradio gives each upload a folder of its own
        except OSError:
            pass

    def forget(self, shas: list[str]) -> None:
        """Remove files named after erased images (copies Gradio made to serve them)."""
        doomed = set(shas)
        if not doomed:
            return
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                if name.split(".", 1)[0] in doomed:
                    Path(folder, name).unlink(missing_ok=True)


class UploadTracker:
    """ASGI middleware: tells `uploads` where each successful upload was stored (the upload
    route answers with the list of server paths)."""

    def __init__(self, app, *, uploads: Uploads) -> None:
        self.app = app
        self.uploads = uploads

    async def __call__(self, scope, receive, send):
        if not is_upload(scope):
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def watching(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    # Counted before the browser hears of the file, so before any question
                    # can take it.
                    self.uploads.hold(_paths(bytes(body)))
            await send(message)

        number = self.uploads.upload_started()
        try:
            await self.app(scope, receive, watching)
        finally:
            self.uploads.upload_ended(number)


def _paths(body: bytes) -> list[str]:
    try:
        paths = json.loads(body)
    except ValueError:
        return []
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []
