"""Fixtures for end-to-end tests: the real app in a subprocess, and headless Debian Chromium.

`launch_app(tmp_path, *flags)` starts `python app.py --model tiny-random` on a free loopback
port with a temporary database and waits until the page answers; the process is killed at
teardown. `browser` is a Playwright Chromium using the system binary (Playwright's own browser
download is never used).
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

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture
def launch_app(tmp_path):
    started: list[RunningApp] = []

    def launch(*flags: str, env: dict | None = None) -> RunningApp:
        port = free_port()
        db_path = tmp_path / "data" / "studio.db"
        log_path = tmp_path / f"app-{port}.log"
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                       **(env or {})}
        command = [sys.executable, str(ROOT / "app.py"), "--model", "tiny-random",
                   "--db", str(db_path), "--port", str(port), *flags]
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log_file,
                                       stderr=subprocess.STDOUT)
        app = RunningApp(f"http://127.0.0.1:{port}/", db_path, process, log_path)
        started.append(app)
        _wait_for_page(app)
        return app

    yield launch
    for app in started:
        app.process.terminate()
        try:
            app.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            app.process.kill()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Debian chromium is not installed: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()
