"""Fixtures shared by every test folder.

- The tiny checkpoints are built once into the cache ($VQA_STUDIO_CACHE or
  ~/.cache/vqa-studio) and reused; engines are loaded once per test session. Torch runs on one
  thread so that two cores give steady results.
- `launch_app(*flags)` starts the real `python app.py --model tiny-random` on a free loopback
  port with a temporary database and waits until the page answers (`testing.app`); the
  process is stopped at teardown. `browser` is Playwright driving Debian's Chromium (never a
  downloaded browser).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from testing.app import RunningApp, start_app  # noqa: E402  (needs ROOT on sys.path)
from testing.browser import CHROMIUM, launch_chromium  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_engine():
    """The default tiny checkpoint (Qwen3.5) loaded through the real loading path."""
    from engine.local import LocalEngine

    engine = LocalEngine("tiny-random", quantize="none", device="cpu")
    engine.load()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def llava_engine():
    from engine.local import LocalEngine

    engine = LocalEngine("tiny-random:llava", quantize="none", device="cpu")
    engine.load()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def app_launcher():
    """start(directory, *flags) -> RunningApp; every app started is stopped at session end.

    `testing.app.start_app` with `--model tiny-random`: `db_path` None puts a database in
    `directory`, otherwise it is where the app should put one by itself (no --db flag);
    `port` listens there (a restarted app on the same origin keeps its browsers' stored keys),
    by default on a free one."""
    started: list[RunningApp] = []

    def start(directory: Path, *flags: str, env: dict | None = None,
              db_path: Path | None = None, port: int | None = None) -> RunningApp:
        app = start_app(directory, *flags, env=env, db_path=db_path, port=port)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


@pytest.fixture
def launch_app(app_launcher, tmp_path):
    """Start the app for one test, in that test's temporary folder."""
    started: list[RunningApp] = []

    def launch(*flags: str, env: dict | None = None, db_path: Path | None = None,
               port: int | None = None) -> RunningApp:
        app = app_launcher(tmp_path, *flags, env=env, db_path=db_path, port=port)
        started.append(app)
        return app

    yield launch
    for app in started:
        app.stop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Debian chromium is not installed: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed
    return report


@pytest.fixture
def page(browser, request, tmp_path):
    """A fresh browser context; when the test fails, what the page showed is kept in the
    test's folder (page.png, page.txt) beside the app's log."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    if getattr(request.node, "call_failed", False):
        try:
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            (tmp_path / "page.txt").write_text(page.inner_text("body"))
        except Exception as error:  # the page may be gone; the failure itself matters more
            (tmp_path / "page.txt").write_text(f"no page to keep: {error}")
    context.close()


def rows(app, sql, *params):
    """Rows of a query on the app's SQLite file, read as the test sees it now."""
    import sqlite3

    with sqlite3.connect(app.db_path) as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, params).fetchall()


def wait_rows(app, sql, *params, count=1, timeout=30.0):
    """The query's rows once there are `count` of them, or what there is at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        found = rows(app, sql, *params)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
