"""Gradio's upload folder: a file goes with the last turn that took an upload of it.

Real files in a real folder; the tracker in front of an ASGI app that answers as Gradio's
upload route does (the browser test of two visitors sharing a picture is in test_trust)."""

from __future__ import annotations

import asyncio
import json
import threading
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


def _run_upload(uploads, answers_with: list[str]):
    """Start an upload through the tracker, in a thread of its own; the route stores its file
    at once and answers (naming `answers_with`) when the returned event is set."""
    stored, answer = threading.Event(), threading.Event()

    async def upload_route(scope, receive, send):
        stored.set()
        await asyncio.to_thread(answer.wait, 60)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(answers_with).encode()})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    tracker = UploadTracker(upload_route, uploads=uploads)
    scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload", "headers": []}
    pool = ThreadPoolExecutor(1)
    running = pool.submit(asyncio.run, tracker(scope, receive, send))
    pool.shutdown(wait=False)
    assert stored.wait(60)
    return answer, running


def test_a_file_stays_while_an_upload_that_may_have_stored_it_again_is_answered(tmp_path):
    uploads = Uploads(tmp_path, keep=set())
    shared = _upload(tmp_path, "cat.png", b"same bytes")
    uploads.hold([shared])  # the first visitor's upload
    # The second visitor's upload of the same picture has stored it, and is not counted yet.
    answer, running = _run_upload(uploads, [shared])
    uploads.discard([shared])  # the first visitor's question took its count
    assert (tmp_path / shared).exists()
    answer.set()
    running.result()
    assert (tmp_path / shared).exists()  # the second visitor's, until their question takes it
    uploads.discard([shared])
    assert not (tmp_path / shared).exists()


def test_a_taken_file_goes_once_the_uploads_under_way_are_answered(tmp_path):
    uploads = Uploads(tmp_path, keep=set())
    taken = _upload(tmp_path, "cat.png", b"a cat")
    other = _upload(tmp_path, "dog.png", b"another picture")
    uploads.hold([taken])
    answer, running = _run_upload(uploads, [other])
    uploads.discard([taken])
    assert (tmp_path / taken).exists()  # the upload under way might have been this file
    answer.set()
    running.result()
    assert not (tmp_path / taken).exists() and (tmp_path / other).exists()
