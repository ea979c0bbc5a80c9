"""The real app in headless Chromium: upload, ask, watch the answer stream, find it saved."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from PIL import Image, ImageDraw

from tests.page_actions import give_consent, open_page, set_greedy, submit_question

pytestmark = pytest.mark.browser

BOT = "#chatbot .message-row.bot-row"


def _scene(path):
    image = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, 70, 60), fill="red")
    draw.ellipse((90, 50, 150, 110), fill="blue")
    draw.text((12, 90), "VQA", fill="black")
    image.save(path)
    return path


def _answer_lengths_until_done(page, timeout=120.0):
    """Sample the last bot message's text while it streams; return the distinct lengths seen."""
    lengths = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = page.locator(BOT)
        if rows.count():
            text = rows.last.inner_text()
            if not lengths or lengths[-1] != len(text):
                lengths.append(len(text))
            if " tokens · " in text:
                return lengths, text
        time.sleep(0.02)
    raise TimeoutError(f"no finished answer; lengths seen: {lengths}")


def test_upload_ask_stream_and_saved(launch_app, page, tmp_path):
    app = launch_app("--max-new-tokens-limit", "400")
    open_page(page, app)
    give_consent(page)
    page.get_by_label("Think before answering").uncheck()
    set_greedy(page)
    image = _scene(tmp_path / "scene.png")
    submit_question(page, "What shapes are in this picture?", image)

    lengths, final_text = _answer_lengths_until_done(page)
    # The answer grew in several steps before it was complete: it streamed.
    growing = [n for n in lengths if n > 0]
    assert len(growing) >= 3, lengths
    assert "tiny-random" in final_text

    # The turn is in the SQLite file: the question with its image, and the finished answer.
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(app.db_path) as db:
            db.row_factory = sqlite3.Row
            answers = db.execute(
                "select * from messages where role = 'assistant'").fetchall()
            if (answers and answers[0]["status"] == "done") or time.monotonic() > deadline:
                break
        time.sleep(0.2)
    with sqlite3.connect(app.db_path) as db:
        db.row_factory = sqlite3.Row
        questions = db.execute("select * from messages where role = 'user'").fetchall()
        images = db.execute("select * from images").fetchall()
        links = db.execute("select * from message_images").fetchall()
        answers = db.execute("select * from messages where role = 'assistant'").fetchall()
    assert [q["text"] for q in questions] == ["What shapes are in this picture?"]
    assert len(images) == 1 and len(links) == 1
    assert len(answers) == 1
    answer = answers[0]
    assert answer["parent_id"] == questions[0]["id"]
    assert answer["status"] == "done"
    assert answer["finish_reason"] == "length"
    assert json.loads(answer["sampling"])["temperature"] == 0.0
    assert answer["text"].strip()


def test_thinking_shows_a_collapsible_section_and_nothing_saved_without_consent(
        launch_app, page):
    app = launch_app("--max-new-tokens-limit", "400")
    open_page(page, app)
    submit_question(page, "Think about it: what is two plus two?")
    _answer_lengths_until_done(page)
    thought = page.locator("#chatbot .thought-group")
    assert thought.count() >= 1
    assert "Thought" in thought.first.inner_text()
    with sqlite3.connect(app.db_path) as db:
        assert db.execute("select count(*) from messages").fetchone()[0] == 0
        assert db.execute("select count(*) from conversations").fetchone()[0] == 0


def test_a_model_that_cannot_be_obtained_is_explained_on_the_page(launch_app, page):
    app = launch_app("--model", "nobody/no-such-model", env={"HF_HUB_OFFLINE": "1"})
    page.goto(app.url)
    status = page.locator("#model-status")
    status.get_by_text("could not be loaded").wait_for(timeout=120_000)
    text = status.inner_text()
    assert "--model tiny-random" in text and "Traceback" not in text
    assert "Traceback" not in app.log()


def test_thinking_controls_are_disabled_with_a_reason_for_a_model_that_cannot_think(
        launch_app, page):
    app = launch_app("--model", "tiny-random:llava")
    open_page(page, app, family="llava")
    page.get_by_text("This model cannot think before answering.").first.wait_for()
    assert page.get_by_label("Think before answering").is_disabled()
    assert not page.get_by_label("Think before answering").is_checked()
