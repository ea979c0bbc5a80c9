"""Fixtures shared by every test folder.

- The tiny checkpoints are built once into the cache ($VQA_STUDIO_CACHE or
  ~/.cache/vqa-studio) and reused; engines are loaded once per test session. Torch runs on one
  thread so that two cores give steady results.
- `launch_app(*flags)` starts the real `python app.py --model tiny-random` on a free loopback
  port with a temporary database and waits until the page answers; the process is killed at
  teardown. `browser` is Playwright driving Debian's Chromium (never a downloaded browser).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningApp:
    url: str
    db_path: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _wait_for_page(app: RunningApp, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise RuntimeError(f"the app exited early:\n{app.log()}")
        try:
            with urllib.request.urlopen(app.url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app did not come up:\n{app.log()}")


@pytest.fixture(scope="session")
def app_launcher():
    """start(directory, *flags) -> RunningApp; every app started is stopped at session end."""
    started: list[RunningApp] = []

    def start(directory: Path, *flags: str, env: dict | None = None,
              db_path: Path | None = None, port: int | None = None) -> RunningApp:
        """db_path None: a database in `directory`; otherwise where the app should put it by
        itself (no --db flag is passed). `port`: listen there (a restarted app on the same
        origin keeps its browsers' stored keys); default a free one."""
        port = port or free_port()
        db_flag = [] if db_path else ["--db", str(directory / "data" / "studio.db")]
        db_path = db_path or directory / "data" / "studio.db"
        log_path = directory / f"app-{port}.log"
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                       **(env or {})}
        command = [sys.executable, str(ROOT / "app.py"), "--model", "tiny-random",
                   *db_flag, "--port", str(port), *flags]
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log_file,
                                       stderr=subprocess.STDOUT)
        app = RunningApp(f"http://127.0.0.1:{port}/", db_path, process, log_path)
        started.append(app)
        _wait_for_page(app)
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
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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
