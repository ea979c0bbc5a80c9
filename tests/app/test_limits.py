"""Busy and hostile: users at once, a full queue, an oversized upload, raw HTML in an answer's
text."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from PIL import Image

from tests.page_actions import give_consent, open_page

pytestmark = pytest.mark.browser


def _ask(client, text: str, max_new: int):
    return client.submit({"text": text, "files": []}, False, 0, max_new, 0.0, 1.0, 0, 1,
                         "Base model", api_name="/chat")


def _message_count(app) -> int:
    with sqlite3.connect(app.db_path) as db:
        return db.execute("select count(*) from messages").fetchone()[0]


def _wait_until_answering(client) -> None:
    """Ask a tiny question until the model (loading behind the page) answers it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "tokens ·" in str(_ask(client, "ready?", 2).result(timeout=60)):
            return  # the stats line under an answer
        time.sleep(0.5)
    pytest.fail("the model never answered")


def test_a_second_user_is_answered_while_the_first_answer_is_still_streaming(launch_app):
    from gradio_client import Client

    app = launch_app("--max-new-tokens-limit", "4000")
    long_client, short_client = Client(app.url, verbose=False), Client(app.url, verbose=False)
    try:
        _wait_until_answering(short_client)
        long_job = _ask(long_client, "a long answer please", 4000)
        deadline = time.monotonic() + 120
        while not long_job.outputs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert long_job.outputs(), "the first answer never started"
        _ask(short_client, "and a short one", 16).result(timeout=120)
        # The short answer joined the long one's batch instead of waiting for its end.
        assert not long_job.done()
        long_job.cancel()
    finally:
        long_client.close()
        short_client.close()


def test_a_full_queue_refuses_questions_and_nothing_else(launch_app):
    """Only questions wait for the model, so only they are refused when its line is full: a
    visitor can still tick "Save my data" and erase what they kept."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from gradio_client import Client

    # One answer at a time, so the others wait in the queue and it fills up.
    app = launch_app("--max-queue", "1", "--max-batch", "1", "--max-new-tokens-limit", "4000")
    question = {"text": "a long answer please", "files": []}
    settings = (False, 0, 4000, 0.0, 1.0, 0, 1, "Base model")
    clients = [Client(app.url, verbose=False) for _ in range(4)]
    keeper = Client(app.url, verbose=False)
    try:
        keeper.predict(True, api_name="/set_consent")
        # A question asked while the model still loads is given back at once, which empties
        # the queue again before it can fill: ask the four once the model answers.
        _wait_until_answering(keeper)
        assert _message_count(app) > 0
        jobs = [client.submit(question, *settings, api_name="/chat") for client in clients]
        # Two are refused at once; one is answered and one waits, the model's line full.
        pending = [job.future for job in jobs]
        while len(pending) > 2:
            _, left = wait(pending, timeout=240, return_when=FIRST_COMPLETED)
            assert len(left) < len(pending), "nobody was refused"
            pending = list(left)
        errors = [str(job.exception()) for job in jobs if job.done()]
        assert all("queue is full" in error.lower() for error in errors), errors
        keeper.predict(False, api_name="/set_consent")
        keeper.predict(api_name="/delete_my_data")
        assert sum(not job.done() for job in jobs) == 2, "the line emptied meanwhile"
        assert _message_count(app) == 0
        for job in jobs:
            job.cancel()
    finally:
        for client in (*clients, keeper):
            client.close()


def test_an_oversized_upload_is_refused_and_nothing_is_stored(launch_app, page, tmp_path):
    app = launch_app("--max-upload-mb", "1")
    open_page(page, app)
    give_consent(page)
    big = tmp_path / "big.png"
    Image.frombytes("RGB", (900, 900), os.urandom(900 * 900 * 3)).save(big)
    assert big.stat().st_size > 1024 * 1024
    page.locator("#question input[type=file]").set_input_files(str(big))
    # Among the page's messages (ticking "Save my data" shows one too).
    page.locator(".toast-body:has-text('maximum allowed size')").first.wait_for(timeout=30_000)
    message = page.locator(".toast-body:has-text('maximum allowed size')").first.inner_text()
    assert "exceed the maximum allowed size of 1.0 mb" in message.lower()
    with sqlite3.connect(app.db_path) as db:
        assert db.execute("select count(*) from images").fetchone()[0] == 0


def test_settings_the_page_would_not_allow_are_refused_through_the_api(launch_app, tmp_path):
    """The answering events check their inputs in the handler (`ui.common.checked_here`):
    the same bounds and file types as the page's own controls, with a clear message."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    app = launch_app("--max-new-tokens-limit", "64")
    client = Client(app.url, verbose=False)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a picture")
    try:
        client.predict(True, api_name="/set_consent")
        _wait_until_answering(client)
        stored = _message_count(app)
        with pytest.raises(AppError, match="greater than maximum value 64"):
            _ask(client, "a very long answer", 65).result(timeout=60)
        with pytest.raises(AppError, match="less than minimum value 0.05"):
            client.predict({"text": "top p of nothing", "files": []}, False, 0, 8, 0.7, 0.0, 0,
                           1, "Base model", api_name="/chat")
        with pytest.raises(AppError, match="Invalid file type"):
            client.predict({"text": "read this", "files": [handle_file(str(text_file))]},
                           False, 0, 8, 0.0, 1.0, 0, 1, "Base model", api_name="/chat")
        assert _message_count(app) == stored
        # The refusals left the visitor free to ask: this one is answered and kept.
        assert "tokens ·" in str(_ask(client, "a short one", 64).result(timeout=120))
        assert _message_count(app) == stored + 2
    finally:
        client.close()


def test_an_api_client_asks_with_a_loaded_adapter_and_an_unknown_one_is_refused(
        launch_app, tmp_path):
    """The adapter's name is checked by the engine, which knows what is loaded now: the page's
    variant list starts with the base model alone and is filled in per session."""
    from gradio_client import Client

    from engine.tiny import ensure_tiny
    from testing.lora import train_lora

    adapter = train_lora(ensure_tiny("qwen3_5"), tmp_path / "tuned", question="what?",
                         target="a horse", steps=2)
    app = launch_app("--adapter", f"tuned={adapter}")
    client = Client(app.url, verbose=False)
    settings = (False, 0, 8, 0.0, 1.0, 0, 1)
    try:
        client.predict(True, api_name="/set_consent")
        _wait_until_answering(client)
        answer = client.predict({"text": "with the adapter", "files": []}, *settings, "tuned",
                                api_name="/chat")
        assert "tokens ·" in str(answer)
        # Refused with the engine's message (tests/engine/test_adapters.py), the question is
        # given back in the box.
        refused = client.predict({"text": "with a made-up one", "files": []}, *settings,
                                 "nope", api_name="/chat")
        assert refused[-1] == {"text": "with a made-up one", "files": []}
        with sqlite3.connect(app.db_path) as db:
            rows = db.execute("select m.adapter from messages m join messages q "
                              "on q.id = m.parent_id where m.role = 'assistant' "
                              "and q.text in ('with the adapter', 'with a made-up one')"
                              ).fetchall()
            refused_rows = db.execute("select count(*) from messages "
                                      "where text = 'with a made-up one'").fetchone()[0]
        assert rows == [("tuned",)]
        assert refused_rows == 0  # the refused question left nothing behind
    finally:
        client.close()
