"""Take the screenshots in docs/ from the real page: `python docs/make_screenshots.py`.

Starts `app.py --model tiny-random` on a free port with a throwaway database, drives it in
Debian's headless Chromium, and writes docs/screenshot-main.png (a turn with an image and
its collapsible reasoning) and docs/screenshot-compare.png (two answers side by side).
The tiny model's answers are random text; the page around them is the real one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--model", "tiny-random", "--port", str(port),
             "--db", f"{tmp}/studio.db", "--max-new-tokens-limit", "160"],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(url, timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                     args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 980})
                page.goto(url)
                page.wait_for_selector("#model-status:has-text('qwen3_5')", timeout=120_000)
                page.get_by_text("How many shapes are there").first.click()
                page.locator("#question textarea").press("Enter")
                page.wait_for_selector("#chatbot .bot-row:has-text(' tokens · ')",
                                       timeout=120_000)
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(ROOT / "docs" / "screenshot-main.png"))
                page.get_by_label("Think before answering").uncheck()
                page.locator("#question textarea").fill("Which shape is the largest?")
                page.locator("#compare").click()
                page.wait_for_function(
                    "() => { const b = document.querySelector('#pick-a');"
                    " return b && !b.disabled; }",
                    timeout=120_000)
                page.locator("#compare-a").scroll_into_view_if_needed()
                page.screenshot(path=str(ROOT / "docs" / "screenshot-compare.png"),
                                full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
