"""The abuse limits on their own, with a clock the test moves instead of waiting."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from ui.limits import PasswordGate, UploadGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_password_guesses_back_off_per_client_and_are_logged(caplog):
    clock = Clock()
    gate = PasswordGate("s3cret", free_guesses=3, first_wait_s=2, max_wait_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ui.limits"):
        for _ in range(3):
            assert gate.attempt("10.0.0.1", "guess").message == "Wrong password."
        # After three wrong guesses the client waits 2 s, then 4 s after the next, ...
        refused = gate.attempt("10.0.0.1", "s3cret")
        assert not refused.ok and "try again in" in refused.message
        assert gate.attempt("10.0.0.2", "s3cret").ok  # another client is not held up
        clock.now += 2
        assert not gate.attempt("10.0.0.1", "guess").ok
        clock.now += 3
        assert not gate.attempt("10.0.0.1", "s3cret").ok  # waits 4 s after the fifth
        clock.now += 1
        assert gate.attempt("10.0.0.1", "s3cret").ok
        # Success resets the count.
        assert gate.attempt("10.0.0.1", "guess").message == "Wrong password."
    wrong = [r for r in caplog.records if "wrong admin password from 10.0.0.1" in r.message]
    assert len(wrong) == 5


def test_password_guesses_from_many_addresses_lock_everyone(caplog):
    clock = Clock()
    gate = PasswordGate("s3cret", free_guesses=3, global_failures=10, global_window_s=600,
                        clock=clock)
    for n in range(10):
        assert gate.attempt(f"10.0.1.{n}", "guess").message == "Wrong password."
    locked = gate.attempt("10.0.2.1", "s3cret")
    assert not locked.ok and "locked" in locked.message
    clock.now += 600
    assert gate.attempt("10.0.2.1", "s3cret").ok


def _upload(guard: UploadGuard, client: str, size: int):
    """POST /gradio_api/upload through the guard; returns (status, body, passed on)."""
    passed = []
    sent = []

    async def downstream(scope, receive, send):
        passed.append(scope["path"])

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload",
             "client": (client, 5000), "headers": [(b"content-length", str(size).encode())]}
    guard.app = downstream
    # In a thread of its own: the browser tests leave an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, guard(scope, receive, send)).result()
    if not sent:
        return 200, "", bool(passed)
    return sent[0]["status"], sent[1]["body"].decode(), bool(passed)


def test_uploads_beyond_a_clients_volume_are_refused_until_the_window_passes(tmp_path):
    clock = Clock()
    guard = UploadGuard(None, folder=str(tmp_path), min_free_bytes=0,
                        per_client_bytes=10_000, window_s=3600, clock=clock)
    assert _upload(guard, "10.0.0.1", 6_000) == (200, "", True)
    status, message, passed = _upload(guard, "10.0.0.1", 6_000)
    assert status == 429 and not passed and "try again in" in message
    assert _upload(guard, "10.0.0.2", 6_000)[0] == 200  # another client
    clock.now += 3600
    assert _upload(guard, "10.0.0.1", 6_000)[0] == 200


def test_uploads_are_refused_before_the_disk_fills(tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    guard = UploadGuard(None, folder=str(tmp_path / "not-made-yet"),
                        min_free_bytes=free - 200 * 2**20, per_client_bytes=0)
    assert _upload(guard, "10.0.0.1", 1_000)[0] == 200
    status, message, passed = _upload(guard, "10.0.0.1", 400 * 2**20)
    assert status == 507 and not passed and "out of disk space" in message
