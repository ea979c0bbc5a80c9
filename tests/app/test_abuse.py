"""A public app holds against one visitor: password guessing backs off, uploads stop at a
volume per client and before the disk fills, each with a plain message and nothing stored."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.page_actions import give_consent, open_page

pytestmark = pytest.mark.browser


def _noise(path, side=500):
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(path)
    return path


def _toast(page, text):
    toast = page.locator(f".toast-body:has-text('{text}')").first
    toast.wait_for(timeout=30_000)
    return toast.inner_text()


def _wait_for_log(app, line, count, timeout=30.0):
    deadline = time.monotonic() + timeout
    while app.log().count(line) < count:
        assert time.monotonic() < deadline, app.log()[-2000:]
        time.sleep(0.1)


def _count(app, table):
    with sqlite3.connect(app.db_path) as db:
        return db.execute(f"select count(*) from {table}").fetchone()[0]


def test_admin_password_guesses_back_off_and_are_logged(launch_app, page):
    # A wait far longer than the test: the refusal cannot depend on how fast the page is.
    app = launch_app("--public", "--password-wait-s", "600",
                     env={"VQA_STUDIO_ADMIN_PASSWORD": "s3cret"})
    page.goto(app.url)
    page.get_by_role("tab", name="Data").click()
    field = page.locator("#data-password input")
    for n in range(3):
        field.fill(f"guess {n}")
        page.locator("#data-unlock").click()
        _wait_for_log(app, "wrong admin password from 127.0.0.1", n + 1)
        # The page empties the field when the refusal reaches it; a click before that, while
        # the guess is still on its way, would be dropped by the page.
        expect(field).to_have_value("")
    # Now even the right password waits.
    field.fill("s3cret")
    page.locator("#data-unlock").click()
    message = _toast(page, "Too many wrong passwords")
    assert "try again in 10 min" in message
    assert not page.locator("#data-summary").is_visible()
    assert app.log().count("wrong admin password from 127.0.0.1") == 3


def test_uploads_beyond_a_clients_volume_are_refused(launch_app, page, tmp_path):
    app = launch_app("--public", "--upload-mb-per-hour", "1")
    open_page(page, app)
    give_consent(page)
    upload = page.locator("#question input[type=file]")
    first = _noise(tmp_path / "first.png")
    assert 0.5 * 2**20 < first.stat().st_size < 2**20
    upload.set_input_files(str(first))
    page.locator("#question img").first.wait_for(timeout=30_000)
    upload.set_input_files(str(_noise(tmp_path / "second.png")))
    assert "the most one visitor may" in _toast(page, "uploaded")
    assert _count(app, "images") == 0


def test_uploads_are_refused_before_the_disk_fills(launch_app, page, tmp_path):
    # A disk reserve larger than any disk: every upload would eat into it.
    app = launch_app("--min-free-disk-mb", str(2**40))
    open_page(page, app)
    give_consent(page)
    page.locator("#question input[type=file]").set_input_files(
        str(_noise(tmp_path / "any.png", 64)))
    message = _toast(page, "disk space")
    assert "Nothing was saved" in message
    assert _count(app, "images") == 0
