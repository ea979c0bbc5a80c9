"""Gradio's upload folder: a file goes with the last turn that took an upload of it.

Real files in a real folder; the tracker in front of an ASGI app that answers as Gradio's
upload route does (the browser test of two visitors sharing a picture is in test_trust)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from ui.uploads import Uploads, UploadTracker, sha256


def _upload(root, name: str, data: bytes):
    """A file where Gradio would put it: a folder of its own, named after the bytes."""
    folder = root / f"folder-{len(data)}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return str(path)


def test_a_file_uploaded_twice_stays_until_both_turns_took_it(tmp_path):
    uploads = Uploads(tmp_path, keep=set())
    shared = _upload(tmp_path, "cat.png", b"same bytes")
    uploads.hold([shared])
    uploads.hold([shared])  # another visitor, the same picture
    uploads.discard([shared])
    assert (tmp_path / shared).exists()
    uploads.discard([shared])
    assert not (tmp_path / shared).exists()
    assert not (tmp_path / "folder-10").exists()


def test_an_uncounted_file_goes_with_its_turn_and_examples_stay(tmp_path):
    uploads = Uploads(tmp_path, keep=set())
    loose = _upload(tmp_path, "dog.png", b"fetched, never uploaded")
    uploads.discard([loose])
    assert not (tmp_path / loose).exists()

    example = _upload(tmp_path, "example.png", b"an example's image")
    uploads = Uploads(tmp_path, keep={sha256(tmp_path / example)})
    uploads.discard([example])
    assert (tmp_path / example).exists()


def test_the_tracker_counts_what_the_upload_route_stored(tmp_path):
    uploads = Uploads(tmp_path, keep=set())
    stored = [_upload(tmp_path, "a.png", b"a"), _upload(tmp_path, "b.png", b"bb")]

    async def upload_route(scope, receive, send):
        body = json.dumps(stored).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body[:5], "more_body": True})
        await send({"type": "http.response.body", "body": body[5:]})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    tracker = UploadTracker(upload_route, uploads=uploads)
    for path in ("/gradio_api/upload", "/gradio_api/upload", "/gradio_api/queue/join"):
        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        # In a thread of its own: the browser tests leave an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, tracker(scope, receive, send)).result()
    uploads.discard(stored)  # two uploads each (the third call was no upload): one left
    assert all((tmp_path / p).exists() for p in stored)
    uploads.discard(stored)
    assert not any((tmp_path / p).exists() for p in stored)
